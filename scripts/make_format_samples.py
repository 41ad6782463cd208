"""Write a small sample of every preference-data format `dpo` reads into data/formats/ (ours, deterministic).

    python scripts/make_format_samples.py [--out data/formats]

Each file is shaped like the real thing it stands for: the field names, nesting, role names,
typed content parts, JSON-encoded turn lists in CSV cells, ranks in message trees and
multi-turn transcripts of that format, and its usual container (JSON Lines, a JSON array,
CSV, compressed files). The rows are invented here: small everyday questions with a helpful
answer and a worse one, plus the cases each format has to get right (system turns, earlier
turns, ties, missing labels, unranked replies, images). Compressed files are written with
fixed settings (gzip with mtime=0), so the same script gives the same bytes.

tests/unit/test_format_samples.py converts every sample field by field and checks that the
committed files are what this script writes.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import io
import json
import lzma
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (question, helpful answer, worse answer): the material every sample is cut from.
QA = [
    (
        "How long should I steep green tea?",
        "Two to three minutes in water just below boiling keeps it from turning bitter.",
        "Leave it for ten minutes, longer is always stronger.",
    ),
    (
        "What is a good first houseplant?",
        "A pothos: it tolerates low light and forgives a missed watering.",
        "Get an orchid, they are trivial to keep.",
    ),
    (
        "How do I get rid of a squeaky hinge?",
        "Put a drop of light oil on the hinge pin and swing the door a few times.",
        "Slam the door until it stops.",
    ),
    (
        "Why does bread go stale?",
        "Its starch slowly recrystallises and pushes water out, so the crumb firms up.",
        "Because the air eats it.",
    ),
    (
        "How can I remember names better?",
        "Repeat the name back when you hear it and link it to something you notice.",
        "You cannot, some people just have a bad memory.",
    ),
    (
        "What should I pack for a day hike?",
        "Water, a snack, a layer for wind, sun protection and a charged phone.",
        "Nothing, hikes are short.",
    ),
    (
        "How do I keep cut basil fresh?",
        "Stand the stems in a glass of water on the counter, like flowers.",
        "Freeze the leaves whole in a bag.",
    ),
    (
        "Is it safe to wash a wool jumper?",
        "Yes, by hand in cool water with a wool wash, then dry it flat.",
        "Put it through a hot cycle, wool likes heat.",
    ),
]
SYSTEM = "You are a patient assistant who answers in one or two sentences."


def q(i: int) -> str:
    return QA[i % len(QA)][0]


def good(i: int) -> str:
    return QA[i % len(QA)][1]


def bad(i: int) -> str:
    return QA[i % len(QA)][2]


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def json_array(rows: list[dict]) -> bytes:
    return (json.dumps(rows, ensure_ascii=False, indent=2) + "\n").encode()


def csv_bytes(header: list[str], rows: list[list]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


# --- TRL's own formats -----------------------------------------------------------------------------


def trl_standard() -> bytes:
    return jsonl(
        [
            {"prompt": q(i), "chosen": good(i), "rejected": bad(i), "score_chosen": 8.0 + i % 2, "score_rejected": 3.0}
            for i in range(6)
        ]
    )


def trl_conversational() -> bytes:
    rows = []
    for i in range(6):
        prompt = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q(i)}]
        if i % 3 == 2:  # an earlier exchange before the question
            prompt[1:1] = [
                {"role": "user", "content": "Can I ask about home things?"},
                {"role": "assistant", "content": "Of course, go ahead."},
            ]
        rows.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": good(i)}],
                "rejected": [{"role": "assistant", "content": bad(i)}],
            }
        )
    return jsonl(rows)


def hh_rlhf() -> bytes:
    """Anthropic's hh-rlhf as shipped: chosen/rejected whole transcripts, gzipped JSON Lines."""
    rows = []
    for i in range(6):
        opening = f"\n\nHuman: {q(i)}"
        if i % 2 == 1:  # a second turn: the shared prompt holds a whole earlier exchange
            opening = f"\n\nHuman: Hi, quick question.\n\nAssistant: Sure, what is it?{opening}"
        rows.append({"chosen": f"{opening}\n\nAssistant: {good(i)}", "rejected": f"{opening}\n\nAssistant: {bad(i)}"})
    return gzip.compress(jsonl(rows), mtime=0)


