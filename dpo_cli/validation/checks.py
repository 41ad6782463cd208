"""Every data check, its severity, and the per-row tests that need no tokenizer.

Errors mark a row `dpo train` cannot learn from (it drops the row, and stops when too many
go); `dropped` marks rows the source format itself says to leave out (ties, rows without a
label); warnings mark data that trains but probably not the way the user wants. Each finding
keeps a count and a few example locations (`file:line`) so the report points at real rows.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

ERROR, WARNING, DROPPED = "error", "warning", "dropped"
EXAMPLES_KEPT = 5


@dataclass(frozen=True)
class Check:
    """One kind of problem: its id (used in reports and the rejects file), severity and wording."""

    id: str
    severity: str
    title: str
    hint: str = ""


CHECKS: dict[str, Check] = {
    c.id: c
    for c in (
        # Whole-dataset problems: the rows cannot be read as preference pairs at all.
        Check(
            "layout",
            ERROR,
            "not a layout this run can train on",
            "map the columns or name the layout (see the message)",
        ),
        Check("format_mismatch", ERROR, "sources cannot share one representation (strings or messages)"),
        Check("no_rows", ERROR, "no usable rows"),
        # Row errors: the row cannot train.
        Check("malformed_line", ERROR, "line is not a JSON object", "fix or delete the line"),
        Check(
            "row_too_long",
            ERROR,
            "row longer than the per-row limit",
            "data.max_row_bytes bounds the memory one row may take; raise it if such rows are meant",
        ),
        Check("missing_field", ERROR, "field missing"),
        Check("null_field", ERROR, "field is null"),
        Check("wrong_type", ERROR, "field has the wrong type", "strings (standard) or lists of role/content messages"),
        Check("empty_field", ERROR, "field is empty or whitespace"),
        Check("unsupported_content", ERROR, "images, tool calls or tool definitions", "only text trains"),
        Check("bad_label", ERROR, "preference label names neither response"),
        Check("bad_conversation", ERROR, "conversation structure (roles, alternation, assistant response)"),
        Check("identical_pair", ERROR, "chosen identical to rejected", "no preference signal"),
        Check(
            "response_cut_off",
            ERROR,
            "whole response cut off by max_length",
            "TRL drops these rows (or trains them on nothing); raise training.max_length or shorten prompts",
        ),
        Check(
            "identical_after_truncation",
            ERROR,
            "chosen and rejected identical after truncation",
            "they differ only beyond max_length; raise training.max_length",
        ),
        # Dropped by the source format's own rule: counted and listed, never an error.
        Check("tie", DROPPED, "the label says tie", "no preference between the two responses"),
        Check("no_label", DROPPED, "no preference label"),
        Check("small_gap", DROPPED, "score gap below data.min_score_gap"),
        Check("no_pairs", DROPPED, "fewer than two ranked responses", "nothing to pair"),
        # Warnings: the row trains, but look at it.
        Check("duplicate_pair", WARNING, "exact duplicate pair", "--write-clean keeps the first copy"),
        Check("duplicate_prompt", WARNING, "prompt seen in an earlier row", "fine for several pairs per prompt"),
        Check("near_identical", WARNING, "chosen and rejected nearly identical", "weak preference signal"),
        Check("no_shared_prompt", WARNING, "implicit prompt: chosen and rejected share no prefix", "empty prompt"),
        Check(
            "leakage", WARNING, "eval prompt also in train", "held-out metrics overestimate; --write-clean drops them"
        ),
        Check(
            "truncated",
            WARNING,
            "pair truncated by max_length",
            "the response end (and EOS) is cut; the model may not learn to stop",
        ),
        Check(
            "template_mismatch",
            WARNING,
            "templated prompt is not a prefix of prompt+response",
            "TRL starts the response where they diverge; the end of the prompt leaves the training sequence",
        ),
        Check("length_bias", WARNING, "chosen responses are systematically longer or shorter", "DPO learns verbosity"),
        Check("score_margin", WARNING, "chosen not scored above rejected", "inverted or tied labels"),
        Check("replacement_char", WARNING, "text holds U+FFFD (broken encoding)"),
        Check("control_chars", WARNING, "text holds control characters"),
        Check("few_rows", WARNING, "very few training rows"),
        Check(
            "label_balance",
            WARNING,
            "desirable and undesirable rows unbalanced for the KTO weights",
            "set desirable_weight or undesirable_weight as suggested",
        ),
    )
}


@dataclass
class Finding:
    """How often one check fired in one split, with the first few locations."""

    check: Check
    count: int = 0
    examples: list[str] = field(default_factory=list)
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check.id,
            "severity": self.check.severity,
            "title": self.check.title,
            "count": self.count,
            "examples": self.examples,
            "message": self.message or self.check.hint,
        }


class Findings:
    """All findings of one split, keyed by check id, in the order they first fired."""

    def __init__(self) -> None:
        self.by_id: dict[str, Finding] = {}

    def add(self, check_id: str, where: str, note: str = "") -> None:
        finding = self.by_id.get(check_id)
        if finding is None:
            finding = self.by_id[check_id] = Finding(CHECKS[check_id])
        finding.count += 1
        if len(finding.examples) < EXAMPLES_KEPT:
            finding.examples.append(f"{where} ({note})" if note else where)

    def note(self, check_id: str, message: str, count: int = 1) -> None:
        """A whole-dataset finding, described by one message."""
        finding = self.by_id.setdefault(check_id, Finding(CHECKS[check_id]))
        finding.count += count
        finding.message = message

    def count(self, severity: str) -> int:
        return sum(f.count for f in self.by_id.values() if f.check.severity == severity)

    def __iter__(self):
        return iter(self.by_id.values())


# --- per-row tests -----------------------------------------------------------------------------

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def text_problems(texts: list[str]) -> list[str]:
    found = []
    if any("\ufffd" in t for t in texts):
        found.append("replacement_char")
    if any(_CONTROL.search(t) for t in texts):
        found.append("control_chars")
    return found


def digest(text: str) -> int:
    """An 8-byte hash as an int: duplicate indexes hold these, never the strings."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def normalized(text: str) -> str:
    """Case and whitespace folded, so trivially different prompts still match."""
    return " ".join(text.split()).lower()


