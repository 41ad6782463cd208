"""kill -9 at each stage of a save, with `save_total_limit: 1`: there is always a checkpoint to resume from.

The child is killed during the save of checkpoint-4 (checkpoint-2 is complete): after the
weights, after the optimizer and RNG state, just before the `.complete` marker, and half-way
through the rotation that removes checkpoint-2. Before the fix, the Trainer's own rotation ran
before the marker, so the third stage left nothing to resume ("no complete checkpoint to
resume from", 3 times in 3). Each resume must end exactly as the uninterrupted run.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from dpo_cli.rundir import COMPLETE_MARKER, checkpoint_step, latest_checkpoint
from tests.faults.conftest import assert_same_run, cli_args, config, hooks, run_child

pytestmark = pytest.mark.integration

# Each stage's hook kills the process at one point of checkpoint-4's save.
KILL = "import os, signal\ndef die():\n    os.kill(os.getpid(), signal.SIGKILL)\n"
STAGES = {
    # After the adapter weights, before the optimizer state.
    "after_weights": KILL
    + """
import transformers.trainer as t
orig = t.Trainer._save_optimizer_and_scheduler
def save(self, output_dir):
    if output_dir.endswith("checkpoint-4"):
        die()
    return orig(self, output_dir)
t.Trainer._save_optimizer_and_scheduler = save
""",
    # Weights, optimizer, scheduler and RNG state written; trainer_state.json not yet.
    "before_trainer_state": KILL
    + """
import transformers.trainer_callback as tc
orig = tc.TrainerState.save_to_json
def save(self, path):
    if "checkpoint-4" in path:
        die()
    return orig(self, path)
tc.TrainerState.save_to_json = save
""",
    # Every file of the save written, the marker not yet: the window where the Trainer's
    # rotation used to have removed checkpoint-2 already.
    "before_marker": KILL
    + """
import dpo_cli.rundir as r
orig = r.atomic_write_text
def write(path, text):
    if path.name == r.COMPLETE_MARKER and path.parent.name == "checkpoint-4":
        die()
    return orig(path, text)
r.atomic_write_text = write
""",
    # checkpoint-4 marked; checkpoint-2 half deleted by the rotation.
    "mid_rotation": KILL
    + """
import shutil
orig = shutil.rmtree
def rmtree(path, *args, **kwargs):
    from pathlib import Path
    if Path(path).name == "checkpoint-2":
        (Path(path) / "adapter_model.safetensors").unlink()
        die()
    return orig(path, *args, **kwargs)
shutil.rmtree = rmtree
""",
}
FAST = {"before_marker"}


@pytest.mark.parametrize("stage", [s if s in FAST else pytest.param(s, marks=pytest.mark.slow) for s in STAGES])
def test_a_kill_at_any_stage_of_a_save_leaves_a_checkpoint_and_resume_is_exact(
    stage: str, tiny_model_dir: Path, tmp_path: Path, reference_run: Path
) -> None:
    from dpo_cli.train.run import train

    out = tmp_path / "run"
    killed = run_child(cli_args(tiny_model_dir, out), hooks(tmp_path, STAGES[stage]), tmp_path / "child.log")
    assert killed.returncode == -signal.SIGKILL, (tmp_path / "child.log").read_text()[-3000:]
    assert json.loads((out / "run.json").read_text())["status"] == "running"  # nothing could say otherwise

    kept = latest_checkpoint(out)
    assert kept is not None, "a kill during a save left no complete checkpoint"
    expected = 4 if stage == "mid_rotation" else 2
    assert checkpoint_step(kept) == expected
    if stage == "mid_rotation":
        # The half-deleted folder lost its marker first, so it is never resumed from.
        half = out / "checkpoints" / "checkpoint-2"
        assert not half.exists() or not (half / COMPLETE_MARKER).exists()

    result = train(config(tiny_model_dir, out), resume=True)
    assert json.loads((out / "run.json").read_text())["resumed_from"] == str(kept)
    assert_same_run(out, reference_run)
    assert [p.name for p in (out / "checkpoints").iterdir() if p.is_dir()] == ["checkpoint-6"]  # limit 1 again
    assert result.final_dir.is_dir()