def dialogue_ultrafeedback() -> bytes:
    """UltraFeedback-binarized style: a prompt string, whole chosen/rejected dialogues, scores."""
    rows = []
    for i in range(6):
        user = {"role": "user", "content": q(i)}
        if i == 4:  # typed content parts, as multimodal-ready exports write them
            user = {"role": "user", "content": [{"type": "text", "text": q(i)}]}
        chosen = [user, {"role": "assistant", "content": good(i)}]
        rows.append(
            {
                "prompt": q(i),
                "prompt_id": f"p{i:03d}",
                "chosen": chosen,
                "rejected": [user, {"role": "assistant", "content": bad(i)}],
                "messages": chosen,
                "score_chosen": 9.0,
                "score_rejected": 4.0 - i % 2,
            }
        )
    return jsonl(rows)


# --- chat layouts ------------------------------------------------------------------------------------


def sharegpt_ranking() -> bytes:
    """LLaMA-Factory's ShareGPT ranking format: a JSON array, `from` human/gpt, optional system."""
    rows = []
    for i in range(6):
        turns = [{"from": "human", "value": q(i)}]
        if i % 3 == 1:
            turns = [
                {"from": "human", "value": "I have a household question."},
                {"from": "gpt", "value": "Happy to help. What is it?"},
                *turns,
            ]
        row = {
            "conversations": turns,
            "chosen": {"from": "gpt", "value": good(i)},
            "rejected": {"from": "gpt", "value": bad(i)},
        }
        if i % 2 == 0:
            row["system"] = SYSTEM
        if i == 5:  # the system prompt as the first turn, as LLaMA-Factory's system tag allows
            row["conversations"] = [{"from": "system", "value": SYSTEM}, *turns]
        rows.append(row)
    return json_array(rows)


def sharegpt_messages() -> bytes:
    return jsonl(
        [
            {
                "messages": [{"role": "user", "content": q(i)}],
                "chosen": {"role": "assistant", "content": good(i)},
                "rejected": {"role": "assistant", "content": bad(i)},
            }
            for i in range(5)
        ]
    )


def openai_preference() -> bytes:
    """OpenAI / Azure preference fine-tuning lines."""
    rows = []
    for i in range(6):
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q(i)}]
        if i == 3:  # an opening assistant greeting, as providers' examples show
            messages = [
                {"role": "assistant", "content": "Hello, how can I help today?"},
                {"role": "user", "content": q(i)},
            ]
        if i == 4:
            messages[1] = {"role": "user", "content": [{"type": "text", "text": q(i)}]}
        rows.append(
            {
                "input": {"messages": messages, "tools": [], "parallel_tool_calls": True},
                "preferred_output": [{"role": "assistant", "content": good(i)}],
                "non_preferred_output": [{"role": "assistant", "content": bad(i)}],
            }
        )
    return jsonl(rows)


def context_pairs() -> bytes:
    rows = []
    for i in range(5):
        context = [{"from": "user", "content": q(i)}]
        if i == 2:
            context = [
                {"from": "user", "content": "Morning!"},
                {"from": "assistant", "content": "Good morning."},
                *context,
            ]
        rows.append(
            {
                "id": i,
                "source": "sample",
                "context": context,
                "chosen": [{"from": "assistant", "content": good(i)}],
                "rejected": [{"from": "assistant", "content": bad(i)}],
            }
        )
    return jsonl(rows)


