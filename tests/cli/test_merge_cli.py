"""`dpo merge-adapter` on the command line: what is refused before any model loads, and how it reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from dpo_cli.cli.main import app

runner = CliRunner()


def adapter_dir(path: Path, *, weights: bool = True) -> Path:
    """An adapter directory's files as PEFT names them (contents are never read on these paths)."""
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "some/base"}))
    if weights:
        (path / "adapter_model.safetensors").write_bytes(b"")
    return path


def invoke(*args: str):
    return runner.invoke(app, ["merge-adapter", *args])


def assert_clean_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: ")
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_missing_source(tmp_path: Path) -> None:
    assert_clean_error(invoke(str(tmp_path / "nope"), "-o", str(tmp_path / "out")), 2, "no such directory")


def test_directory_that_is_neither_run_nor_adapter(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    result = invoke(str(tmp_path / "stuff"), "-o", str(tmp_path / "out"))
    assert_clean_error(result, 2, "neither a run directory", "adapter_config.json")


def test_full_fine_tuning_run_has_nothing_to_merge(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text("model:\n  name_or_path: some/base\n")
    (run / "final" / "config.json").write_text("{}")
    assert_clean_error(invoke(str(run), "-o", str(tmp_path / "out")), 2, "trained the full model")


def test_unfinished_run_points_at_its_checkpoints(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  name_or_path: some/base\n")
    assert_clean_error(invoke(str(run), "-o", str(tmp_path / "out")), 2, "no final/", "checkpoints/checkpoint-N")


def test_zero3_partitioned_save_is_explained(tmp_path: Path) -> None:
    adapter = adapter_dir(tmp_path / "final", weights=False)
    (adapter / "latest").write_text("global_step10")
    (adapter / "global_step10").mkdir()
    result = invoke(str(adapter), "-o", str(tmp_path / "out"))
    assert_clean_error(result, 1, "no adapter weights", "zero3_save_16bit_model: true", "zero_to_fp32.py")


def test_non_empty_output_is_refused_without_overwrite(tmp_path: Path) -> None:
    adapter = adapter_dir(tmp_path / "adapter")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_text("earlier")
    assert_clean_error(invoke(str(adapter), "-o", str(out)), 2, "not empty", "--overwrite")
    assert (out / "model.safetensors").read_text() == "earlier"


def test_output_may_not_be_the_adapter_itself(tmp_path: Path) -> None:
    adapter = adapter_dir(tmp_path / "adapter")
    result = invoke(str(adapter), "-o", str(tmp_path), "--overwrite")
    assert_clean_error(result, 2, "an input of this merge")
    assert (adapter / "adapter_config.json").is_file()


def test_unknown_dtype_is_a_usage_error(tmp_path: Path) -> None:
    adapter = adapter_dir(tmp_path / "adapter")
    result = invoke(str(adapter), "-o", str(tmp_path / "out"), "--dtype", "int4")
    assert result.exit_code == 2
    assert "bfloat16" in result.output


def test_refusals_happen_before_torch_is_imported(tmp_path: Path) -> None:
    # A fresh interpreter: in this one, other test modules may have imported torch already.
    adapter = adapter_dir(tmp_path / "adapter")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("")
    code = (
        "import sys; from typer.testing import CliRunner; from dpo_cli.cli.main import app; "
        f"r = CliRunner().invoke(app, ['merge-adapter', {str(adapter)!r}, '-o', {str(tmp_path / 'out')!r}]); "
        "assert r.exit_code == 2, r.output; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
