"""A corrupt newest checkpoint: `--resume` falls back to the previous complete one, or refuses without touching anything.

Before the fix each of these gave a traceback (or only "Aborted!" for an empty rng_state.pth)
and rewrote a completed run's run.json to "running".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dpo_cli.cli.main import app
from tests.faults.conftest import assert_same_run, cli_args, config, snapshot

pytestmark = pytest.mark.integration
runner = CliRunner()


def truncate(name: str, keep: int):
    def damage(checkpoint: Path) -> None:
        path = checkpoint / name
        path.write_bytes(path.read_bytes()[:keep])

    return damage


CORRUPTIONS = {
    "truncated_adapter": truncate("adapter_model.safetensors", 100),
    "truncated_optimizer": truncate("optimizer.pt", 4096),
    "empty_rng_state": truncate("rng_state.pth", 0),
    "invalid_trainer_state": lambda c: (c / "trainer_state.json").write_text('{"global_step": 6, "log_hist'),
    "missing_trainer_state": lambda c: (c / "trainer_state.json").unlink(),
}
FAST = {"truncated_adapter", "empty_rng_state"}


@pytest.fixture(scope="module")
def finished(tiny_model_dir: Path, tmp_path_factory) -> Path:
    """The fault run with every checkpoint kept (2, 4, 6), as `save_total_limit: null` leaves it."""
    from dpo_cli.train.run import train

    out = tmp_path_factory.mktemp("faults") / "finished"
    train(config(tiny_model_dir, out, "training.save_total_limit=null"))
    return out


def copy_of(run: Path, where: Path) -> Path:
    """A copy of the finished run, its config.yaml naming the copy as it would have been trained there."""
    out = where / "run"
    shutil.copytree(run, out)
    saved = out / "config.yaml"
    saved.write_text(saved.read_text().replace(str(run), str(out)))
    return out


def resume_args(tiny_model_dir: Path, run: Path) -> list[str]:
    return [*cli_args(tiny_model_dir, run, "--resume"), "--set", "training.save_total_limit=null"]


@pytest.mark.parametrize("damage", [d if d in FAST else pytest.param(d, marks=pytest.mark.slow) for d in CORRUPTIONS])
def test_resume_falls_back_to_the_previous_checkpoint_with_a_warning_naming_both(
    damage: str, finished: Path, tmp_path: Path, reference_run: Path, tiny_model_dir: Path
) -> None:
    out = copy_of(finished, tmp_path)
    CORRUPTIONS[damage](out / "checkpoints" / "checkpoint-6")
    result = runner.invoke(app, resume_args(tiny_model_dir, out))
    assert result.exit_code == 0, result.output[-3000:]
    assert "warning: checkpoint-6 is unusable (" in result.stderr
    assert "resuming from checkpoint-4 instead" in result.stderr
    assert "Traceback" not in result.output
    assert json.loads((out / "run.json").read_text())["resumed_from"] == str(out / "checkpoints" / "checkpoint-4")
    assert_same_run(out, reference_run)
    assert (out / "checkpoints" / "unusable-checkpoint-6").is_dir()  # kept for inspection, never resumed


def test_no_usable_checkpoint_is_a_clear_refusal_that_changes_nothing(
    finished: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    out = copy_of(finished, tmp_path)
    for step in (2, 4, 6):
        (out / "checkpoints" / f"checkpoint-{step}" / "optimizer.pt").write_bytes(b"")
    before = snapshot(out)
    result = runner.invoke(app, resume_args(tiny_model_dir, out))
    assert result.exit_code == 2, result.output[-3000:]
    assert result.stderr.startswith(f"error: {out}: no usable checkpoint to resume from")
    for step in (6, 4, 2):
        assert f"checkpoint-{step}: optimizer.pt: 0 bytes" in result.stderr
    assert "Traceback" not in result.output
    assert snapshot(out) == before  # run.json still "completed", metrics untouched