def oasst_trees() -> bytes:
    """OpenAssistant export trees: prompter/assistant nodes, ranked replies (0 is best), nested turns."""

    def node(mid: str, role: str, text: str, rank: int | None = None, replies: list | None = None, **extra):
        return {
            "message_id": mid,
            "parent_id": None,
            "text": text,
            "role": role,
            "lang": "en",
            "review_count": 3,
            "rank": rank,
            "synthetic": False,
            "model_name": None,
            "emojis": {"+1": 2},
            "replies": replies or [],
            **extra,
        }

    tree1 = node(
        "m1",
        "prompter",
        q(0),
        replies=[
            node(
                "m2",
                "assistant",
                good(0),
                0,
                replies=[
                    node(
                        "m5",
                        "prompter",
                        "And for black tea?",
                        replies=[
                            node("m6", "assistant", "Three to five minutes in boiling water.", 0),
                            node("m7", "assistant", "Black tea never needs water.", 1),
                        ],
                    ),
                ],
            ),
            node("m3", "assistant", "About five minutes, give or take.", 1),
            node("m4", "assistant", bad(0), 2),
            node("m8", "assistant", "Deleted reply.", 3, deleted=True),
        ],
    )
    tree2 = node(
        "n1",
        "prompter",
        q(1),
        replies=[
            node("n2", "assistant", good(1), 0),
            node("n3", "assistant", bad(1), 1),
        ],
    )
    tree3 = node("k1", "prompter", q(2), replies=[node("k2", "assistant", good(2), None)])  # nothing ranked
    trees = [
        {"message_tree_id": f"t{i}", "tree_state": "ready_for_export", "prompt": t}
        for i, t in enumerate((tree1, tree2, tree3))
    ]
    return jsonl(trees)


# --- column conventions ------------------------------------------------------------------------------


def alpaca_pairs() -> bytes:
    """LLaMA-Factory's alpaca preference format (a JSON array), with system and history."""
    rows = []
    for i in range(5):
        row = {"instruction": q(i), "input": "", "chosen": good(i), "rejected": bad(i)}
        if i == 1:
            row["input"] = "I live in a small flat."
        if i == 2:
            row["history"] = [["Hello there.", "Hi! What can I do for you?"]]
        if i in (0, 3):
            row["system"] = SYSTEM
        rows.append(row)
    return json_array(rows)


def orca_pairs() -> bytes:
    """Orca-style DPO pairs: system, question, chosen, rejected (several rows with an empty system)."""
    rows = [[SYSTEM if i % 2 == 0 else "", q(i), good(i), bad(i)] for i in range(6)]
    return csv_bytes(["system", "question", "chosen", "rejected"], rows)


def stack_exchange() -> bytes:
    rows = [
        {
            "qid": 100 + i,
            "question": q(i),
            "date": "2023/04/0" + str(i + 1),
            "metadata": [f"https://example.org/{i}"],
            "response_j": good(i),
            "response_k": bad(i),
        }
        for i in range(5)
    ]
    return bz2.compress(jsonl(rows))


# --- a label or a score says which one wins --------------------------------------------------------


def alpacafarm_pairs() -> bytes:
    """AlpacaFarm-style human preferences: output_1/output_2 and preference 1 or 2 (0: none)."""
    rows = []
    for i in range(6):
        first, second, pref = (good(i), bad(i), 1) if i % 2 == 0 else (bad(i), good(i), 2)
        if i == 5:
            pref = 0
        rows.append({"instruction": q(i), "input": "", "output_1": first, "output_2": second, "preference": pref})
    return jsonl(rows)


def pku_saferlhf() -> bytes:
    rows = []
    for i in range(5):
        better = i % 2
        responses = [good(i), bad(i)] if better == 0 else [bad(i), good(i)]
        rows.append(
            {
                "prompt": q(i),
                "response_0": responses[0],
                "response_1": responses[1],
                "is_response_0_safe": True,
                "is_response_1_safe": i != 3,
                "better_response_id": better,
                "safer_response_id": 0 if i == 3 else better,
                "response_0_severity_level": 0,
                "response_1_severity_level": 1 if i == 3 else 0,
            }
        )
    return lzma.compress(jsonl(rows))


def helpsteer3_preference() -> bytes:
    """HelpSteer3-style: a context of turns, response1/response2, overall_preference -3..3 (negative: response1)."""
    prefs = [-2, 3, -1, 0, 2, -3]
    rows = []
    for i, pref in enumerate(prefs):
        first, second = (good(i), bad(i)) if pref < 0 else (bad(i), good(i))
        rows.append(
            {
                "domain": "general",
                "language": "english",
                "context": [{"role": "user", "content": q(i)}],
                "response1": first,
                "response2": second,
                "overall_preference": pref,
            }
        )
    return jsonl(rows)


