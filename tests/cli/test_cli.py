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
    bad.write_text("output_dir: r\nmodel:\n  name_or_path: m\ndata:\n  train: t.jsonl\ntraining:\n  betta: 1\n  beta: 0\n")
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
