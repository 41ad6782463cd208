"""Shared pieces of the fault suite: one short run on the tiny model, its uninterrupted twin, fault hooks.

Every fault case trains (or resumes) the same 6-step LoRA run, saving every 2 steps, and checks
the outcome against one uninterrupted run: the same losses step by step and the same final
adapter, or a refusal that changed nothing.

Faults that must kill a process at an exact point of a save run `dpo train` in a child whose
`sitecustomize.py` (see `hooks`) patches that point; faults that raise run in this process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from dpo_cli.config.loader import load_config
from dpo_cli.rundir import read_metrics
from tests.conftest import ROOT, smoke_overrides

SMOKE = ROOT / "configs" / "smoke.yaml"
STEPS = 6
# A healthy child run takes about 25 s here; only a hung one gets near this.
LIMIT_S = 300


def fault_overrides(tiny_model_dir: Path, out: Path, *extra: str) -> list[str]:
    return smoke_overrides(
        tiny_model_dir,
        out,
        f"training.max_steps={STEPS}",
        "training.logging_steps=1",
        "training.save_steps=2",
        "training.save_total_limit=1",
        "training.per_device_train_batch_size=4",
        "data.max_eval_samples=8",
        *extra,
    )


def config(tiny_model_dir: Path, out: Path, *extra: str):
    return load_config(SMOKE, fault_overrides(tiny_model_dir, out, *extra))


def cli_args(tiny_model_dir: Path, out: Path, *flags: str) -> list[str]:
    """`dpo train` arguments (after the program name) for the fault run."""
    args = ["train", str(SMOKE), "--skip-validation", *flags]
    for item in fault_overrides(tiny_model_dir, out):
        args += ["--set", item]
    return args


def train_steps(out: Path) -> list[dict]:
    return [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r and "train_runtime" not in r]


def adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "final" / "adapter_model.safetensors"))


@pytest.fixture(scope="session")
def reference_run(tiny_model_dir: Path, tmp_path_factory) -> Path:
    """The fault run trained once without any fault."""
    from dpo_cli.train.run import train

    out = tmp_path_factory.mktemp("faults") / "reference"
    train(config(tiny_model_dir, out))
    return out


def assert_same_run(out: Path, reference: Path) -> None:
    """`out` ended as the uninterrupted run did: every step once, the same losses, the same adapter."""
    import torch

    got, want = train_steps(out), train_steps(reference)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    for a, b in zip(got, want, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-4, (a["step"], a["loss"], b["loss"])
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    mine, theirs = adapter(out), adapter(reference)
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert torch.allclose(mine[name], theirs[name], atol=1e-6), name


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: what "the run was not touched" means."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hooks(tmp_path: Path, code: str) -> dict[str, str]:
    """Environment for a child whose interpreter first runs `code` (a sitecustomize.py)."""
    folder = tmp_path / "hooks"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(textwrap.dedent(code))
    path = os.pathsep.join(filter(None, [str(folder), str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def run_child(args: list[str], env: dict[str, str], log: Path) -> subprocess.CompletedProcess:
    """`python -m dpo_cli ARGS` with its output in `log` (never an unread pipe)."""
    with log.open("w") as handle:
        return subprocess.run(
            [sys.executable, "-m", "dpo_cli", *args],
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=LIMIT_S,
            check=False,
        )


@pytest.fixture()
def signal_guard() -> Iterator[None]:
    """Make a stray SIGINT/SIGTERM fail the test instead of stopping (or killing) the whole session.

    The run under test installs its own handlers over these and restores them after; a signal
    that reaches these means the run did not handle it.
    """

    def unhandled(signum, frame):
        raise AssertionError(f"{signal.Signals(signum).name} reached the test: the run did not handle it")

    previous = {sig: signal.signal(sig, unhandled) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs, to be filled on purpose; skipped where this machine does not allow mounting."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()[:200]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
