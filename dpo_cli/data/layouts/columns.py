"""Pairs in named columns: TRL's own format, Anthropic HH transcripts, whole-dialogue pairs,
alpaca-style instruction pairs and stack-exchange-paired.

These layouts read `data.columns` (prompt, chosen, rejected, system, history), so a file with
other column names is mapped rather than converted by hand. A `system` column becomes the
conversation's system turn and a `history` column its earlier turns, which makes the rows
conversational (text rows have nowhere to keep them).
"""

from __future__ import annotations

from typing import Any

from dpo_cli.data.layouts.base import Converter, Layout, LayoutError, Match, Options, Sample, match
from dpo_cli.data.rows import (
    RowProblem,
    get_path,
    messages_field,
    optional_text,
    parse_transcript,
    raw_field,
    split_dialogues,
    split_implicit_prompt,
    text_field,
)

# Prompt columns used when the file has no `prompt` column: Orca's and stack-exchange's `question`.
PROMPT_ALIASES = ("question", "query")
SCORE_PATTERNS = ("score_{}", "{}_score", "{}_rating", "rating_{}", "{}_reward", "reward_{}")


def is_messages(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and ("role" in m or "from" in m) for m in value)
    )


def first_role(value: Any) -> str | None:
    if not is_messages(value):
        return None
    roles = [m.get("role", m.get("from")) for m in value]
    return next((r for r in roles if r not in ("system", "SYSTEM")), None)


def history_turns(row: dict[str, Any], column: str | None) -> list[dict[str, str]]:
    """LLaMA-Factory's `history`: `[[user, assistant], ...]` (or messages) as alternating turns."""
    if column is None:
        return []
    value = get_path(row, column)
    if not value:
        return []
    if is_messages(value):
        return messages_field(row, column)
    turns = []
    for i, pair in enumerate(value if isinstance(value, list) else []):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise RowProblem("wrong_type", f"`{column}` item {i}: expected [user text, assistant text]")
        turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    if not isinstance(value, list):
        raise RowProblem("wrong_type", f"`{column}`: {type(value).__name__}, expected a list of turns")
    return turns


def prompt_turns(text: str) -> list[dict[str, str]]:
    """A text prompt as messages: an HH-style transcript is split into its turns, other text is one user turn."""
    stripped = text.lstrip("\n")
    if stripped.startswith(("Human:", "H:")) and "Human:" in text:
        turns = parse_transcript(text, "prompt")
        if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"].strip():
            turns.pop()  # the trailing "Assistant:" that waits for the response
        return turns
    return [{"role": "user", "content": text}] if text else []


def context_turns(row: dict[str, Any], system: str | None, history: str | None) -> list[dict[str, str]]:
    turns = []
    system_text = optional_text(row, system)
    if system_text.strip():
        turns.append({"role": "system", "content": system_text})
    return turns + history_turns(row, history)


def _score_columns(sample: Sample) -> tuple[str, str] | None:
    cols = sample.columns
    for chosen, rejected in ((cols.chosen, cols.rejected), ("chosen", "rejected")):
        for pattern in SCORE_PATTERNS:
            pair = (pattern.format(chosen), pattern.format(rejected))
            if pair[0] in sample.keys and pair[1] in sample.keys:
                return pair
    return None


def _extras(sample: Sample) -> tuple[str | None, str | None]:
    system = sample.optional("system")
    history = sample.optional("history")
    return system, history


def _extras_text(system: str | None, history: str | None) -> str:
    parts = [f"system turn from `{system}`"] if system else []
    if history:
        parts.append(f"earlier turns from `{history}`")
    return f"; {', '.join(parts)}" if parts else ""


# --- TRL's preference format ---------------------------------------------------------------------


