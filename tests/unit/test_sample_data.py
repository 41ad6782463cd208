"""The bundled sample data: schema, sizes, no leakage, a usable preference signal, determinism."""

from __future__ import annotations

import importlib.util
import json
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
FILES = {"train.jsonl": 400, "eval.jsonl": 100, "train_chat.jsonl": 400, "eval_chat.jsonl": 100}


def load_generator():
    """scripts/ is not a package, so import the generator from its path."""
    path = ROOT / "scripts" / "make_sample_data.py"
    spec = importlib.util.spec_from_file_location("make_sample_data_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(name: str) -> list[dict]:
    return [json.loads(line) for line in (SAMPLE / name).read_text(encoding="utf-8").splitlines()]


def response(value) -> str:
    """The response text of either format."""
    return value if isinstance(value, str) else value[-1]["content"]


def texts(row: dict) -> list[str]:
    out = []
    for value in (row["prompt"], row["chosen"], row["rejected"]):
        out += [value] if isinstance(value, str) else [m["content"] for m in value]
    return out


@pytest.mark.parametrize("name", sorted(FILES))
def test_files_parse_with_the_expected_counts(name: str) -> None:
    assert len(read(name)) == FILES[name]


@pytest.mark.parametrize("name", ["train.jsonl", "eval.jsonl"])
def test_standard_schema(name: str) -> None:
    for row in read(name):
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert all(isinstance(row[k], str) for k in row)


@pytest.mark.parametrize("name", ["train_chat.jsonl", "eval_chat.jsonl"])
def test_conversational_schema(name: str) -> None:
    rows = read(name)
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected"}
        roles = [m["role"] for m in row["prompt"]]
        if roles[0] == "system":
            roles = roles[1:]
        # Turns alternate and the prompt ends on the user, so the response is the assistant's.
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
        for key in ("chosen", "rejected"):
            assert [m["role"] for m in row[key]] == ["assistant"]
    # The variety the docs promise: some system messages, some multi-turn prompts.
    assert any(r["prompt"][0]["role"] == "system" for r in rows)
    assert any(len(r["prompt"]) >= 3 and r["prompt"][0]["role"] == "user" for r in rows)


@pytest.mark.parametrize("fmt", ["", "_chat"])
def test_eval_prompts_never_appear_in_train(fmt: str) -> None:
    def prompts(name: str) -> set[str]:
        return {json.dumps(r["prompt"]) for r in read(name)}

    assert not prompts(f"train{fmt}.jsonl") & prompts(f"eval{fmt}.jsonl")
    # Stricter than the chat wrapper: the user request itself is unseen.
    requests = {r["prompt"] for r in read("train.jsonl")}
    assert not requests & {r["prompt"] for r in read("eval.jsonl")}


@pytest.mark.parametrize("name", sorted(FILES))
def test_rows_are_clean_distinct_pairs(name: str) -> None:
    rows = read(name)
    assert len({json.dumps(r, sort_keys=True) for r in rows}) == len(rows)
    for row in rows:
        assert row["chosen"] != row["rejected"]
        for text in texts(row):
            assert text.strip(), row
            assert "\ufffd" not in text
            assert not any(unicodedata.category(c) == "Cc" for c in text), text


@pytest.mark.parametrize("name", sorted(FILES))
def test_length_is_not_the_signal(name: str) -> None:
    rows = read(name)
    longer = sum(len(response(r["chosen"])) > len(response(r["rejected"])) for r in rows) / len(rows)
    assert 0.35 <= longer <= 0.65
    for row in rows:
        for key in ("chosen", "rejected"):
            # Short enough for max_length 128 with SmolLM2's tokenizer.
            assert 8 <= len(response(row[key]).split()) <= 40


def test_generator_is_deterministic_and_matches_the_bundled_files(tmp_path: Path) -> None:
    generator = load_generator()
    for out in (tmp_path / "a", tmp_path / "b"):
        generator.write(generator.generate(400, 100, seed=0), out)
    for name in FILES:
        first = (tmp_path / "a" / name).read_bytes()
        assert first == (tmp_path / "b" / name).read_bytes()
        assert first == (SAMPLE / name).read_bytes(), f"{name} is stale: run python scripts/make_sample_data.py"


def test_generator_counts_are_flags_and_seeds_matter() -> None:
    generator = load_generator()
    small = generator.generate(40, 12, seed=0)
    assert [len(small[n]) for n in FILES] == [40, 12, 40, 12]
    assert generator.generate(40, 12, seed=1)["train.jsonl"] != small["train.jsonl"]
