"""Token checks against TRL itself: the lengths we report and the rows we flag are the ones
`DPOTrainer._prepare_dataset` produces and drops, for each format."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from dpo_cli.validation import data_section, validate_data
from dpo_cli.validation.tokens import TokenChecker

pytestmark = pytest.mark.integration

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Renders the generation prompt with a marker the full conversation lacks (as some thinking models do).
MISMATCHED = CHATML.replace("<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\n<think></think>{% endif %}")


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([" ".join(r.values()) for r in _rows(200)], trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    wrapped.chat_template = CHATML
    return wrapped


def _rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        long = " and more" * (i % 9) * 3  # some prompts are long enough to fill max_length
        rows.append(
            {
                "prompt": f"Question {i}: what is {i} plus {i}{long}?",
                "chosen": f"It is {2 * i}, because {i} and {i} make {2 * i}.",
                "rejected": f"It is {2 * i}, because {i} and {i} make {2 * i + 1}.",
            }
        )
    return rows


def _chat(rows: list[dict]) -> list[dict]:
    return [{k: [{"role": "user" if k == "prompt" else "assistant", "content": v}] for k, v in r.items()} for r in rows]


def _implicit(rows: list[dict]) -> list[dict]:
    return [
        {
            "chosen": f"\n\nHuman: {r['prompt']}\n\nAssistant: {r['chosen']}",
            "rejected": f"\n\nHuman: {r['prompt']}\n\nAssistant: {r['rejected']}",
        }
        for r in rows
    ]


def trl_prepare(rows: list[dict], tokenizer, max_length: int | None) -> list[dict]:
    """TRL's own preprocessing, called with the one attribute of the trainer it reads."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir="unused", max_length=max_length, report_to="none", bf16=False, use_cpu=True)
    dataset = Dataset.from_list([{**r, "row": i} for i, r in enumerate(rows)])
    trainer = SimpleNamespace(_tokenizer=tokenizer)
    return list(DPOTrainer._prepare_dataset(trainer, dataset, tokenizer, args, "train"))


@pytest.mark.parametrize("layout", ["standard", "conversational", "implicit"])
def test_lengths_and_dropped_rows_match_trl(tmp_path: Path, tokenizer, layout: str) -> None:
    rows = {"standard": _rows, "conversational": lambda n: _chat(_rows(n)), "implicit": lambda n: _implicit(_rows(n))}[
        layout
    ](60)
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    max_length = 48
    report = validate_data(data_section(str(path)), token_checker=TokenChecker(tokenizer, max_length))
    split = report.splits[0]

    kept_by_trl = trl_prepare(rows, tokenizer, max_length)
    dropped_by_trl = sorted(set(range(len(rows))) - {r["row"] for r in kept_by_trl})
    cut = split.findings.by_id["response_cut_off"]
    assert dropped_by_trl, "the fixture must make TRL drop rows"
    assert cut.count == len(dropped_by_trl)
    assert [int(e.split(":")[1].split()[0]) - 1 for e in cut.examples] == dropped_by_trl[: len(cut.examples)]
    # Token lengths of every row are exactly TRL's prompt/chosen/rejected ids (before its drop).
    all_rows = trl_prepare(rows, tokenizer, None)
    for name in ("prompt", "chosen", "rejected"):
        trl_lengths = sorted(len(r[f"{name}_ids"]) for r in all_rows)
        ours = split.tokens[name]
        assert ours.n == len(trl_lengths)
        assert (min(ours.counts), max(ours.counts), ours.total) == (trl_lengths[0], trl_lengths[-1], sum(trl_lengths))
    if layout != "implicit":  # (implicit: TRL's shared prefix runs up to the last digit: nothing left to cut)
        # Pairs that differ only in the last digit, cut before it, become identical.
        assert split.findings.by_id["identical_after_truncation"].count > 0
        assert "truncated" in split.findings.by_id


def test_no_truncation_findings_when_everything_fits(tmp_path: Path, tokenizer) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(30)), encoding="utf-8")
    report = validate_data(data_section(str(path)), token_checker=TokenChecker(tokenizer, 4096))
    found = set(report.splits[0].findings.by_id)
    assert found.isdisjoint({"response_cut_off", "identical_after_truncation", "truncated", "template_mismatch"})


def test_chat_template_prefix_mismatch(tmp_path: Path, tokenizer) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _chat(_rows(20))), encoding="utf-8")
    assert (
        "template_mismatch"
        not in validate_data(data_section(str(path)), token_checker=TokenChecker(tokenizer, 4096))
        .splits[0]
        .findings.by_id
    )
    original = tokenizer.chat_template
    tokenizer.chat_template = MISMATCHED
    try:
        report = validate_data(data_section(str(path)), token_checker=TokenChecker(tokenizer, 4096))
    finally:
        tokenizer.chat_template = original
    assert report.splits[0].findings.by_id["template_mismatch"].count == 20


def test_chat_template_that_raises_marks_the_row(tmp_path: Path, tokenizer) -> None:
    strict = "{% if messages[0]['content'] == 'boom' %}{{ raise_exception('no boom') }}{% endif %}" + CHATML
    rows = _chat(_rows(10))
    rows[3]["prompt"][0]["content"] = "boom"
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    original = tokenizer.chat_template
    tokenizer.chat_template = strict
    try:
        report = validate_data(data_section(str(path)), token_checker=TokenChecker(tokenizer, 4096))
    finally:
        tokenizer.chat_template = original
    finding = report.splits[0].findings.by_id["bad_conversation"]
    assert finding.count == 1 and finding.examples[0].startswith(f"{path}:4") and "no boom" in finding.examples[0]


def test_standard_prompt_merging_into_response_is_a_mismatch(tmp_path: Path, tokenizer) -> None:
    rows = [
        {"prompt": f"Question {i}: what is", "chosen": f"{i}{i} maybe", "rejected": f" {i} surely"} for i in range(20)
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = validate_data(data_section(str(path)), token_checker=TokenChecker(tokenizer, 4096))
    trl_rows = trl_prepare(rows, tokenizer, 4096)
    tokens = report.splits[0].tokens
    assert tokens["prompt"].total == sum(len(r["prompt_ids"]) for r in trl_rows)
    assert tokens["chosen"].total == sum(len(r["chosen_ids"]) for r in trl_rows)


def test_validate_data_with_a_config_uses_its_tokenizer(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dpo_cli.cli.main import app
    from tests.conftest import ROOT, SAMPLE, smoke_overrides

    overrides = smoke_overrides(tiny_model_dir, tmp_path / "run", "training.max_length=48")
    overrides[2:4] = [f"data.train={SAMPLE / 'train_chat.jsonl'}", f"data.eval={SAMPLE / 'eval_chat.jsonl'}"]
    args = ["validate-data", str(ROOT / "configs" / "smoke.yaml"), "--report", str(tmp_path / "r.json")]
    for item in overrides:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["tokenizer"] == str(tiny_model_dir) and report["max_length"] == 48
    train = report["splits"][0]
    assert train["format"] == "conversational" and train["token_lengths"]["prompt"]["max"] > 0
    # 48 tokens is too short for the longer sample prompts: those rows are errors, the run would refuse
    checks = {f["check"] for f in train["findings"]}
    assert "response_cut_off" in checks and result.exit_code == 2
    roomy = CliRunner().invoke(app, [*args[:2], *[a for o in overrides[:-1] for a in ("--set", o)]])
    assert roomy.exit_code == 0, roomy.output
