"""Pair building, prompt files and scoring functions of `dpo generate-pairs`, without a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpo_cli.errors import DpoError
from dpo_cli.pairs.pairing import distinct, pair_up
from dpo_cli.pairs.prompts import load_prompts
from dpo_cli.pairs.scoring import FunctionScorer, PairwiseScorer, load_function


def test_best_vs_worst_pairs_the_extremes_and_all_ranks_every_gap() -> None:
    scores = [0.2, 0.9, 0.5, 0.1]
    assert pair_up(scores, "best_vs_worst", 0.0) == ([(1, 3)], None)
    pairs, reason = pair_up(scores, "all", 0.0)
    assert reason is None and len(pairs) == 6
    assert all(scores[c] > scores[r] for c, r in pairs)
    assert pair_up(scores, "all", 0.35) == ([(1, 2), (1, 0), (1, 3), (2, 3)], None)


def test_no_pair_says_why() -> None:
    assert pair_up([0.5, 0.5, 0.5], "best_vs_worst", 0.0) == ([], "tied")
    assert pair_up([0.5, 0.6], "best_vs_worst", 0.1) == ([], "small_gap")  # a gap must be above the minimum
    assert pair_up([0.5, 0.61], "best_vs_worst", 0.1) == ([(1, 0)], None)


def test_near_identical_and_empty_responses_count_once() -> None:
    texts = ["The capital is Paris.", "The capital is Paris!", "", "   ", "Paris, obviously, is the capital city."]
    assert distinct(texts, 0.9) == [0, 4]
    assert distinct(texts, 1.0) == [0, 1, 4]  # only exact copies collapse at 1.0
    assert distinct(["", " "], 0.9) == []


def test_prompt_file_strings_and_messages(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": "Say hi."},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say bye."}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = load_prompts(str(path), "prompt", key="generate.prompts")
    assert [p.text for p in prompts] == ["Say hi.", "Say bye."]
    assert prompts[0].messages == [{"role": "user", "content": "Say hi."}]
    assert prompts[1].messages[0]["role"] == "system"
    assert len(load_prompts(str(path), "prompt", limit=1, key="generate.prompts")) == 1


def test_bad_prompts_are_named_by_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    rows = [
        {"q": "fine"},
        {"q": ""},
        {"q": "fine"},
        {"q": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DpoError, match="no column `prompt`") as exc:
        load_prompts(str(path), "prompt", key="generate.prompts")
    assert "q" in exc.value.message
    with pytest.raises(DpoError, match="2 unusable prompt") as exc:
        load_prompts(str(path), "q", key="generate.prompts")
    assert exc.value.details[0].startswith("row 2: `q` is empty")
    assert exc.value.details[1].startswith("row 4: `q` ends with an assistant message")


def test_scoring_function_from_module_and_file(tmp_path: Path) -> None:
    assert load_function("dpo_cli.scorers:concise")("p", "one two three") == -3.0
    file = tmp_path / "my_scores.py"
    file.write_text("def shouty(prompt, response):\n    return response.count('!')\n")
    assert FunctionScorer(f"{file}:shouty").rank("p", ["a!", "b!!!", "c"]) == [1.0, 3.0, 0.0]


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("dpo_cli.no_such_module:f", "importing `dpo_cli.no_such_module` failed"),
        ("dpo_cli.scorers:nope", "has no function `nope`"),
        ("./missing.py:f", "not found"),
    ],
)
def test_scoring_function_errors_name_the_key(reference: str, message: str) -> None:
    with pytest.raises(DpoError, match=message) as exc:
        load_function(reference)
    assert exc.value.message.startswith("generate.scorer: ")


def test_scores_must_be_finite_numbers(tmp_path: Path) -> None:
    file = tmp_path / "bad.py"
    file.write_text(
        "def text(p, r):\n    return 'high'\n\ndef nan(p, r):\n    return float('nan')\n"
        "def boom(p, r):\n    raise KeyError('x')\n"
    )
    for name, message in [("text", "returned 'high'"), ("nan", "returned nan"), ("boom", "raised KeyError")]:
        with pytest.raises(DpoError, match=message) as exc:
            FunctionScorer(f"{file}:{name}").score("p", "r", where=" (prompt row 3)")
        assert "prompt row 3" in exc.value.message


def test_pairwise_judge_scores_are_copeland_shares() -> None:
    # A judge preferring the longer answer, consistently in both orders.
    def judge(prompt: str, a: str, b: str):
        return ("A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"), ""

    scorer = PairwiseScorer(judge, "judge test")
    assert scorer.rank("p", ["aa", "a", "aaa", "aa"]) == [0.5, 0.0, 1.0, 0.5]


def test_docs_example_scorer_runs(tmp_path: Path) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "generate-pairs.md").read_text()
    block = page.split("# my_scores.py, used as --scorer my_scores.py:helpful\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my_scores.py").write_text(block)
    scorer = FunctionScorer(f"{tmp_path / 'my_scores.py'}:helpful")
    finished = " ".join(["word"] * 59) + " end."
    assert scorer.score("p", finished) > scorer.score("p", "As an AI, I cannot help with that.")
    assert scorer.score("p", finished) > scorer.score("p", finished[:-1])  # a finished sentence scores higher
