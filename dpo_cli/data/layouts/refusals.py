"""Data that holds no preference pairs, recognised so the message can say what it is and what
training on it would need, instead of failing on a missing column."""

from __future__ import annotations

from dpo_cli.data.layouts.base import Sample
from dpo_cli.data.layouts.columns import is_messages

RESPONSE_COLUMNS = ("response", "completion", "output", "answer", "generation")
SCORE_COLUMNS = (
    "score",
    "reward",
    "rating",
    "helpfulness",
    "correctness",
    "coherence",
    "quality",
    "overall",
    "harmlessness",
    "honesty",
)
SAFETY_COLUMNS = ("is_safe", "safe", "is_response_safe", "unsafe", "is_harmful", "harmful", "is_unsafe")
PROMPT_COLUMNS = ("prompt", "instruction", "question", "query")


def _found(sample: Sample) -> str:
    return f"columns found: {', '.join(sample.keys) or 'none'}"


def explain_unpaired_for_pairs(sample: Sample, described: str) -> str:
    return (
        f"{described}: unpaired rows (prompt/completion/label, the KTO layout): each row rates a single completion, "
        "while DPO needs a chosen and a rejected response to the same prompt. Pair a label=true completion with a "
        "label=false one for each prompt into prompt/chosen/rejected columns, or train these rows with KTO "
        f"(`algorithm: kto`). {_found(sample)}"
    )


def explain_no_pairs(sample: Sample) -> str | None:
    """A sentence on what the rows are and what would be needed, when they are a known non-preference kind."""
    keys = set(sample.keys)
    response = next((c for c in RESPONSE_COLUMNS if isinstance(sample.first(c), str)), None)
    prompt = next((c for c in PROMPT_COLUMNS if c in keys), None)
    safety = next((c for c in SAFETY_COLUMNS if c in keys), None)
    if response and safety:
        advice = ""
        if isinstance(sample.first(safety), bool) and prompt == "prompt":
            advice = (
                f" To train on the labels as they are, use KTO: `algorithm: kto` with "
                f"`data.columns.completion: {response}` and `data.columns.label: {safety}`."
            )
        return (
            f"safety labels: each row marks one response (`{response}`) as safe or not (`{safety}`); that is no "
            "preference between two responses to one prompt. DPO needs a chosen and a rejected response per prompt: "
            f"pair a safe response with an unsafe one to the same prompt.{advice} {_found(sample)}"
        )
    scores = [c for c in SCORE_COLUMNS if c in keys and isinstance(sample.first(c), (int, float))]
    if response and scores:
        return (
            f"scalar scores: each row gives one response (`{response}`) a score ({', '.join(f'`{s}`' for s in scores)}), "
            "the data of a reward model, not a preference between two responses. DPO needs two responses to the "
            "same prompt: group the rows by prompt and write the higher-scored response as chosen and a lower-scored "
            f"one as rejected (skip ties); or turn the score into a boolean label and train with KTO. {_found(sample)}"
        )
    if (
        any(is_messages(sample.first(c)) for c in ("messages", "conversations"))
        or keys == {"text"}
        or ("instruction" in keys and isinstance(sample.first("output"), str))
    ):
        return (
            "single conversations or texts (the SFT layout): there is no rejected response to prefer against. DPO "
            f"needs prompt/chosen/rejected pairs. {_found(sample)}"
        )
    return None