def arena_kaggle() -> bytes:
    """The Kaggle Chatbot Arena CSV: JSON-encoded turn lists in cells, one-hot winner columns."""
    rows = []
    specs = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0), (0, 1, 0)]
    for i, (a, b, tie) in enumerate(specs):
        prompts = [q(i)]
        win, lose = [good(i)], [bad(i)]
        if i == 3:  # a two-turn battle
            prompts.append("Thanks. Anything else?")
            win.append("Only that consistency matters more than any single trick.")
            lose.append("No.")
        resp_a, resp_b = (win, lose) if a or tie else (lose, win)
        if i == 4:
            resp_a = [None]  # the model failed to answer: Kaggle writes null inside the list
        rows.append(
            [
                1000 + i,
                f"model-{i}a",
                f"model-{i}b",
                json.dumps(prompts),
                json.dumps(resp_a),
                json.dumps(resp_b),
                a,
                b,
                tie,
            ]
        )
    header = [
        "id",
        "model_a",
        "model_b",
        "prompt",
        "response_a",
        "response_b",
        "winner_model_a",
        "winner_model_b",
        "winner_tie",
    ]
    return csv_bytes(header, rows)


def arena_conversations() -> bytes:
    """Chatbot Arena conversations: two whole conversations and a winner, zstd-compressed."""
    import zstandard

    winners = ["model_a", "model_b", "tie", "model_a", "tie (bothbad)"]
    rows = []
    for i, winner in enumerate(winners):
        conv_good = [{"content": q(i), "role": "user"}, {"content": good(i), "role": "assistant"}]
        conv_bad = [{"content": q(i), "role": "user"}, {"content": bad(i), "role": "assistant"}]
        a, b = (conv_bad, conv_good) if winner == "model_b" else (conv_good, conv_bad)
        rows.append(
            {
                "question_id": f"q{i}",
                "model_a": "alpha",
                "model_b": "beta",
                "winner": winner,
                "judge": f"arena_user_{i}",
                "conversation_a": a,
                "conversation_b": b,
                "turn": 1,
                "language": "English",
            }
        )
    return zstandard.ZstdCompressor(level=10, write_checksum=True).compress(jsonl(rows))


def ultrafeedback_raw() -> bytes:
    """UltraFeedback's raw rows: one instruction, four rated completions (a tie and an N/A among them)."""
    rows = []
    for i in range(4):
        scores = [[8.5, 3.0, 6.0, 4.5], [7.0, 7.0, 2.0, 5.0], [5.0, 5.0, 5.0, 5.0], [9.0, 1.0, "N/A", 6.0]][i]
        texts = [good(i), bad(i), f"{good(i)} Mostly.", f"Maybe. {bad(i)}"]
        completions = [
            {
                "annotations": {"helpfulness": {"Rating": "4"}},
                "critique": "Clear.",
                "custom_system_prompt": "",
                "fine-grained_score": s,
                "model": f"model-{j}",
                "overall_score": s,
                "principle": "helpfulness",
                "response": t,
            }
            for j, (s, t) in enumerate(zip(scores, texts))
        ]
        rows.append(
            {
                "source": "sample",
                "instruction": q(i),
                "models": [f"model-{j}" for j in range(4)],
                "completions": completions,
                "correct_answers": [],
                "incorrect_answers": [],
            }
        )
    return jsonl(rows)


def nectar_ranked() -> bytes:
    """Nectar-style: an HH-style prompt and answers ranked 1 (best) to n."""
    rows = []
    for i in range(3):
        answers = [
            {"answer": bad(i), "model": "m-b", "rank": 3},
            {"answer": good(i), "model": "m-a", "rank": 1},
            {"answer": f"Probably: {good(i)}", "model": "m-c", "rank": 2},
        ]
        rows.append(
            {
                "prompt": f"\n\nHuman: {q(i)}\n\nAssistant:",
                "answers": answers,
                "turns": 1,
                "num_responses": 3,
                "source": ["sample"],
                "good_natured": True,
            }
        )
    return jsonl(rows)


def responses_scores() -> bytes:
    rows = [
        {"prompt": q(i), "responses": [bad(i), good(i), f"Hmm. {bad(i)}"], "scores": [0.1, 0.9, 0.2]} for i in range(3)
    ]
    rows.append({"prompt": q(3), "responses": [good(3), bad(3)], "scores": [0.5, 0.45]})  # a small gap
    return jsonl(rows)


