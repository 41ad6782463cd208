"""The run directory: what a run leaves behind, written so that nothing is lost.

Layout of `output_dir`:

    config.yaml          resolved config (after overrides)
    run.json             status, versions, timings
    metrics.jsonl        every logged step, appended as training goes
    checkpoints/         Trainer checkpoints; a `.complete` marker is written after each save
    final/               the trained adapter (LoRA/QLoRA) or model (full), with the tokenizer
    plots/*.png          loss, reward margins, reward accuracy, chosen vs rejected rewards
    summary.json         first/final loss, held-out reward accuracy, diagnosis

Files are written to a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from dpo_cli.errors import EXIT_USAGE, DpoError

COMPLETE_MARKER = ".complete"
_UMASK = os.umask(0)
os.umask(_UMASK)
# Written by the launcher before the ranks start (dpo_cli.launch); it is not an earlier run.
LAUNCH_DIR = "launch"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; run files are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def check_run_dir(output_dir: Path, *, overwrite: bool, resume: bool) -> None:
    """Make sure a run may write into `output_dir`, without touching it.

    A non-empty directory belongs to an earlier run: it is refused unless the user asked to
    resume it or to overwrite it.

    Raises:
        DpoError: The directory holds an earlier run and neither flag was given, or both were.
    """
    if overwrite and resume:
        raise DpoError("--overwrite and --resume contradict each other; pick one", exit_code=EXIT_USAGE)
    exists = holds_run(output_dir)
    if resume:
        if latest_checkpoint(output_dir) is None:
            raise DpoError(
                f"{output_dir}: no complete checkpoint to resume from",
                exit_code=EXIT_USAGE,
                details=["run without --resume to start over (add --overwrite to replace what is there)"],
            )
        return
    if exists and not overwrite:
        raise DpoError(
            f"{output_dir}: run directory is not empty (an earlier run is there)",
            exit_code=EXIT_USAGE,
            details=["pass --resume to continue it from its last checkpoint, or --overwrite to replace it"],
        )


def holds_run(output_dir: Path) -> bool:
    """True when `output_dir` holds anything besides the launcher's files."""
    return output_dir.is_dir() and any(child.name != LAUNCH_DIR for child in output_dir.iterdir())


def init_run_dir(output_dir: Path, *, overwrite: bool, resume: bool) -> None:
    """Create the run directory, replacing an earlier run only when `overwrite` was asked for.

    Called once inputs have loaded, so that a typo in a model path does not leave a
    half-made run directory behind that the next attempt would refuse.
    """
    check_run_dir(output_dir, overwrite=overwrite, resume=resume)
    if overwrite and output_dir.exists():
        # Other ranks may still be reading the launch files (the DeepSpeed JSON), so they stay.
        for child in output_dir.iterdir():
            if child.name == LAUNCH_DIR:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    output_dir.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def run_lock(output_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run directory for the life of the block.

    Two `dpo train` processes writing one run directory (a second launch, a job re-queued while
    the first still saves) would corrupt it; the second is refused instead. The lock file sits
    beside the directory so that `--overwrite` does not delete it, and the OS drops the lock
    when the process dies, however it dies.
    """
    import fcntl

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = output_dir.parent / f".{output_dir.name}.lock"
    handle = lock_path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise DpoError(
                f"{output_dir}: in use by another dpo process ({owner})",
                exit_code=EXIT_USAGE,
                details=["wait for it to finish, or stop it (it saves a checkpoint on SIGTERM) and pass --resume"],
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


def checkpoints_dir(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def mark_complete(checkpoint: Path) -> None:
    atomic_write_text(checkpoint / COMPLETE_MARKER, "")


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint whose save finished (an interrupted save has no marker)."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return None
    done = [
        (int(match.group(1)), child)
        for child in root.iterdir()
        if (match := CHECKPOINT_RE.match(child.name)) and (child / COMPLETE_MARKER).exists()
    ]
    return max(done)[1] if done else None


def checkpoint_step(checkpoint: Path) -> int:
    match = CHECKPOINT_RE.match(checkpoint.name)
    if not match:
        raise ValueError(f"not a checkpoint directory: {checkpoint}")
    return int(match.group(1))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of `metrics.jsonl`; a torn last line (killed mid-write) is ignored."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only records up to `last_step`, so that a resumed run appends without duplicates."""
    # The interrupted segment's end-of-training record (train_runtime, ...) goes too: the resumed run writes its own.
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= last_step and "train_runtime" not in r]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
