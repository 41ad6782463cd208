"""Preference pairs whose token lengths follow real preference data (ours, deterministic).

    python scripts/bench/real_length_pairs.py OUT.jsonl --pairs 480 [--tokenizer DIR] [--seed 0]

On HH-RLHF (harmless-base test split, SmolLM2's tokenizer) a pair's prompt plus its longer
response is 153 tokens at the median, 368 at p90 and 997 at most. This draws that length from a
log-normal with the same median and p90 (sigma = ln(368/153) / z_0.9), capped at 1000 tokens,
splits it into a multi-turn prompt and a response, and gives the other response 25-100% of that
response's length. Text is built word by word from a small word list of our own, counting each
word's tokens with the given tokenizer (byte-level BPE tokenizes space-separated words
independently), so the drawn lengths hold in tokens, not in characters.

The content carries no preference signal; it is for speed and memory measurements only.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = ROOT / ".cache" / "models" / "smollm2-135m-instruct"
MEDIAN, P90, MAX, MIN = 153, 368, 1000, 24
Z90 = 1.2815515655446004

WORDS = [
    "the",
    "a",
    "an",
    "and",
    "or",
    "but",
    "so",
    "if",
    "then",
    "when",
    "while",
    "because",
    "after",
    "before",
    "about",
    "over",
    "under",
    "into",
    "onto",
    "from",
    "with",
    "without",
    "for",
    "to",
    "of",
    "in",
    "on",
    "at",
    "by",
    "as",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "do",
    "does",
    "did",
    "can",
    "could",
    "will",
    "would",
    "should",
    "may",
    "might",
    "must",
    "shall",
    "it",
    "its",
    "this",
    "that",
    "these",
    "those",
    "there",
    "here",
    "what",
    "which",
    "who",
    "whom",
    "whose",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "no",
    "not",
    "only",
    "own",
    "same",
    "than",
    "too",
    "very",
    "just",
    "also",
    "still",
    "yet",
    "again",
    "once",
    "ever",
    "never",
    "always",
    "often",
    "sometimes",
    "usually",
    "perhaps",
    "maybe",
    "really",
    "quite",
    "rather",
    "almost",
    "enough",
    "house",
    "garden",
    "river",
    "mountain",
    "kitchen",
    "window",
    "table",
    "chair",
    "letter",
    "story",
    "music",
    "picture",
    "morning",
    "evening",
    "night",
    "winter",
    "summer",
    "spring",
    "autumn",
    "market",
    "station",
    "bridge",
    "street",
    "village",
    "city",
    "country",
    "forest",
    "field",
    "ocean",
    "island",
    "teacher",
    "student",
    "doctor",
    "friend",
    "neighbour",
    "parent",
    "child",
    "family",
    "question",
    "answer",
    "problem",
    "reason",
    "method",
    "plan",
    "idea",
    "detail",
    "example",
    "result",
    "change",
    "choice",
    "chance",
    "effort",
    "habit",
    "lesson",
    "language",
    "number",
    "minute",
    "hour",
    "week",
    "month",
    "year",
    "water",
    "bread",
    "coffee",
    "tea",
    "rice",
    "soup",
    "apple",
    "lemon",
    "salt",
    "sugar",
    "paper",
    "pencil",
    "phone",
    "laptop",
    "screen",
    "button",
    "light",
    "door",
    "key",
    "box",
    "bag",
    "shoe",
    "coat",
    "hat",
    "ticket",
    "map",
    "clock",
    "bottle",
    "cup",
    "plate",
    "spoon",
    "knife",
    "oven",
    "walk",
    "talk",
    "read",
    "write",
    "cook",
    "clean",
    "build",
    "carry",
    "choose",
    "explain",
    "follow",
    "listen",
    "learn",
    "remember",
    "forget",
    "open",
    "close",
    "start",
    "finish",
    "keep",
    "hold",
    "move",
    "turn",
    "bring",
    "send",
    "share",
    "show",
    "teach",
    "try",
    "use",
    "wait",
    "watch",
    "wish",
    "wonder",
    "work",
    "quick",
    "slow",
    "early",
    "late",
    "easy",
    "hard",
    "simple",
    "careful",
    "quiet",
    "loud",
    "warm",
    "cold",
    "bright",
    "dark",
    "fresh",
    "clear",
    "small",
    "large",
    "short",
    "long",
    "new",
    "old",
    "young",
    "happy",
    "calm",
    "busy",
    "ready",
    "useful",
    "honest",
    "polite",
    "patient",
    "gentle",
    "strong",
    "safe",
]
TURN_SPLIT = (2, 4)  # a prompt is 1-2 human/assistant exchanges, like HH-RLHF's dialogues


def draw_lengths(rng: random.Random) -> tuple[int, int, int]:
    """(prompt, longer response, shorter response) token counts of one pair."""
    sigma = math.log(P90 / MEDIAN) / Z90
    total = int(min(MAX, max(MIN, round(math.exp(rng.gauss(math.log(MEDIAN), sigma))))))
    prompt = max(8, int(total * rng.uniform(0.35, 0.8)))
    longer = max(4, total - prompt)
    shorter = max(2, int(longer * rng.uniform(0.25, 1.0)))
    return prompt, longer, shorter


class TextMaker:
    """Word sequences of a given token count under one tokenizer.

    `max_id` keeps only words whose token ids are below it, for a model whose embedding covers
    only the first `max_id` ids of the tokenizer.
    """

    def __init__(self, tokenizer, seed: int, max_id: int | None = None):
        self.rng = random.Random(seed)
        self.words = []
        for word in WORDS:
            ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
            if ids and (max_id is None or max(ids) < max_id):
                self.words.append((word, len(ids)))
        self.singles = [w for w, c in self.words if c == 1]

    def text(self, tokens: int) -> str:
        out: list[str] = []
        left = tokens
        while left > 0:
            word, cost = self.rng.choice(self.words)
            if cost > left:
                word, cost = self.rng.choice(self.singles), 1
            out.append(word)
            left -= cost
        return " ".join(out)


def make_pairs(count: int, tokenizer, seed: int = 0, max_id: int | None = None) -> list[dict[str, str]]:
    """`count` standard-format pairs (prompt / chosen / rejected strings).

    Args:
        max_id: Use only token ids below this (see `TextMaker`); the turns are then marked
            `Q:` / `A:`, whose ids are small, instead of `Human:` / `Assistant:`.
    """
    rng = random.Random(seed)
    maker = TextMaker(tokenizer, seed + 1, max_id)
    human, assistant = ("Human:", "Assistant:") if max_id is None else ("Q:", "A:")
    marks = len(tokenizer(f"\n\n{human}", add_special_tokens=False)["input_ids"]) + len(
        tokenizer(f"\n\n{assistant}", add_special_tokens=False)["input_ids"]
    )
    pairs = []
    for _ in range(count):
        prompt_len, longer, shorter = draw_lengths(rng)
        turns = rng.randint(*TURN_SPLIT) // 2
        texts = 2 * turns - 1  # human, assistant, ..., human; the response follows
        per_text = max(2, (prompt_len - marks * turns) // texts)
        parts = []
        for t in range(texts):
            parts.append(f"{assistant if t % 2 else human} {maker.text(per_text)}")
        prompt = "\n\n".join(parts) + f"\n\n{assistant}"
        long_text, short_text = " " + maker.text(longer), " " + maker.text(shorter)
        chosen, rejected = (long_text, short_text) if rng.random() < 0.5 else (short_text, long_text)
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs


def load_tokenizer(path: Path = SMOLLM2):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    assert len(tokenizer) > 1000, f"{path}: tokenizer has {len(tokenizer)} tokens"  # transformers 5 trap
    return tokenizer


def write_jsonl(pairs: list[dict[str, str]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    tmp.replace(path)
    return path


def measured_lengths(pairs: list[dict[str, str]], tokenizer) -> list[int]:
    """Prompt + longer response tokens of each pair, as TRL tokenizes standard rows (EOS appended)."""
    eos = tokenizer.eos_token or ""
    out = []
    for p in pairs:
        prompt = len(tokenizer(p["prompt"], add_special_tokens=False)["input_ids"])
        chosen = len(tokenizer(p["prompt"] + p["chosen"] + eos, add_special_tokens=False)["input_ids"])
        rejected = len(tokenizer(p["prompt"] + p["rejected"] + eos, add_special_tokens=False)["input_ids"])
        out.append(max(chosen, rejected, prompt))
    return out


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--pairs", type=int, default=480)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", type=Path, default=SMOLLM2)
    parser.add_argument("--max-id", type=int, help="use only token ids below this")
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.tokenizer)
    pairs = make_pairs(args.pairs, tokenizer, args.seed, args.max_id)
    write_jsonl(pairs, args.out)
    lengths = measured_lengths(pairs, tokenizer)
    print(
        f"{args.out}: {len(pairs)} pairs; prompt + longer response tokens: p50 {percentile(lengths, 0.5):.0f}, "
        f"p90 {percentile(lengths, 0.9):.0f}, max {max(lengths)}"
    )


if __name__ == "__main__":
    main()
