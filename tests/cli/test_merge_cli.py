"""`dpo merge-adapter` on the command line: what is refused before any model loads, and how it reads."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from dpo_cli.cli.main import app

runner = CliRunner()


def adapter_dir(path: Path, *, weights: bool = True) -> Path:
    """An adapter directory's files as PEFT names them (the weights file is a whole, empty safetensors file)."""
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "some/base"}))
    if weights:
        (path / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
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
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def lora_run(path: Path, *, status: str = "completed", marker: bool = True) -> Path:
    """A run directory whose final/ is an adapter, as `dpo train` leaves it."""
    from dpo_cli.rundir import mark_complete

    path.mkdir(parents=True)
    (path / "config.yaml").write_text("model:\n  name_or_path: some/base\nlora:\n  r: 8\n")
    (path / "run.json").write_text(json.dumps({"status": status}))
    adapter_dir(path / "final")
    if marker:
        mark_complete(path / "final")
    return path


def test_a_final_dir_that_was_never_finished_is_refused(tmp_path: Path) -> None:
    """Issue 15, item 14: such a run was accepted, and the merge failed later."""
    run = lora_run(tmp_path / "run", status="interrupted", marker=False)
    result = invoke(str(run), "-o", str(tmp_path / "out"))
    assert_clean_error(result, 2, "incomplete: the run ended 'interrupted' before final/ was finished")
    # The same folder named directly is refused the same way.
    assert_clean_error(invoke(str(run / "final"), "-o", str(tmp_path / "out")), 2, "before final/ was finished")


def test_a_final_dir_changed_after_its_marker_is_refused(tmp_path: Path) -> None:
    run = lora_run(tmp_path / "run")
    (run / "final" / "adapter_config.json").write_text('{"peft_type": "LORA", "base_model_name_or_path": "x", "r": 16}')
    assert_clean_error(invoke(str(run), "-o", str(tmp_path / "out")), 1, "damaged since it was saved")


def test_an_unmarked_checkpoint_is_refused(tmp_path: Path) -> None:
    run = lora_run(tmp_path / "run")
    torn = adapter_dir(run / "checkpoints" / "checkpoint-4")
    assert_clean_error(invoke(str(torn), "-o", str(tmp_path / "out")), 2, "save did not finish")


def test_a_truncated_adapter_is_one_clear_message(tmp_path: Path) -> None:
    adapter = adapter_dir(tmp_path / "adapter")
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    (adapter / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 7)
    result = invoke(str(adapter), "-o", str(tmp_path / "out"))
    assert_clean_error(result, 1, "adapter weights are damaged", "truncated")


def test_leftovers_of_a_killed_merge_are_cleaned_and_the_old_model_put_back(tmp_path: Path) -> None:
    from dpo_cli.merge.runner import clean_leftovers

    out = tmp_path / "merged model"
    # Killed between moving the old model aside and moving the new one in.
    moved = tmp_path / ".merged model.old-abc123" / "merged model"
    moved.mkdir(parents=True)
    (moved / "model.safetensors").write_text("the earlier merge")
    (tmp_path / ".merged model.merging-def456").mkdir()
    (tmp_path / ".merged model.merging-def456" / "model.safetensors").write_text("half")
    (tmp_path / ".other.merging-xyz").mkdir()  # another output's: not ours to touch
    notes = clean_leftovers(out)
    assert (out / "model.safetensors").read_text() == "the earlier merge"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.merging-xyz", "merged model"]
    assert any(n.startswith("restored") for n in notes) and len(notes) == 3
    # Killed while the old copy was being deleted: the new model is in place, the old copy goes.
    (tmp_path / ".merged model.old-ghi789").mkdir()
    clean_leftovers(out)
    assert (out / "model.safetensors").read_text() == "the earlier merge"
    assert not (tmp_path / ".merged model.old-ghi789").exists()


def test_the_next_merge_into_an_output_cleans_its_leftovers(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (tmp_path / ".out.merging-1").mkdir()
    (tmp_path / ".out.old-2").mkdir()
    result = invoke(str(tmp_path / "nope"), "-o", str(out))  # refused, but only after the clean-up
    assert result.exit_code == 2
    assert "removed" in result.stdout and sorted(p.name for p in tmp_path.iterdir()) == [".out.lock"]


def test_a_run_config_key_of_the_wrong_type_is_one_clear_message(tmp_path: Path) -> None:
    """The keys the merge reads are typed; a wrong one names the file and the key (it was ignored or crashed)."""
    run = lora_run(tmp_path / "run")
    config = run / "config.yaml"
    cases = {
        "model:\n  name_or_path: some/base\n  trust_remote_code: [yes]\n": "`model.trust_remote_code`",
        "model:\n  name_or_path: 7\n": "`model.name_or_path`",
        "model: [some/base]\n": "`model`",
        "model:\n  name_or_path: some/base\nquantization: 4\n": "`quantization`",
    }
    for text, key in cases.items():
        config.write_text(text)
        result = invoke(str(run), "-o", str(tmp_path / "out"))
        assert_clean_error(result, 2, f"{config}: {key}", "found")
    config.write_text("- model\n")
    assert_clean_error(invoke(str(run), "-o", str(tmp_path / "out")), 2, f"{config}: expected a mapping")


def test_a_partial_run_config_reads_its_keys_and_ignores_the_rest() -> None:
    from dpo_cli.merge.run_config import RunSettings

    settings = RunSettings.model_validate(
        {"model": {"name_or_path": "b", "dtype": "auto", "attn_implementation": "sdpa"}, "future_section": {"x": 1}}
    )
    assert settings.model.name_or_path == "b" and settings.model.dtype == "auto"
    assert settings.model.revision is None and settings.model.trust_remote_code is False
    assert settings.quantization is None
    assert RunSettings.model_validate({"model": None, "quantization": {"bnb_4bit_quant_type": "nf4"}}).quantization
