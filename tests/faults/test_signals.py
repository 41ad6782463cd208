"""SIGTERM and SIGINT from model loading to the final save: one policy, a true run.json, an exact resume.

Signals are sent by the process to itself at the exact point under test (a patched function),
so the cases do not depend on timing. `signal_guard` turns a signal the run failed to handle
into a test failure instead of a dead test session.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from dpo_cli.errors import EXIT_INTERRUPTED, DpoError
from dpo_cli.rundir import check_run_dir
from tests.faults.conftest import assert_same_run, config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("signal_guard")]


def test_sigterm_while_the_model_loads_leaves_nothing_behind(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Before the fix: killed with no message, and an output_dir that both a rerun and --resume refused."""
    import dpo_cli.models
    from dpo_cli.train.run import train

    original = dpo_cli.models.load_policy

    def load_policy(cfg):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(cfg)

    monkeypatch.setattr(dpo_cli.models, "load_policy", load_policy)
    out = tmp_path / "run"
    with pytest.raises(DpoError) as info:
        train(config(tiny_model_dir, out))
    assert info.value.exit_code == EXIT_INTERRUPTED
    assert (
        info.value.message == "interrupted before training started; nothing was written, so there is nothing to resume"
    )
    assert not out.exists()
    check_run_dir(out, overwrite=False, resume=False)  # the same command may simply run again


def test_a_second_ctrl_c_during_the_save_says_what_was_kept(
    tiny_model_dir: Path, tmp_path: Path, reference_run: Path, monkeypatch
) -> None:
    """Before the fix: exit 130 with no marker and run.json still "running"."""
    import transformers.trainer

    from dpo_cli.interrupts import RunSignals
    from dpo_cli.train.callbacks import GracefulStop
    from dpo_cli.train.run import train

    original_step_end = GracefulStop.on_step_end
    original_save = transformers.trainer.Trainer._save_optimizer_and_scheduler

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3 and self.received is None:
            os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: finish the step, save, stop
        return original_step_end(self, args, state, control, **kwargs)

    def save(self, output_dir):
        if RunSignals.active().count == 1:
            os.kill(os.getpid(), signal.SIGINT)  # the second, in the middle of that save
        return original_save(self, output_dir)

    monkeypatch.setattr(GracefulStop, "on_step_end", on_step_end)
    monkeypatch.setattr(transformers.trainer.Trainer, "_save_optimizer_and_scheduler", save)
    out = tmp_path / "run"
    with pytest.raises(DpoError) as info:
        train(config(tiny_model_dir, out))
    kept = out / "checkpoints" / "checkpoint-2"
    assert info.value.exit_code == EXIT_INTERRUPTED
    assert info.value.message == f"interrupted again at step 3 while saving; kept {kept} (complete)"
    assert info.value.details[0] == "the save of checkpoint-3 was cut short; --resume ignores it"
    assert info.value.details[-1].startswith("resume with: dpo train") and info.value.details[-1].endswith("--resume")
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "interrupted" and record["checkpoint"] == str(kept)

    monkeypatch.undo()
    train(config(tiny_model_dir, out), resume=True)
    assert_same_run(out, reference_run)


@pytest.mark.slow
def test_a_signal_during_the_final_save_keeps_the_last_checkpoint(
    tiny_model_dir: Path, tmp_path: Path, reference_run: Path, monkeypatch
) -> None:
    from dpo_cli import rundir
    from dpo_cli.train.run import train

    original = rundir.mark_complete

    def mark_complete(folder, **extra):
        if folder.name == "final":
            os.kill(os.getpid(), signal.SIGTERM)
        return original(folder, **extra)

    monkeypatch.setattr(rundir, "mark_complete", mark_complete)
    monkeypatch.setattr("dpo_cli.train.run.mark_complete", mark_complete)
    out = tmp_path / "run"
    with pytest.raises(DpoError) as info:
        train(config(tiny_model_dir, out))
    assert info.value.exit_code == EXIT_INTERRUPTED
    assert "final/ was not finished; --resume writes it again" in info.value.details
    assert not (out / "final" / ".complete").exists()
    assert json.loads((out / "run.json").read_text())["checkpoint"] == str(out / "checkpoints" / "checkpoint-6")

    monkeypatch.undo()
    train(config(tiny_model_dir, out), resume=True)
    assert_same_run(out, reference_run)
    assert (out / "final" / ".complete").is_file()
