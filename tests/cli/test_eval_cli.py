"""`dpo eval` on the command line: exit codes and messages, before any model is loaded."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dpo_cli.cli.eval import judge_overrides
from dpo_cli.cli.main import app
from dpo_cli.errors import DpoError

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def fake_run(tmp_path: Path) -> Path:
    """A run directory's layout (config + final/), enough for the checks that come before loading."""
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    shutil.copy(ROOT / "configs" / "smoke.yaml", run / "config.yaml")
    return run


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no such run directory or config file" in result.stderr and "Traceback" not in result.output


def test_directory_without_config_is_not_a_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory" in result.stderr


def test_run_without_final_weights(tmp_path: Path) -> None:
    run = fake_run(tmp_path)
    shutil.rmtree(run / "final")
    result = runner.invoke(app, ["eval", str(run)])
    assert result.exit_code == 2 and "did training finish" in result.stderr


def test_config_needs_model() -> None:
    result = runner.invoke(app, ["eval", str(ROOT / "configs" / "smoke.yaml")])
    assert result.exit_code == 2 and "--model" in result.stderr


def test_bad_judge_spec() -> None:
    result = runner.invoke(app, ["eval", str(ROOT / "configs" / "smoke.yaml"), "--judge", "gpt4"])
    assert result.exit_code == 2 and "KIND:TARGET" in result.stderr


def test_judge_config_errors_name_the_key(tmp_path: Path) -> None:
    run = fake_run(tmp_path)
    result = runner.invoke(app, ["eval", str(run), "--set", "eval.judge.kind=endpoint", "--set", "eval.nm_prompts=3"])
    assert result.exit_code == 2
    assert "eval.judge" in result.stderr and "base_url" in result.stderr
    assert "eval.nm_prompts" in result.stderr and "num_prompts" in result.stderr


def test_earlier_report_is_kept_without_overwrite(tmp_path: Path) -> None:
    run = fake_run(tmp_path)
    (run / "eval").mkdir()
    (run / "eval" / "report.json").write_text("{}")
    result = runner.invoke(app, ["eval", str(run)])
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    assert (run / "eval" / "report.json").read_text() == "{}"


def test_dead_judge_endpoint_stops_before_any_work(tmp_path: Path) -> None:
    run = fake_run(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    result = runner.invoke(
        app,
        [
            "eval",
            str(run),
            "--judge",
            f"endpoint:http://127.0.0.1:{port}/v1",
            "--judge-model",
            "m",
            "--set",
            "eval.judge.max_retries=0",
        ],
    )
    assert result.exit_code == 1
    assert "unreachable" in result.stderr and "Traceback" not in result.output
    assert not (run / "eval").exists()


def test_model_with_several_runs_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path), str(tmp_path), "--model", str(tmp_path)])
    assert result.exit_code == 2 and "--model" in result.stderr


@pytest.mark.parametrize(
    ("judge", "model", "expected"),
    [
        (
            "endpoint:http://h:1/v1",
            "m",
            ["eval.judge.kind=endpoint", "eval.judge.base_url=http://h:1/v1", "eval.judge.model=m"],
        ),
        ("reward_model:/rm", None, ["eval.judge.kind=reward_model", "eval.judge.path=/rm"]),
        (None, None, []),
    ],
)
def test_judge_overrides(judge, model, expected) -> None:
    assert judge_overrides(judge, model) == expected


def test_judge_overrides_reject_unknown_kind() -> None:
    with pytest.raises(DpoError):
        judge_overrides("oracle:x", None)


def test_a_target_takes_typed_updates_over_the_runs_config(tmp_path: Path) -> None:
    """What `sweep-beta` passes (no `--set` text to parse again), after the command line's overrides."""
    from dpo_cli.evaluation.runner import resolve_target

    run = fake_run(tmp_path)
    target = resolve_target(
        run, model=None, overrides=["eval.num_prompts=3"], updates={"eval.preference": False, "eval.max_new_tokens": 7}
    )
    assert target.cfg.eval.preference is False and target.cfg.eval.max_new_tokens == 7
    assert target.cfg.eval.num_prompts == 3 and target.weights == run / "final"
    with pytest.raises(DpoError, match="config.yaml"):
        resolve_target(run, model=None, updates={"eval.preference": "sometimes"})