# --- KTO's unpaired rows ----------------------------------------------------------------------------


def kto_unpaired() -> bytes:
    rows = []
    for i in range(4):
        rows += [
            {"prompt": q(i), "completion": good(i), "label": True},
            {"prompt": q(i), "completion": bad(i), "label": False},
        ]
    return jsonl(rows)


def kto_messages() -> bytes:
    rows = [
        {
            "messages": [
                {"role": "user", "content": q(i)},
                {"role": "assistant", "content": (good if i % 2 == 0 else bad)(i)},
            ],
            "label": i % 2 == 0,
        }
        for i in range(6)
    ]
    return jsonl(rows)


def kto_alpaca() -> bytes:
    rows = [
        {"instruction": q(i), "input": "", "output": (good if i % 3 else bad)(i), "kto_tag": bool(i % 3)}
        for i in range(6)
    ]
    return json_array(rows)


# --- data that holds no pairs ------------------------------------------------------------------------


def helpsteer_scores() -> bytes:
    """HelpSteer-style: one response per row with scalar attribute scores (reward-model data)."""
    rows = []
    for i in range(4):
        for text, score in ((good(i), 4), (bad(i), 1)):
            rows.append(
                {
                    "prompt": q(i),
                    "response": text,
                    "helpfulness": score,
                    "correctness": score,
                    "coherence": 4,
                    "complexity": 1,
                    "verbosity": 1,
                }
            )
    return jsonl(rows)


def safety_labels() -> bytes:
    """BeaverTails-style: one response per row, harm categories and an is_safe flag."""
    rows = []
    for i in range(4):
        rows.append(
            {"prompt": q(i), "response": good(i), "category": {"privacy": False, "violence": False}, "is_safe": True}
        )
        rows.append(
            {
                "prompt": q(i),
                "response": f"{bad(i)} Also, ignore every safety label.",
                "category": {"privacy": False, "violence": i == 2},
                "is_safe": False,
            }
        )
    return jsonl(rows)


def sft_conversations() -> bytes:
    return jsonl(
        [{"messages": [{"role": "user", "content": q(i)}, {"role": "assistant", "content": good(i)}]} for i in range(4)]
    )


SAMPLES: dict[str, Callable[[], bytes]] = {
    "trl_standard.jsonl": trl_standard,
    "trl_conversational.jsonl": trl_conversational,
    "hh_rlhf.jsonl.gz": hh_rlhf,
    "dialogue_ultrafeedback.jsonl": dialogue_ultrafeedback,
    "sharegpt_ranking.json": sharegpt_ranking,
    "sharegpt_messages.jsonl": sharegpt_messages,
    "openai_preference.jsonl": openai_preference,
    "context_pairs.jsonl": context_pairs,
    "oasst_trees.jsonl": oasst_trees,
    "alpaca_pairs.json": alpaca_pairs,
    "orca_pairs.csv": orca_pairs,
    "stack_exchange.jsonl.bz2": stack_exchange,
    "alpacafarm_pairs.jsonl": alpacafarm_pairs,
    "pku_saferlhf.jsonl.xz": pku_saferlhf,
    "helpsteer3_preference.jsonl": helpsteer3_preference,
    "arena_kaggle.csv": arena_kaggle,
    "arena_conversations.jsonl.zst": arena_conversations,
    "ultrafeedback_raw.jsonl": ultrafeedback_raw,
    "nectar_ranked.jsonl": nectar_ranked,
    "responses_scores.jsonl": responses_scores,
    "kto_unpaired.jsonl": kto_unpaired,
    "kto_messages.jsonl": kto_messages,
    "kto_alpaca.json": kto_alpaca,
    "helpsteer_scores.jsonl": helpsteer_scores,
    "safety_labels.jsonl": safety_labels,
    "sft_conversations.jsonl": sft_conversations,
}


def write_samples(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in SAMPLES.items():
        path = out / name
        path.write_bytes(make())
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "formats")
    args = parser.parse_args()
    for path in write_samples(args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
