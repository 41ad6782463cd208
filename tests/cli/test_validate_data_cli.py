"""`dpo validate-data` and `dpo train`'s data gate: exit codes, messages, report and clean files."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dpo_cli.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
runner = CliRunner()


def rows(n: int = 120) -> list[dict]:
    return [{"prompt": f"Question {i}?", "chosen": f"Answer {i} in a few words.", "rejected": f"No idea about {i * 3}!"}
            for i in range(n)]


def write(path: Path, items: list) -> Path:
    path.write_text("\n".join(i if isinstance(i, str) else json.dumps(i) for i in items) + "\n", encoding="utf-8")
    return path


def test_clean_data_exits_0() -> None:
    result = runner.invoke(app, ["validate-data", "--data", str(SAMPLE / "train.jsonl")])
    assert result.exit_code == 0, result.output
    assert "400 rows, standard" in result.output and "no problems" in result.output


def test_errors_exit_2_with_line_numbers(tmp_path: Path) -> None:
    data = rows()
    data[4] = "{broken"
    data[9] = {**data[9], "rejected": data[9]["chosen"]}
    path = write(tmp_path / "t.jsonl", data)
    result = runner.invoke(app, ["validate-data", "--data", str(path)])
    assert result.exit_code == 2
    assert f"{path}:5" in result.output and "malformed_line" in result.output
    assert f"{path}:10" in result.output and "identical_pair" in result.output


def test_warnings_pass_unless_strict(tmp_path: Path) -> None:
    data = rows()
    data[9] = dict(data[2])
    path = write(tmp_path / "t.jsonl", data)
    assert runner.invoke(app, ["validate-data", "--data", str(path)]).exit_code == 0
    result = runner.invoke(app, ["validate-data", "--data", str(path), "--strict"])
    assert result.exit_code == 1 and "duplicate_pair" in result.output


def test_report_and_write_clean(tmp_path: Path) -> None:
    data = rows()
    data[3] = {**data[3], "chosen": None}
    path = write(tmp_path / "t.jsonl", data)
    report, clean = tmp_path / "r.json", tmp_path / "clean"
    args = ["validate-data", "--data", str(path), "--report", str(report), "--write-clean", str(clean)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    saved = json.loads(report.read_text())
    assert saved["exit_code"] == 2 and saved["splits"][0]["findings"][0]["check"] == "null_field"
    assert len((clean / "train.jsonl").read_text().splitlines()) == 119
    [reject] = [json.loads(x) for x in (clean / "rejects.jsonl").read_text().splitlines()]
    assert reject["where"] == f"{path}:4" and reject["reasons"][0]["check"] == "null_field"
    # nothing is overwritten without --overwrite
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "file exists" in again.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 2
    cleaned = runner.invoke(app, ["validate-data", "--data", str(clean / "train.jsonl")])
    assert cleaned.exit_code == 0, cleaned.output


def test_other_layout_is_explained(tmp_path: Path) -> None:
    path = write(tmp_path / "kto.jsonl", [{"prompt": "p", "completion": "c", "label": False}])
    result = runner.invoke(app, ["validate-data", "--data", str(path)])
    assert result.exit_code == 2 and "unpaired rows" in result.output


def test_column_options(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", [{"q": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in rows()])
    args = ["validate-data", "--data", str(path), "--prompt-column", "q", "--chosen-column", "good",
            "--rejected-column", "bad"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


def test_config_without_tokens() -> None:
    result = runner.invoke(app, ["validate-data", str(ROOT / "configs" / "smoke.yaml"), "--no-tokens",
                                 "--set", f"data.train={SAMPLE / 'train.jsonl'}",
                                 "--set", f"data.eval={SAMPLE / 'eval.jsonl'}"])
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "eval" in result.output


def test_usage_errors(tmp_path: Path) -> None:
    neither = runner.invoke(app, ["validate-data"])
    assert neither.exit_code == 2 and "either CONFIG or --data" in neither.output
    missing = runner.invoke(app, ["validate-data", "--data", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "not found" in missing.output and "Traceback" not in missing.output


def test_train_refuses_invalid_data_before_loading_a_model(tmp_path: Path) -> None:
    data = rows()
    data[4] = "{broken"
    bad = write(tmp_path / "bad.jsonl", data)
    out = tmp_path / "run"
    args = ["train", str(ROOT / "configs" / "smoke.yaml"), "--set", f"output_dir={out}",
            "--set", f"data.train={bad}", "--set", f"data.eval={bad}", "--set", "model.name_or_path=/nonexistent"]
    refused = runner.invoke(app, [*args, "--set", "model.tokenizer_name_or_path=" + str(_tokenizer_dir(tmp_path))])
    assert refused.exit_code == 2, refused.output
    assert "nothing was trained" in refused.output and "malformed_line" in refused.output
    assert not out.exists()
    # --skip-validation opts out: train's own loader then trips over the same line
    skipped = runner.invoke(app, [*args, "--skip-validation"])
    assert skipped.exit_code == 2 and "could not parse data" in skipped.output
    assert "nothing was trained" not in skipped.output


def _tokenizer_dir(tmp_path: Path) -> Path:
    """A small fast tokenizer with a chat template, trained here offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([r["chosen"] + r["rejected"] for r in rows()], trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    out = tmp_path / "tok"
    wrapped.save_pretrained(out)
    return out
