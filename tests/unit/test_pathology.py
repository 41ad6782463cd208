"""Pathology checks of generated text: pure functions, no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dpo_cli.evaluation import pathology as p


def test_words_and_repetition() -> None:
    assert p.words("Don't panic, it's 42!") == ["don't", "panic", "it's", "42"]
    fresh = p.words("the cat sat on the mat by the door")
    assert p.repeated_ngram_fraction(fresh, 3) == 0.0
    loop = p.words("I like it. " * 10)
    assert p.repeated_ngram_fraction(loop, 3) > 0.8
    assert p.repeated_ngram_fraction(["a", "b"], 3) == 0.0  # too short to have a 3-gram


@pytest.mark.parametrize(
    "text",
    [
        "Great question! Sleep matters.",
        "What a wonderful question. First...",
        "You're absolutely right, and",
        "  Absolutely! Here is how.",
        "I'd be happy to help with that.",
        "Happy to help. First write...",
    ],
)
def test_sycophantic_openers(text: str) -> None:
    assert p.is_sycophantic_opener(text)


@pytest.mark.parametrize(
    "text", ["Write three lines every evening.", "The question of sleep is a great question.", "Certainly not."]
)
def test_not_sycophantic(text: str) -> None:
    assert not p.is_sycophantic_opener(text)


@pytest.mark.parametrize(
    "text",
    [
        "As an AI, I have no opinion.",
        "I'm sorry, but I can't help with that.",
        "I cannot answer this.",
        "Please consult a professional.",
        "Search for it on your own instead of wasting my time.",
    ],
)
def test_evasion(text: str) -> None:
    assert p.is_evasive(text)


def test_plain_answer_is_not_evasive() -> None:
    assert not p.is_evasive("Keep the same bedtime every night and put the phone in another room.")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("?!... --", "no words"),
        ("go go go go go go go go go go", "repetition loop"),
        ("the the the the cat the the the dog the", "one word dominates"),
        ("Short but fine.", None),
        ("To fall asleep faster, keep the same bedtime every night and avoid screens.", None),
    ],
)
def test_degenerate_reason(text: str, reason: str | None) -> None:
    assert p.degenerate_reason(text) == reason


def test_summarize_and_compare() -> None:
    reference = ["Keep a notebook by the bed.", "Walk for ten minutes after lunch."]
    policy = [
        "Great question! " + "Keep a notebook by the bed and write three lines every evening before sleep.",
        "loop loop loop loop loop loop loop loop loop",
    ]
    ps = p.summarize(policy, finished=[True, False])
    rs = p.summarize(reference, finished=[True, True])
    assert ps["n"] == 2 and ps["sycophantic_opener_rate"] == 0.5 and ps["degenerate_rate"] == 0.5
    assert ps["degenerate_reasons"] == {"repetition loop": 1}
    assert ps["truncated_rate"] == 0.5 and rs["truncated_rate"] == 0.0
    assert rs["mean_words"] == pytest.approx(6.0)
    rows = {r["metric"]: r for r in p.compare(ps, rs)}
    assert rows["mean_words"]["delta"] == pytest.approx(ps["mean_words"] - rs["mean_words"])
    found = " ".join(p.findings(ps, rs))
    for word in ("verbosity", "sycophantic", "degenerate", "cut off", "repetition"):
        assert word in found
    assert p.findings(rs, rs) == []
    assert p.summarize([]) == {"n": 0}


def test_distinct_n() -> None:
    assert p.distinct_n(["a b c", "a b c"], 2) == 0.5
    assert p.distinct_n([""], 2) == 0.0


def test_evaluation_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import dpo_cli.evaluation.pathology, dpo_cli.evaluation.winrate, dpo_cli.evaluation.judges\n"
        "import dpo_cli.evaluation.report, dpo_cli.evaluation.runner, dpo_cli.evaluation.generate\n"
        "import dpo_cli.evaluation.preference, dpo_cli.cli.eval\n"
        "print([m for m in ('torch', 'transformers', 'trl', 'openai') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
