"""A disk that fills up during a checkpoint save: one clear message, a truthful run.json, and a resumable run.

Runs on a real 16 MiB tmpfs (skipped where this machine does not allow mounting). Before the
fix the run died with a raw SafetensorError/OSError/RuntimeError traceback and run.json stayed
"running".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dpo_cli.errors import DpoError
from dpo_cli.rundir import COMPLETE_MARKER, latest_checkpoint
from tests.faults.conftest import assert_same_run, config

pytestmark = pytest.mark.integration


def fill_at_step(monkeypatch, disk: Path, step: int, leave: int) -> Path:
    """Just before `step`'s save, fill `disk` until `leave` bytes are free."""
    from dpo_cli.train.callbacks import GracefulStop

    filler = disk / "filler"
    original = GracefulStop.on_step_end

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == step and not filler.exists():
            free = shutil.disk_usage(disk).free
            filler.write_bytes(b"\0" * max(0, free - leave))
        return original(self, args, state, control, **kwargs)

    monkeypatch.setattr(GracefulStop, "on_step_end", on_step_end)
    return filler


# How much room is left decides which file the save fails on: the adapter weights
# (safetensors' IoError), the tokenizer (tokenizers' bare Exception) or the optimizer state
# (torch's "unexpected pos").
@pytest.mark.parametrize(
    "leave", [30_000, pytest.param(110_000, marks=pytest.mark.slow), pytest.param(210_000, marks=pytest.mark.slow)]
)
def test_a_full_disk_during_a_save_is_one_message_and_the_run_resumes(
    leave: int, small_disk: Path, tiny_model_dir: Path, reference_run: Path, monkeypatch
) -> None:
    from dpo_cli.train.run import train

    out = small_disk / "run"
    filler = fill_at_step(monkeypatch, small_disk, 4, leave)
    with pytest.raises(DpoError) as info:
        train(config(tiny_model_dir, out))
    torn = out / "checkpoints" / "checkpoint-4"
    assert info.value.message == f"no space left on device while writing {torn} (checkpoint at step 4)"
    assert "the incomplete checkpoint-4 was removed to free its space" in info.value.details
    assert info.value.details[-1].startswith("free some space, then resume with: dpo train")
    info_json = json.loads((out / "run.json").read_text())
    assert info_json["status"] == "failed" and info_json["error"] == info.value.message
    assert not torn.exists()
    assert latest_checkpoint(out) == out / "checkpoints" / "checkpoint-2"
    assert (out / "checkpoints" / "checkpoint-2" / COMPLETE_MARKER).is_file()

    filler.unlink()  # the user frees space, then resumes as told
    monkeypatch.undo()
    train(config(tiny_model_dir, out), resume=True)
    assert_same_run(out, reference_run)
