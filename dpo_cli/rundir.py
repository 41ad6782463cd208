"""The run directory: what a run leaves behind, written so that nothing is lost.

Layout of `output_dir`:

    config.yaml          resolved config (after overrides)
    run.json             status, versions, timings; how the run ended and why
    metrics.jsonl        every logged step, appended as training goes
    checkpoints/         Trainer checkpoints; a `.complete` marker is written after each save
    final/               the trained adapter (LoRA/QLoRA) or model (full), with the tokenizer,
                         and a `.complete` marker once every file is written
    plots/*.png          loss, reward margins, reward accuracy, chosen vs rejected rewards
    summary.json         first/final loss, held-out reward accuracy, diagnosis

Files are written to a temporary name, fsynced and renamed, so a crash never leaves half a
file. `--overwrite` replaces only a folder that holds a dpo run, and removes only the names
above (`RUN_ENTRIES`): anything else in the folder makes it refuse.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.fsio import atomic_write_text, fsync_dir, is_out_of_space, read_json

COMPLETE_MARKER = ".complete"
# Written by the launcher before the ranks start (dpo_cli.train.launch); it is not an earlier run.
LAUNCH_DIR = "launch"
# Precomputed reference log-probs (dpo_cli.train.ref_cache), keyed by the token ids and the starting
# model's hash, so a file there is right for any run that finds it. They are written while the
# trainer is built, before the run directory is claimed: alone they are no earlier run, and
# `--overwrite` keeps them (the run replacing the old one reuses what matches, or has just written it).
REF_CACHE_DIR = "ref_logps"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
RUN_INFO = "run.json"
# Every name dpo writes at the top of a run directory (training, `dpo eval`, the launcher).
# `--overwrite` removes these and nothing else; a writer of a new top-level name adds it here.
RUN_ENTRIES = (
    "checkpoints",
    "final",
    "plots",
    "eval",
    "metrics.jsonl",
    "summary.json",
    "report.html",
    "data",  # what the data check dropped (dpo_cli.validation.DataCheck.save)
    REF_CACHE_DIR,  # precomputed reference log-probs, reused by --resume
    "tensorboard",  # training.report_to: tensorboard (dpo_cli.train.tracking.route_logs)
    "config.yaml",
    LAUNCH_DIR,
    RUN_INFO,  # last: a replacement cut short still leaves a folder that `--overwrite` recognises
)
# The lock holder's run directory, set by a launcher that holds the lock for its ranks.
LOCK_ENV = "DPO_RUN_LOCKED"
_TEMP_RE = re.compile(r"^\..+\.tmp$")  # atomic_write_text's temporary names, left by a kill


# --------------------------------------------------------------------------- the run directory


def holds_run(output_dir: Path) -> bool:
    """True when `output_dir` holds anything besides the launcher's files (and empty folders of a run's names)."""
    if not output_dir.is_dir():
        return False
    for child in output_dir.iterdir():
        if child.name == LAUNCH_DIR:
            continue
        # The Trainer makes `checkpoints/` as it is built; an empty one is no earlier run.
        if child.name in RUN_ENTRIES and child.is_dir() and not child.is_symlink() and not any(child.iterdir()):
            continue
        # Precomputed reference log-probs are a cache keyed by the data and the starting model, written
        # while the trainer is built (before the run directory is taken over): no earlier run either.
        if child.name == REF_CACHE_DIR and child.is_dir() and not child.is_symlink():
            continue
        return True
    return False


def is_dpo_run(output_dir: Path) -> bool:
    """True when `output_dir` has a `run.json` that dpo wrote (a JSON object with a status)."""
    try:
        info = read_json(output_dir / RUN_INFO)
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and "status" in info


def foreign_entries(output_dir: Path) -> list[str]:
    """Names in `output_dir` that no dpo run writes (sorted)."""
    return sorted(
        child.name for child in output_dir.iterdir() if child.name not in RUN_ENTRIES and not _TEMP_RE.match(child.name)
    )


def config_inputs(data: Any, config_path: str | Path | None = None, prefix: str = "") -> list[tuple[str, Path]]:
    """Every existing local path a config names, as `(dotted key, resolved path)`, plus the config file itself.

    Found by walking every value rather than listing keys, so an input added to the schema later
    (or a `training.*` key naming a file) is protected without anyone remembering to add it.
    `module.py:function` values (scorers) count by their file.
    """
    found: list[tuple[str, Path]] = []
    if config_path is not None:
        found.append(("the config file", Path(config_path).expanduser().resolve()))
    items: Iterable[tuple[str, Any]]
    if isinstance(data, dict):
        items = ((f"{prefix}{key}", value) for key, value in data.items())
    elif isinstance(data, (list, tuple)):
        items = ((f"{prefix.rstrip('.')}[{i}]", value) for i, value in enumerate(data))
    else:
        items = ()
    for key, value in items:
        if key == "output_dir":
            continue
        if isinstance(value, (dict, list, tuple)):
            found += config_inputs(value, None, f"{key}.")
        elif isinstance(value, str) and value.strip() and "\n" not in value and len(value) < 4096:
            for candidate in dict.fromkeys((value, value.rsplit(":", 1)[0])):
                path = Path(candidate).expanduser()
                try:
                    if path.exists():
                        found.append((key, path.resolve()))
                        break
                except OSError:
                    continue
    return found


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def refuse_foreign_overwrite(
    output_dir: Path, foreign: Iterable[str], inputs: Iterable[tuple[str, Path]], *, writer: str, kind: str
) -> None:
    """Refuse an `--overwrite` of `output_dir` that would delete more than the earlier `kind`'s own files.

    `foreign` are entry names `writer` (the command) does not write there; `inputs` the `(key, path)`
    of files the new one reads (`config_inputs`). `dpo train` and `dpo iterate` share this rule.

    Raises:
        DpoError: Listing each foreign entry and each input inside `output_dir`; nothing is deleted.
    """
    folder = output_dir.resolve()
    problems = [f"{name}: not a file {writer} writes" for name in foreign]
    problems += [
        f"{key}: {path} is inside the {kind} it would replace" for key, path in inputs if _inside(path, folder)
    ]
    if problems:
        raise DpoError(
            f"{output_dir}: --overwrite would delete files that are not the earlier {kind}'s own",
            exit_code=EXIT_USAGE,
            details=[*problems, "move them out of output_dir, or choose another output_dir"],
        )


def remove_entry(path: Path) -> None:
    """Delete a file, a link (not what it points to) or a folder tree."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def check_run_dir(
    output_dir: Path, *, overwrite: bool, resume: bool, protected: Iterable[tuple[str, Path]] = ()
) -> None:
    """Make sure a run may write into `output_dir`, without touching it.

    A non-empty directory belongs to an earlier run: it is refused unless the user asked to
    resume it or to overwrite it. `--overwrite` replaces only a dpo run, holding nothing but
    dpo's own files, and none of the run's inputs.

    Args:
        output_dir: The run directory.
        overwrite: `--overwrite` was given.
        resume: `--resume` was given.
        protected: `(key, path)` of every file the run reads (`config_inputs`); `--overwrite`
            refuses to delete any of them.

    Raises:
        DpoError: The directory holds an earlier run and neither flag was given, or both were;
            or `--overwrite` would delete something that is not the earlier run's own.
    """
    if overwrite and resume:
        raise DpoError("--overwrite and --resume contradict each other; pick one", exit_code=EXIT_USAGE)
    if output_dir.exists() and not output_dir.is_dir():
        raise DpoError(
            f"{output_dir}: exists and is not a directory",
            exit_code=EXIT_USAGE,
            details=["set output_dir to a folder (new or holding a dpo run)"],
        )
    if resume:
        if latest_checkpoint(output_dir) is None:
            raise DpoError(
                f"{output_dir}: no complete checkpoint to resume from",
                exit_code=EXIT_USAGE,
                details=["run without --resume to start over (add --overwrite to replace what is there)"],
            )
        return
    if not holds_run(output_dir):
        return
    if not overwrite:
        raise DpoError(
            f"{output_dir}: run directory is not empty (an earlier run is there)",
            exit_code=EXIT_USAGE,
            details=["pass --resume to continue it from its last checkpoint, or --overwrite to replace it"],
        )
    if not is_dpo_run(output_dir):
        names = [child.name for child in sorted(output_dir.iterdir())][:5]
        raise DpoError(
            f"{output_dir}: --overwrite replaces only a dpo run, and this folder has no dpo run.json",
            exit_code=EXIT_USAGE,
            details=[f"it holds: {', '.join(names)}", "choose another output_dir, or empty this one yourself"],
        )
    # The run's own config.yaml, read as the config, is rewritten from what was loaded at once.
    own_config = output_dir.resolve() / "config.yaml"
    inputs = [(key, path) for key, path in protected if not (key == "the config file" and path == own_config)]
    refuse_foreign_overwrite(output_dir, foreign_entries(output_dir), inputs, writer="dpo", kind="run")


