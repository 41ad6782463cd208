"""Pairwise judging with position swap, and win/tie/loss with confidence intervals: no torch.

Judges, LLMs above all, favour whichever answer is shown first (or second). Each pair is
therefore judged twice, policy as A then policy as B. Only a verdict that survives the swap
counts as a win or a loss; a disagreement is a tie. A judge that always picks position A
thus yields only ties, never a spurious win.

Intervals are Wilson score intervals: closed form, well behaved at small n and at 0% or 100%
(where the normal approximation collapses to a zero-width interval), and deterministic,
unlike a bootstrap. The formula is a few lines, so no statistics package is pulled in for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["A", "B", "tie"] | None  # None: the judge's reply could not be parsed
Outcome = Literal["win", "tie", "loss"]
Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def combine(policy_first: Verdict, policy_second: Verdict) -> Outcome:
    """Outcome for the policy from both orders.

    Args:
        policy_first: Verdict with the policy's answer as A and the reference's as B.
        policy_second: Verdict with the reference's answer as A and the policy's as B.
    """
    if policy_first == "A" and policy_second == "B":
        return "win"
    if policy_first == "B" and policy_second == "A":
        return "loss"
    return "tie"


@dataclass
class PairResult:
    """Both judgements of one prompt and what they add up to."""

    index: int
    policy_first: Verdict
    policy_second: Verdict
    outcome: Outcome
    raw: list[str] = field(default_factory=list)

    @property
    def unparseable(self) -> int:
        return (self.policy_first is None) + (self.policy_second is None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "policy_first": self.policy_first,
            "policy_second": self.policy_second,
            "outcome": self.outcome,
            "raw": self.raw,
        }


JudgeFn = Callable[[str, str, str], tuple[Verdict, str]]


def judge_pair(judge: JudgeFn, index: int, prompt: str, policy: str, reference: str) -> PairResult:
    """Judge one pair in both orders; `judge(prompt, a, b)` returns (verdict, raw reply)."""
    first, raw_first = judge(prompt, policy, reference)
    second, raw_second = judge(prompt, reference, policy)
    return PairResult(index, first, second, combine(first, second), [raw_first, raw_second])


def tally(results: Iterable[PairResult]) -> dict[str, Any]:
    """Win/tie/loss counts and rates with 95% Wilson intervals, and the unparseable count.

    `win_rate_decisive` is wins over decided pairs (ties left out), the figure to quote when
    asking "when the judge has a consistent preference, which model does it prefer?".
    """
    results = list(results)
    n = len(results)
    counts = {o: sum(r.outcome == o for r in results) for o in ("win", "tie", "loss")}
    decided = counts["win"] + counts["loss"]
    summary: dict[str, Any] = {"n": n, **counts}
    for outcome, count in counts.items():
        summary[f"{outcome}_rate"] = count / n if n else 0.0
        summary[f"{outcome}_ci95"] = list(wilson_interval(count, n))
    summary["win_rate_decisive"] = counts["win"] / decided if decided else None
    summary["win_rate_decisive_ci95"] = list(wilson_interval(counts["win"], decided)) if decided else None
    # Same position both times = the judge picked a different model when the order changed.
    summary["position_disagreements"] = sum(
        r.policy_first in ("A", "B") and r.policy_first == r.policy_second for r in results
    )
    summary["unparseable_replies"] = sum(r.unparseable for r in results)
    summary["judgements"] = 2 * n
    return summary