# --- distributions in bounded memory -----------------------------------------------------------


class Lengths:
    """A length distribution kept as a Counter of values: memory grows with distinct lengths only."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.total = 0
        self.n = 0

    def add(self, value: int) -> None:
        self.counts[value] += 1
        self.total += value
        self.n += 1

    def quantile(self, q: float) -> int:
        target = q * (self.n - 1)
        seen = 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            if seen > target:
                return value
        return 0

    def summary(self) -> dict[str, float]:
        if not self.n:
            return {}
        return {
            "min": min(self.counts),
            "p50": self.quantile(0.5),
            "p90": self.quantile(0.9),
            "p99": self.quantile(0.99),
            "max": max(self.counts),
            "mean": round(self.total / self.n, 1),
        }


class PairStats:
    """Length bias and score margins over a split, in constant memory."""

    def __init__(self) -> None:
        self.pairs = 0
        self.chosen_longer = 0
        self.rejected_longer = 0
        self.chosen_total = 0
        self.rejected_total = 0
        self.margin_n = 0
        self.margin_sum = 0.0
        self.margin_min = float("inf")
        self.margin_max = float("-inf")

    def add(self, chosen_len: int, rejected_len: int) -> None:
        self.pairs += 1
        self.chosen_total += chosen_len
        self.rejected_total += rejected_len
        self.chosen_longer += chosen_len > rejected_len
        self.rejected_longer += chosen_len < rejected_len

    def add_margin(self, margin: float) -> None:
        self.margin_n += 1
        self.margin_sum += margin
        self.margin_min = min(self.margin_min, margin)
        self.margin_max = max(self.margin_max, margin)

    def margin_summary(self) -> dict[str, float] | None:
        if not self.margin_n:
            return None
        return {
            "pairs": self.margin_n,
            "mean": round(self.margin_sum / self.margin_n, 4),
            "min": self.margin_min,
            "max": self.margin_max,
        }

    def length_bias(self) -> dict[str, float] | None:
        if not self.pairs or not self.rejected_total:
            return None
        return {
            "mean_length_ratio": round(self.chosen_total / self.rejected_total, 3),
            "chosen_longer_fraction": round(self.chosen_longer / self.pairs, 3),
            "rejected_longer_fraction": round(self.rejected_longer / self.pairs, 3),
        }


# Length bias is flagged when chosen is longer in at least this share of pairs (or shorter),
# or when the mean lengths differ by this ratio: past these, DPO mostly learns length.
BIAS_FRACTION = 0.75
BIAS_RATIO = 1.5
MIN_ROWS = 100
NEAR_IDENTICAL = 0.9


def length_bias_message(bias: dict[str, float], unit: str) -> str | None:
    ratio, longer = bias["mean_length_ratio"], bias["chosen_longer_fraction"]
    shorter = bias["rejected_longer_fraction"]
    if longer >= BIAS_FRACTION or ratio >= BIAS_RATIO:
        return f"chosen is longer in {longer:.0%} of pairs; mean {unit} ratio chosen/rejected {ratio:.2f}"
    if shorter >= BIAS_FRACTION or ratio <= 1 / BIAS_RATIO:
        return f"chosen is shorter in {shorter:.0%} of pairs; mean {unit} ratio chosen/rejected {ratio:.2f}"
    return None


# KTO paper, Eq. 8 and its guidance: weighted desirable over weighted undesirable examples
# should lie in [1, 4/3]. TRL's KTOTrainer warns with the same ranges (rounded to 1.33).
KTO_RATIO_RANGE = (1.0, 4.0 / 3.0)


def kto_weight_advice(
    desirable: int, undesirable: int, desirable_weight: float, undesirable_weight: float
) -> str | None:
    """A sentence suggesting `desirable_weight` / `undesirable_weight` for these label counts, or None when fine.

    One weight is moved at a time (the paper's advice is to adjust one, not both).
    """
    if desirable == 0 or undesirable == 0:
        missing = "undesirable (label false)" if undesirable == 0 else "desirable (label true)"
        return f"no {missing} rows among {desirable + undesirable}: KTO learns from both kinds"
    low, high = KTO_RATIO_RANGE
    ratio = desirable * desirable_weight / (undesirable * undesirable_weight)
    if low <= ratio <= high:
        return None
    d_low = undesirable * undesirable_weight / desirable
    u_high = desirable * desirable_weight / undesirable
    return (
        f"{desirable} desirable vs {undesirable} undesirable rows: weighted ratio {ratio:.2f} is outside the KTO "
        f"paper's [1, 4/3]; set EITHER training.desirable_weight in [{d_low * low:.2f}, {d_low * high:.2f}] OR "
        f"training.undesirable_weight in [{u_high / high:.2f}, {u_high / low:.2f}] (not both)"
    )