def detect_trl(sample: Sample) -> Match | None:
    cols = sample.columns
    if not (sample.has(cols.chosen) and sample.has(cols.rejected)):
        return None
    chosen = sample.first(cols.chosen)
    if isinstance(chosen, str):
        native = "text"
    elif is_messages(chosen):
        native = "messages"
    else:
        return None  # a single message object: ShareGPT's or the context layout
    prompt, implicit = _prompt_column(sample)
    if native == "messages" and (implicit or first_role(chosen) in ("user", "human")):
        return None  # whole conversations: the dialogue layout
    if implicit and native == "text" and sample.transcript(cols.chosen):
        return None  # Anthropic HH transcripts
    system, history = _extras(sample)
    if system or history:
        native = "messages"
    used = [prompt, cols.chosen, cols.rejected, system, history]
    responses = "messages" if is_messages(chosen) else "text"
    prompt_kind = "messages" if prompt and is_messages(sample.first(prompt)) else "text"
    shape = "conversational" if native == "messages" else "standard"
    if implicit:
        described = f"TRL {shape} pairs, implicit prompt (the shared start of `{cols.chosen}` and `{cols.rejected}`)"
    else:
        described = f"TRL {shape} pairs, prompt from `{prompt}`"
    described += _extras_text(system, history)
    return match(
        "trl",
        "pairs",
        native,
        described,
        used,
        prompt=prompt,
        chosen=cols.chosen,
        rejected=cols.rejected,
        system=system,
        history=history,
        responses=responses,
        prompt_kind=prompt_kind,
        implicit=implicit,
        scores=_score_columns(sample),
        to_messages=not implicit,
    )


def _prompt_column(sample: Sample) -> tuple[str | None, bool]:
    """`(prompt column, implicit)`; an explicitly configured prompt column must exist."""
    cols = sample.columns
    if cols.prompt is None:
        return None, True
    if sample.has(cols.prompt):
        return cols.prompt, False
    if sample.explicit("prompt"):
        raise LayoutError(
            f"missing column `{cols.prompt}` (for prompt); columns found: {', '.join(sample.keys) or 'none'}"
        )
    for alias in PROMPT_ALIASES:
        if isinstance(sample.first(alias), str):
            return alias, False
    return None, True


def build_trl(m: Match, messages: bool, options: Options) -> Converter:
    prompt, chosen, rejected = m.get("prompt"), m.get("chosen"), m.get("rejected")
    system, history = m.get("system"), m.get("history")
    if m.native == "text" and not messages:
        if m.implicit:

            def implicit_text(row: dict[str, Any]) -> dict[str, Any]:
                c, r = text_field(row, chosen), text_field(row, rejected)
                p, c, r = split_implicit_prompt(c, r)
                return {"prompt": p, "chosen": c, "rejected": r}

            return implicit_text

        def standard(row: dict[str, Any]) -> dict[str, Any]:
            return {
                "prompt": text_field(row, prompt),
                "chosen": text_field(row, chosen),
                "rejected": text_field(row, rejected),
            }

        return standard

    # Each row must hold what the first rows held: strings stay strings (one user or assistant
    # turn each), message lists stay lists; a row that mixes them is a `wrong_type`.
    text_prompt, text_responses = m.get("prompt_kind") == "text", m.get("responses") == "text"

    def conversational(row: dict[str, Any]) -> dict[str, Any]:
        turns = prompt_turns(text_field(row, prompt)) if text_prompt else messages_field(row, prompt)
        if text_responses:
            c = [{"role": "assistant", "content": text_field(row, chosen)}]
            r = [{"role": "assistant", "content": text_field(row, rejected)}]
        else:
            c, r = messages_field(row, chosen), messages_field(row, rejected)
        return {"prompt": context_turns(row, system, history) + turns, "chosen": c, "rejected": r}

    return conversational


TRL = Layout(
    "trl",
    "TRL preference format (standard or conversational)",
    "`chosen` and `rejected` (`data.columns`) as strings or role/content lists; prompt from `prompt`, else "
    "`question`/`query`, else implicit (the shared start); `system`/`history` columns are kept",
    '{"prompt": "How do I keep basil alive?",\n "chosen": "Water it when the soil is dry.",\n "rejected": "No idea."}',
    detect_trl,
    build_trl,
    builds_messages=True,
)


# --- Anthropic HH-RLHF ---------------------------------------------------------------------------


