"""The command line surface: help for every verb, exit codes, error text without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from dpo_cli.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def all_command_paths() -> list[list[str]]:
    paths: list[list[str]] = [[]]

    def walk(group, prefix: list[str]) -> None:
        for name, command in group.commands.items():
            paths.append([*prefix, name])
            if hasattr(command, "commands"):
                walk(command, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_expected_verbs_are_registered() -> None:
    names = {" ".join(p) for p in all_command_paths()}
    assert {"train", "config", "config show", "config schema"} <= names


@pytest.mark.parametrize("path", all_command_paths(), ids=lambda p: " ".join(p) or "dpo")
def test_help_on_every_command(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_config_show_prints_resolved_values() -> None:
    result = runner.invoke(app, ["config", "show", str(ROOT / "configs" / "smoke.yaml"), "--set", "training.beta=0.3"])
    assert result.exit_code == 0, result.output
    assert "beta: 0.3" in result.output
    assert "reference:" in result.output  # defaults are filled in


def test_config_schema_is_json() -> None:
    result = runner.invoke(app, ["config", "schema"])
    assert result.exit_code == 0
    assert json.loads(result.output)["title"] == "RunConfig"


def test_bad_config_exit_code_and_one_line_per_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "output_dir: r\nmodel:\n  name_or_path: m\ndata:\n  train: t.jsonl\ntraining:\n  betta: 1\n  beta: 0\n"
    )
    result = runner.invoke(app, ["train", str(bad)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "error: " in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("  ")]
    assert len(lines) == 2
    assert any("training.betta" in line and "beta" in line for line in lines)


def test_train_refuses_an_earlier_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    result = runner.invoke(app, ["train", str(ROOT / "configs" / "smoke.yaml"), "--set", f"output_dir={run}"])
    assert result.exit_code == 2
    assert "not empty" in result.stderr and "--overwrite" in result.stderr
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("dpo ")


def finished_run(run: Path) -> Path:
    """The files of a finished run with one complete checkpoint (contents never loaded on these paths)."""
    import struct

    from dpo_cli.rundir import mark_complete

    checkpoint = run / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 4}')
    (checkpoint / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    mark_complete(checkpoint)
    (run / "run.json").write_text('{"status": "completed", "started": "earlier"}\n')
    (run / "metrics.jsonl").write_text('{"step": 4, "loss": 0.5}\n{"step": 4, "train_runtime": 1.0}\n')
    return run


def test_resume_refuses_to_guess_without_the_runs_config(tmp_path: Path) -> None:
    """Issue 15, item 14: with config.yaml gone, --resume accepted a different beta and learning rate."""
    run = finished_run(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    args = [
        "train",
        str(ROOT / "configs" / "smoke.yaml"),
        "--resume",
        "--skip-validation",
        "--set",
        f"output_dir={run}",
        "--set",
        "training.beta=0.5",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "config.yaml: missing, so the config cannot be checked" in result.stderr
    assert "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # run.json untouched


def test_overwrite_refuses_a_run_whose_folder_holds_the_training_data(tmp_path: Path) -> None:
    """Issue 15, item 2: --overwrite deleted X/train.jsonl, X/notes.txt and X/sub/, then X itself."""
    folder = tmp_path / "X"
    (folder / "sub").mkdir(parents=True)
    data = (ROOT / "data" / "sample" / "train.jsonl").read_text()
    (folder / "train.jsonl").write_text(data)
    (folder / "notes.txt").write_text("mine")
    (folder / "run.json").write_text('{"status": "completed"}\n')
    args = [
        "train",
        str(ROOT / "configs" / "smoke.yaml"),
        "--overwrite",
        "--skip-validation",
        "--set",
        f"output_dir={folder}",
        "--set",
        f"data.train={folder / 'train.jsonl'}",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--overwrite would delete files that are not the earlier run's own" in result.stderr
    assert "data.train:" in result.stderr and "notes.txt: not a file dpo writes" in result.stderr
    assert (
        (folder / "train.jsonl").read_text() == data and (folder / "notes.txt").exists() and (folder / "sub").is_dir()
    )


def test_a_moved_run_directory_passes_the_resume_config_check(tmp_path: Path) -> None:
    """A run copied to another disk differs from its config.yaml only in output_dir: not a refusal."""
    from dpo_cli.config.loader import config_to_yaml, load_config
    from dpo_cli.train.resume import check_resume_compatible

    smoke = ROOT / "configs" / "smoke.yaml"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.yaml").write_text(
        config_to_yaml(load_config(smoke, [f"output_dir={tmp_path / 'old'}"]))
    )
    check_resume_compatible(load_config(smoke, [f"output_dir={tmp_path / 'new'}"]), tmp_path / "old")
    with pytest.raises(Exception, match="differs from the run being resumed"):
        check_resume_compatible(
            load_config(smoke, [f"output_dir={tmp_path / 'new'}", "training.beta=0.5"]), tmp_path / "old"
        )
