"""Position-swapped judging, win/tie/loss tallies, Wilson intervals and verdict parsing (no torch)."""

from __future__ import annotations

import pytest

from dpo_cli.evaluation.judges import parse_verdict, rubric_prompt
from dpo_cli.evaluation.winrate import combine, judge_pair, tally, wilson_interval

PAIRS = [(i, f"prompt {i}", f"policy answer {i}", f"reference answer {i}") for i in range(12)]


def always(position: str):
    def judge(prompt: str, a: str, b: str):
        return position, f"Verdict: {position}"

    return judge


def prefers_policy(prompt: str, a: str, b: str):
    # A consistent judge: it recognises the policy's answer wherever it is shown.
    return ("A" if a.startswith("policy") else "B"), "Verdict"


def test_a_judge_that_always_picks_position_a_gives_only_ties() -> None:
    results = [judge_pair(always("A"), *pair) for pair in PAIRS]
    summary = tally(results)
    assert (summary["win"], summary["tie"], summary["loss"]) == (0, 12, 0)
    assert summary["position_disagreements"] == 12
    assert summary["unparseable_replies"] == 0
    assert summary["win_rate_decisive"] is None
    assert tally(judge_pair(always("B"), *pair) for pair in PAIRS)["tie"] == 12


def test_a_consistent_judge_gives_wins_and_losses() -> None:
    summary = tally(judge_pair(prefers_policy, *pair) for pair in PAIRS)
    assert (summary["win"], summary["tie"], summary["loss"]) == (12, 0, 0)
    assert summary["win_rate"] == 1.0 and summary["win_rate_decisive"] == 1.0
    assert summary["position_disagreements"] == 0

    def prefers_reference(prompt, a, b):
        return ("B" if a.startswith("policy") else "A"), ""

    assert tally(judge_pair(prefers_reference, *pair) for pair in PAIRS)["loss"] == 12


def test_unparseable_replies_are_ties_and_counted() -> None:
    def mumbles(prompt, a, b):
        return parse_verdict("hmm, hard to say"), "hmm, hard to say"

    results = [judge_pair(mumbles, *pair) for pair in PAIRS[:5]]
    summary = tally(results)
    assert summary["tie"] == 5 and summary["unparseable_replies"] == 10 and summary["judgements"] == 10
    assert results[0].raw == ["hmm, hard to say", "hmm, hard to say"]


@pytest.mark.parametrize(
    ("first", "second", "outcome"),
    [
        ("A", "B", "win"),
        ("B", "A", "loss"),
        ("A", "A", "tie"),
        ("B", "B", "tie"),
        ("tie", "B", "tie"),
        (None, "B", "tie"),
        ("A", None, "tie"),
        ("tie", "tie", "tie"),
    ],
)
def test_combine(first, second, outcome) -> None:
    assert combine(first, second) == outcome


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)  # not zero-width at 0%
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    narrow, wide = wilson_interval(50, 100), wilson_interval(5, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("Verdict: A", "A"),
        ("verdict: b", "B"),
        ("Verdict: tie", "tie"),
        ("**Verdict: [B]**", "B"),
        ("A is vague. Verdict: A\nOn reflection, Verdict: B", "B"),
        ("A", "A"),
        (" [[B]] ", "B"),
        ("Tie.", "tie"),
        ("", None),
        ("Answer A is better but B is also good", None),
        ("\n\n am am am", None),
        ("Verdict: C", None),
    ],
)
def test_parse_verdict(reply: str, verdict: str | None) -> None:
    assert parse_verdict(reply) == verdict


def test_rubric_prompt_shows_both_answers_in_order() -> None:
    text = rubric_prompt("How?", "first answer", "second answer")
    assert text.index("first answer") < text.index("second answer")
    assert "Verdict: A" in text and "How?" in text