def init_run_dir(
    output_dir: Path, *, overwrite: bool, resume: bool, protected: Iterable[tuple[str, Path]] = ()
) -> None:
    """Create the run directory, replacing an earlier run only when `overwrite` was asked for.

    Called once inputs have loaded, so that a typo in a model path neither leaves a half-made
    run directory behind nor destroys the run it was meant to replace.
    """
    check_run_dir(output_dir, overwrite=overwrite, resume=resume, protected=protected)
    if overwrite and output_dir.exists():
        # Other ranks may still be reading the launch files (the DeepSpeed JSON), so they stay.
        for name in RUN_ENTRIES:
            child = output_dir / name
            if name in (LAUNCH_DIR, REF_CACHE_DIR) or not (child.exists() or child.is_symlink()):
                continue
            remove_entry(child)
        for child in output_dir.iterdir():
            if _TEMP_RE.match(child.name) and child.is_file():
                child.unlink()
    output_dir.mkdir(parents=True, exist_ok=True)


def undo_start(output_dir: Path, *, created: bool) -> None:
    """After a start that failed before writing anything, remove the empty folders it made.

    Only empty folders are removed (`rmdir`), and `output_dir` only when this run created it:
    a folder that was there before, or that holds anything, stays as it was.
    """
    for folder in (checkpoints_dir(output_dir), *([output_dir] if created else [])):
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def run_lock(output_dir: Path, advice: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the run directory for the life of the block.

    Two `dpo train` processes writing one run directory (a second launch, a job re-queued while
    the first still saves) would corrupt it; the second is refused instead. The lock is named
    after the resolved path, so a symlink or a `..` path to the same folder finds it. The lock
    file sits beside the directory so that `--overwrite` does not delete it, and the OS drops
    the lock when the process dies, however it dies.

    A launcher that holds the lock for its ranks sets `DPO_RUN_LOCKED` to the resolved path; the
    rank that writes the directory then does not try to take it a second time. `advice` replaces
    the hint printed when the lock is taken (other writers than `dpo train` use it too).
    """
    import fcntl

    target = Path(output_dir).expanduser().resolve()
    if os.environ.get(LOCK_ENV) == str(target):
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
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
                details=[
                    *([f"it is the same folder as {target}"] if target != Path(output_dir).absolute() else []),
                    advice or "wait for it to finish, or stop it (it saves a checkpoint on SIGTERM) and pass --resume",
                ],
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


def write_run_info(output_dir: Path, info: dict[str, Any]) -> None:
    """Write `run.json`, even on a full disk where its temporary copy finds no room.

    Out of space, the file is rewritten in place: the blocks of the old copy are reused, so the
    run's record still says how it ended.
    """
    path = output_dir / RUN_INFO
    text = json.dumps(info, indent=2, sort_keys=True, default=str) + "\n"
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        if not is_out_of_space(exc, path) or not path.exists():
            raise
        with path.open("r+", encoding="utf-8") as handle:
            handle.write(text)
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())


def train_command(config_path: str | Path | None, overrides: Iterable[str], *flags: str) -> str:
    """The shell line that runs `dpo train` again with the same config and overrides, quoted."""
    argv = ["dpo", "train", str(config_path) if config_path else "CONFIG"]
    for override in overrides:
        argv += ["--set", override]
    return shlex.join([*argv, *flags])


# --------------------------------------------------------------------------- checkpoints


def checkpoints_dir(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


# What the model card writer (`dpo_cli.publish`) rewrites in final/ after the marker, for example
# when `dpo eval` adds its results: documents about the weights, not the weights.
REWRITTEN_DOCUMENTS = frozenset({"README.md", "plots"})


def mark_complete(folder: Path, **extra: Any) -> None:
    """Write `folder/.complete` once everything in it is on disk.

    Every file is fsynced first, so the marker never vouches for data still in the page cache.
    The marker lists each file with its size: `--resume` and `merge-adapter` compare them and
    find a file that was truncated or replaced after the save.
    """
    from dpo_cli.fsio import fsync_tree

    fsync_tree(folder)
    files = {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file()
        and path.name != COMPLETE_MARKER
        and not path.is_symlink()
        and path.relative_to(folder).parts[0] not in REWRITTEN_DOCUMENTS
    }
    atomic_write_text(folder / COMPLETE_MARKER, json.dumps({"files": files, **extra}, indent=1) + "\n")
    fsync_dir(folder.parent)


def unmark(folder: Path) -> None:
    """Remove `folder`'s marker (durably) before the folder is deleted or rewritten."""
    marker = folder / COMPLETE_MARKER
    if marker.exists():
        marker.unlink()
        fsync_dir(folder)


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file()


def all_checkpoints(output_dir: Path) -> list[Path]:
    """Every `checkpoint-N` folder, complete or not, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), child)
        for child in root.iterdir()
        if (m := CHECKPOINT_RE.match(child.name)) and child.is_dir()
    ]
    return [path for _, path in sorted(found)]


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """The checkpoints whose save finished (an interrupted save has no marker), oldest first."""
    return [path for path in all_checkpoints(output_dir) if is_complete(path)]


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint whose save finished."""
    done = complete_checkpoints(output_dir)
    return done[-1] if done else None


def checkpoint_step(checkpoint: Path) -> int:
    match = CHECKPOINT_RE.match(checkpoint.name)
    if not match:
        raise ValueError(f"not a checkpoint directory: {checkpoint}")
    return int(match.group(1))


# --------------------------------------------------------------------------- metrics

_reported: set[tuple[str, int]] = set()


def read_metrics(path: Path, *, warn: bool = True) -> list[dict[str, Any]]:
    """Records of `metrics.jsonl`.

    A line that is not a JSON object (a torn write after a kill, a stray edit) is skipped and,
    with `warn`, reported once as `warning: FILE:LINE: ...` on stderr; the records after it are kept.
    """
    if not path.exists():
        return []
    records = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                record, problem = None, f"not valid JSON ({exc.msg})"
            else:
                problem = "not a JSON object"
            if isinstance(record, dict):
                records.append(record)
                continue
            key = (str(path.resolve()), number)
            if warn and key not in _reported:
                _reported.add(key)
                print(f"warning: {path}:{number}: unreadable metrics record skipped: {problem}", file=sys.stderr)
    return records


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only records up to `last_step`, so that a resumed run appends without duplicates."""
    # The interrupted segment's end-of-training record (train_runtime, ...) goes too: the resumed run writes its own.
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= last_step and "train_runtime" not in r]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def ends_with_newline(path: Path) -> bool:
    """False when the file's last line was cut off (a kill mid-append)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return True
    if size == 0:
        return True
    with path.open("rb") as handle:
        handle.seek(size - 1)
        return handle.read(1) == b"\n"


def run_status(run_dir: Path) -> str:
    """Where a run directory stands, for callers that train many runs (sweep points, iterate rounds).

    `completed`, `resumable` (a complete checkpoint exists), `partial` (an earlier run, no usable
    checkpoint) or `new`.
    """
    info = run_dir / RUN_INFO
    if info.exists() and read_json(info).get("status") == "completed" and (run_dir / "summary.json").exists():
        return "completed"
    if latest_checkpoint(run_dir) is not None:
        return "resumable"
    return "partial" if holds_run(run_dir) else "new"
