"""Runs that survive interruption: SIGTERM saves and exits 130, kill -9 loses only the last steps,
and `--resume` ends exactly where an uninterrupted run ends, with one metrics record per step."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpo_cli.rundir import COMPLETE_MARKER, checkpoint_step, latest_checkpoint, read_metrics
from tests.conftest import ROOT, output, run_logged, smoke_overrides, spawn

pytestmark = pytest.mark.integration

SMOKE = ROOT / "configs" / "smoke.yaml"
STEPS = 24
# Far above a healthy run here (about 30 s); only a hung process gets near it.
LIMIT_S = 300


def argv(tiny_model_dir: Path, out: Path, *flags: str) -> list[str]:
    overrides = smoke_overrides(
        tiny_model_dir,
        out,
        f"training.max_steps={STEPS}",
        "training.logging_steps=1",
        "training.save_steps=5",
        "training.per_device_train_batch_size=4",
        "data.max_eval_samples=16",
    )
    cmd = [sys.executable, "-m", "dpo_cli", "train", str(SMOKE), "--skip-validation", *flags]
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def train_steps(out: Path) -> list[dict]:
    return [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r and "train_runtime" not in r]


def start_and_stop(cmd: list[str], out: Path, after_step: int, sig: int, *, when=None) -> subprocess.Popen:
    """Start `dpo train`, wait until it has logged `after_step` (and `when()` holds), then send `sig`."""
    process = spawn(cmd, out.parent, f"{out.name}-first", cwd=ROOT, env=env())
    deadline = time.monotonic() + LIMIT_S
    while time.monotonic() < deadline and process.poll() is None:
        logged = train_steps(out) if (out / "metrics.jsonl").exists() else []
        if logged and logged[-1]["step"] >= after_step and (when is None or when()):
            process.send_signal(sig)
            break
        time.sleep(0.05)
    return process


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "straight"
    done = run_logged(argv(tiny_model_dir, out), out.parent, f"{out.name}-train", cwd=ROOT, env=env(), timeout=LIMIT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def assert_same_run(resumed: Path, straight: Path) -> None:
    got, want = train_steps(resumed), train_steps(straight)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))  # no gap, no duplicate
    # Same data order and optimizer state after the restart: the losses follow the same path.
    for a, b in zip(got, want, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-4, (a["step"], a["loss"], b["loss"])
    assert sum("train_runtime" in r for r in read_metrics(resumed / "metrics.jsonl")) == 1
    assert json.loads((resumed / "run.json").read_text())["status"] == "completed"


def test_sigterm_saves_a_checkpoint_and_resume_finishes_the_run(
    tiny_model_dir: Path, tmp_path: Path, uninterrupted
) -> None:
    out = tmp_path / "run"
    process = start_and_stop(argv(tiny_model_dir, out), out, after_step=3, sig=signal.SIGTERM)
    process.wait(timeout=LIMIT_S)
    stderr = output(process)[1]
    assert process.returncode == 130, stderr[-3000:]
    assert "interrupted at step" in stderr
    assert "resume with: dpo train" in stderr and "--resume" in stderr
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    checkpoint = latest_checkpoint(out)
    assert checkpoint is not None and (checkpoint / COMPLETE_MARKER).is_file()
    stopped_at = checkpoint_step(checkpoint)
    assert 3 <= stopped_at < STEPS  # the signal's step, not a save_steps multiple
    assert train_steps(out)[-1]["step"] == stopped_at
    assert not (out / "final").exists()

    done = run_logged(
        argv(tiny_model_dir, out, "--resume"), out.parent, f"{out.name}-resume", cwd=ROOT, env=env(), timeout=LIMIT_S
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["resumed_from"].endswith(f"checkpoint-{stopped_at}")
    assert_same_run(out, uninterrupted)
    assert (out / "final" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_kill_9_falls_back_to_the_last_complete_checkpoint(tiny_model_dir: Path, tmp_path: Path, uninterrupted) -> None:
    out = tmp_path / "run"
    first_done = out / "checkpoints" / "checkpoint-5" / COMPLETE_MARKER
    process = start_and_stop(argv(tiny_model_dir, out), out, after_step=6, sig=signal.SIGKILL, when=first_done.exists)
    process.wait(timeout=LIMIT_S)
    assert process.returncode == -signal.SIGKILL
    good = latest_checkpoint(out)
    assert good is not None
    # A save cut off by the kill: files there, no marker. It must never be resumed from.
    torn = out / "checkpoints" / f"checkpoint-{checkpoint_step(good) + 1}"
    if not torn.exists():
        shutil.copytree(good, torn)
        (torn / COMPLETE_MARKER).unlink()
        (torn / "adapter_model.safetensors").write_bytes(b"\0" * 10)
    assert latest_checkpoint(out) == good

    done = run_logged(
        argv(tiny_model_dir, out, "--resume"), out.parent, f"{out.name}-resume", cwd=ROOT, env=env(), timeout=LIMIT_S
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["resumed_from"] == str(good)
    assert_same_run(out, uninterrupted)