def detect_hh(sample: Sample) -> Match | None:
    cols = sample.columns
    if not (sample.has(cols.chosen) and sample.has(cols.rejected)):
        return None
    if cols.prompt is not None and sample.has(cols.prompt):
        return None
    if not (sample.transcript(cols.chosen) and isinstance(sample.first(cols.rejected), str)):
        return None
    described = (
        f"Anthropic HH-RLHF transcripts (`{cols.chosen}`/`{cols.rejected}` hold whole "
        "\\n\\nHuman:/\\n\\nAssistant: dialogues)"
    )
    return match(
        "hh",
        "pairs",
        "text",
        described,
        [cols.chosen, cols.rejected],
        chosen=cols.chosen,
        rejected=cols.rejected,
        implicit=True,
    )


def build_hh(m: Match, messages: bool, options: Options) -> Converter:
    chosen, rejected = m.get("chosen"), m.get("rejected")
    if not messages:

        def as_text(row: dict[str, Any]) -> dict[str, Any]:
            p, c, r = split_implicit_prompt(text_field(row, chosen), text_field(row, rejected))
            return {"prompt": p, "chosen": c, "rejected": r}

        return as_text

    def as_turns(row: dict[str, Any]) -> dict[str, Any]:
        c = parse_transcript(text_field(row, chosen), chosen)
        r = parse_transcript(text_field(row, rejected), rejected)
        p, c, r = split_dialogues(c, r)
        return {"prompt": p, "chosen": c, "rejected": r}

    return as_turns


HH = Layout(
    "hh",
    "Anthropic HH-RLHF transcripts",
    "no prompt column; `chosen`/`rejected` are `\\n\\nHuman: ... \\n\\nAssistant: ...` text. The prompt is the "
    "shared start, cut as TRL's `extract_prompt` cuts it; parsed into turns when the rows are conversational",
    '{"chosen": "\\n\\nHuman: Is tea ok at night?\\n\\nAssistant: Choose a caffeine-free one.",\n'
    ' "rejected": "\\n\\nHuman: Is tea ok at night?\\n\\nAssistant: Whatever.",\n'
    ' "source": "harmless-base"}',
    detect_hh,
    build_hh,
    builds_messages=True,
)


# --- whole-dialogue pairs ------------------------------------------------------------------------

DIALOGUE_COLUMNS = (("chosen_messages", "rejected_messages"), ("chosen_conversation", "rejected_conversation"))


def detect_dialogue(sample: Sample) -> Match | None:
    cols = sample.columns
    pairs = [(cols.chosen, cols.rejected), *DIALOGUE_COLUMNS]
    for chosen, rejected in pairs:
        if not (sample.has(chosen) and sample.has(rejected)):
            continue
        value = sample.first(chosen)
        if first_role(value) in ("user", "human") or (
            is_messages(value) and (cols.prompt is None or not sample.has(cols.prompt))
        ):
            described = (
                f"whole-dialogue pairs (`{chosen}`/`{rejected}` are full conversations; the prompt is "
                "their shared opening)"
            )
            return match(
                "dialogue",
                "pairs",
                "messages",
                described,
                [chosen, rejected],
                chosen=chosen,
                rejected=rejected,
                implicit=True,
                to_messages=True,
            )
    return None


def build_dialogue(m: Match, messages: bool, options: Options) -> Converter:
    chosen, rejected = m.get("chosen"), m.get("rejected")

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        p, c, r = split_dialogues(messages_field(row, chosen), messages_field(row, rejected))
        return {"prompt": p, "chosen": c, "rejected": r}

    return convert


DIALOGUE = Layout(
    "dialogue",
    "Whole-dialogue pairs (UltraFeedback-binarized style)",
    "`chosen`/`rejected` (or `chosen_messages`/`rejected_messages`) are whole conversations opening with the "
    "user; the prompt is their shared opening. Content may be typed parts",
    '{"chosen": [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "7"}],\n'
    ' "rejected": [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "9"}],\n'
    ' "score_chosen": 8.0, "score_rejected": 2.0}',
    detect_dialogue,
    build_dialogue,
)


# --- alpaca-style instruction pairs --------------------------------------------------------------


def detect_alpaca(sample: Sample) -> Match | None:
    if not isinstance(sample.first("instruction"), str):
        return None
    cols = sample.columns
    if sample.has(cols.chosen) and sample.has(cols.rejected) and isinstance(sample.first(cols.chosen), str):
        responses = (cols.chosen, cols.rejected)
    elif isinstance(sample.first("output"), list):
        responses = ("output", None)  # LLaMA-Factory's older form: output = [chosen, rejected]
    else:
        return None
    system, history = _extras(sample)
    query = "input" if sample.has("input") else None
    native = "messages" if system or history else "text"
    where = "`output`[0]/[1]" if responses[1] is None else f"`{responses[0]}`/`{responses[1]}`"
    described = (
        "alpaca-style pairs: prompt from `instruction`"
        + (" + `input`" if query else "")
        + f", responses {where}"
        + _extras_text(system, history)
    )
    used = ["instruction", query, responses[0], responses[1], system, history]
    return match(
        "alpaca",
        "pairs",
        native,
        described,
        used,
        query=query,
        chosen=responses[0],
        rejected=responses[1],
        system=system,
        history=history,
    )


def alpaca_prompt(row: dict[str, Any], query: str | None) -> str:
    """LLaMA-Factory's rule: `instruction`, then a newline and `input` when there is one."""
    prompt = text_field(row, "instruction")
    extra = optional_text(row, query)
    return f"{prompt}\n{extra}" if extra else prompt


def build_alpaca(m: Match, messages: bool, options: Options) -> Converter:
    query, chosen, rejected = m.get("query"), m.get("chosen"), m.get("rejected")
    system, history = m.get("system"), m.get("history")

    def responses(row: dict[str, Any]) -> tuple[str, str]:
        if rejected is not None:
            return text_field(row, chosen), text_field(row, rejected)
        output = raw_field(row, "output")
        if not (isinstance(output, list) and len(output) == 2 and all(isinstance(o, str) for o in output)):
            raise RowProblem("wrong_type", "`output`: expected [chosen text, rejected text]")
        if not output[0].strip() or not output[1].strip():
            raise RowProblem("empty_field", "`output`")
        return output[0], output[1]

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        prompt = alpaca_prompt(row, query)
        c, r = responses(row)
        if not messages:
            return {"prompt": prompt, "chosen": c, "rejected": r}
        turns = context_turns(row, system, history) + [{"role": "user", "content": prompt}]
        return {
            "prompt": turns,
            "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}],
        }

    return convert


ALPACA = Layout(
    "alpaca",
    "Alpaca-style instruction pairs (LLaMA-Factory)",
    "`instruction` (+ `input`) with `chosen`/`rejected`, or `output` = [chosen, rejected]; prompt = "
    "instruction, a newline, input; `system` and `history` ([[user, assistant], ...]) are kept",
    '{"instruction": "Translate to French.", "input": "Good night",\n "chosen": "Bonne nuit",\n'
    ' "rejected": "Bon jour", "history": [["Hi", "Hello!"]]}',
    detect_alpaca,
    build_alpaca,
    builds_messages=True,
)


# --- stack-exchange-paired -------------------------------------------------------------------------


def detect_stack_exchange(sample: Sample) -> Match | None:
    if not (sample.has("response_j") and sample.has("response_k") and sample.has("question")):
        return None
    described = (
        "stack-exchange-paired: prompt `question`, chosen `response_j` (the better-voted answer), rejected `response_k`"
    )
    return match("stack_exchange", "pairs", "text", described, ["question", "response_j", "response_k"])


def build_stack_exchange(m: Match, messages: bool, options: Options) -> Converter:
    def convert(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "prompt": text_field(row, "question"),
            "chosen": text_field(row, "response_j"),
            "rejected": text_field(row, "response_k"),
        }

    return convert


STACK_EXCHANGE = Layout(
    "stack_exchange",
    "stack-exchange-paired",
    "`question`, `response_j` (preferred) and `response_k`",
    '{"qid": 12, "question": "How do I undo a commit?",\n "response_j": "Use git revert to keep history.",\n'
    ' "response_k": "Delete the repository."}',
    detect_stack_exchange,
    build_stack_exchange,
)
