"""Checkpoints that can be trusted: rotation after the marker, verification before a resume.

The Trainer's own `save_total_limit` rotation runs inside its save, before dpo's `.complete`
marker is written: with a limit of 1, a kill between the two leaves no complete checkpoint.
dpo therefore turns the Trainer's rotation off and rotates here, after the newer checkpoint is
marked, so the last complete checkpoint is never removed before a newer one is complete.

`--resume` verifies the newest complete checkpoint before loading anything and falls back to
the previous complete one when it is unreadable. The checks are the ones that cost no more
than reading small files:

- the marker's file list (sizes recorded after fsync) against the files there now;
- `trainer_state.json` parses and names the checkpoint's step;
- every safetensors file's header parses and its tensors end exactly at the end of the file;
- every torch pickle (`optimizer.pt`, `scheduler.pt`, `rng_state.pth`, DeepSpeed's shards) is a
  readable zip archive, and under 64 MiB every member's CRC is checked;
- the weights, and unless `save_only_model` the optimizer and scheduler states, are there
  (the Trainer silently starts a fresh optimizer when `optimizer.pt` is missing).
"""

from __future__ import annotations

import json
import shutil
import struct
import zipfile
from pathlib import Path

from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.fsio import fsync_dir
from dpo_cli.rundir import (
    COMPLETE_MARKER,
    all_checkpoints,
    checkpoint_step,
    checkpoints_dir,
    complete_checkpoints,
    is_complete,
    unmark,
)

# Pickles up to this size are read whole to check every member's CRC.
CRC_CHECK_BYTES = 64 << 20
WEIGHT_FILES = (
    "adapter_model.safetensors",
    "adapter_model.bin",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
UNUSABLE_PREFIX = "unusable-"


def safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a whole safetensors file, or None (reads only the header)."""
    size = path.stat().st_size
    if size < 8:
        return f"{path.name}: truncated ({size} bytes)"
    with path.open("rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        if header_len > min(size - 8, 100 << 20):
            return f"{path.name}: unreadable header (length {header_len}, file {size} bytes)"
        try:
            header = json.loads(handle.read(header_len))
        except (ValueError, UnicodeDecodeError):
            return f"{path.name}: unreadable header"
    if not isinstance(header, dict):
        return f"{path.name}: unreadable header"
    ends = [
        entry["data_offsets"][1]
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and len(entry.get("data_offsets") or []) == 2
    ]
    expected = 8 + header_len + max(ends, default=0)
    if expected != size:
        return (
            f"{path.name}: truncated ({size} of {expected} bytes)"
            if size < expected
            else (f"{path.name}: {size - expected} bytes past the last tensor")
        )
    return None


def pickle_problem(path: Path) -> str | None:
    """Why `path` is not a whole torch.save archive, or None (torch writes zip archives since 1.6)."""
    size = path.stat().st_size
    if size == 0:
        return f"{path.name}: empty"
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if any(m.header_offset + m.compress_size > size for m in members):
                return f"{path.name}: truncated"
            if size <= CRC_CHECK_BYTES:
                bad = archive.testzip()
                if bad is not None:
                    return f"{path.name}: corrupt ({bad} fails its checksum)"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f"{path.name}: not a readable torch file ({exc})"
    return None


def _manifest_problems(checkpoint: Path) -> dict[str, str]:
    """`{relative path: problem}` for the files the marker lists that are missing or changed size."""
    try:
        text = (checkpoint / COMPLETE_MARKER).read_text(encoding="utf-8")
    except OSError as exc:
        return {COMPLETE_MARKER: f"{COMPLETE_MARKER}: unreadable ({exc})"}
    if not text.strip():
        return {}  # a marker from before dpo recorded the files: the format checks still run
    try:
        files = json.loads(text).get("files") or {}
    except (ValueError, AttributeError):
        return {COMPLETE_MARKER: f"{COMPLETE_MARKER}: unreadable"}
    problems = {}
    for name, size in files.items():
        path = checkpoint / name
        if not path.is_file():
            problems[name] = f"{name}: missing"
        elif path.stat().st_size != size:
            problems[name] = f"{name}: {path.stat().st_size} bytes, {size} when it was saved"
    return problems


def folder_problems(folder: Path) -> list[str]:
    """Files in `folder` (recursively) that are not whole: the marker's list, safetensors, pickles, JSON."""
    listed = _manifest_problems(folder) if is_complete(folder) else {}
    problems = list(listed.values())
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name == COMPLETE_MARKER or str(path.relative_to(folder)) in listed:
            continue
        try:
            if path.suffix == ".safetensors":
                problem = safetensors_problem(path)
            elif path.suffix in PICKLE_SUFFIXES:
                problem = pickle_problem(path)
            elif path.suffix == ".json" and path.stat().st_size <= CRC_CHECK_BYTES:
                json.loads(path.read_text(encoding="utf-8"))
                problem = None
            else:
                problem = None
        except (ValueError, UnicodeDecodeError):
            problem = f"{path.name}: not valid JSON"
        except OSError as exc:
            problem = f"{path.name}: unreadable ({exc.strerror or exc})"
        if problem:
            rel = path.relative_to(folder)
            problems.append(problem if rel.name == str(rel) else f"{rel.parent}/{problem}")
    return list(dict.fromkeys(problems))


def checkpoint_problems(checkpoint: Path, *, needs_optimizer: bool = True) -> list[str]:
    """Why `checkpoint` cannot be resumed from (empty when it can)."""
    problems = folder_problems(checkpoint)
    state_path = checkpoint / "trainer_state.json"
    if not state_path.is_file():
        problems.append("trainer_state.json: missing")
    else:
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            state = None  # reported by folder_problems
        if isinstance(state, dict) and state.get("global_step") != checkpoint_step(checkpoint):
            problems.append(f"trainer_state.json: step {state.get('global_step')!r}, not {checkpoint_step(checkpoint)}")
        elif state is not None and not isinstance(state, dict):
            problems.append("trainer_state.json: not a JSON object")
    deepspeed = (checkpoint / "latest").is_file()
    if deepspeed:
        tag = (checkpoint / "latest").read_text(encoding="utf-8").strip()
        if not tag or not (checkpoint / tag).is_dir():
            problems.append(f"latest: names {tag!r}, which is not there")
    elif not any((checkpoint / name).is_file() for name in WEIGHT_FILES):
        problems.append("no model or adapter weights")
    if needs_optimizer and not deepspeed:
        problems += [
            f"{name}: missing" for name in ("optimizer.pt", "scheduler.pt") if not (checkpoint / name).is_file()
        ]
    return list(dict.fromkeys(problems))


def choose_resume_checkpoint(output_dir: Path, *, needs_optimizer: bool = True) -> tuple[Path, list[str]]:
    """The newest complete checkpoint that verifies, and one warning per newer one that did not.

    Raises:
        DpoError: There is no complete checkpoint, or none of them verifies.
    """
    candidates = complete_checkpoints(output_dir)
    if not candidates:
        raise DpoError(
            f"{output_dir}: no complete checkpoint to resume from",
            exit_code=EXIT_USAGE,
            details=["run without --resume to start over (add --overwrite to replace what is there)"],
        )
    rejected: list[tuple[Path, list[str]]] = []
    for checkpoint in reversed(candidates):
        problems = checkpoint_problems(checkpoint, needs_optimizer=needs_optimizer)
        if not problems:
            warnings = [
                f"{bad.name} is unusable ({'; '.join(why[:3])}); resuming from {checkpoint.name} instead"
                for bad, why in rejected
            ]
            return checkpoint, warnings
        rejected.append((checkpoint, problems))
    raise DpoError(
        f"{output_dir}: no usable checkpoint to resume from (every complete one fails its check)",
        exit_code=EXIT_USAGE,
        details=[
            *(f"{bad.name}: {'; '.join(why[:3])}" for bad, why in rejected),
            "nothing was changed; start over with --overwrite, or restore a checkpoint from a backup",
        ],
    )


def set_aside_after(output_dir: Path, resume_from: Path) -> list[str]:
    """Clear the checkpoints newer than `resume_from` before the resumed run saves its own.

    They belong to the timeline being abandoned, and the resumed run will save the same step
    numbers again: writing into an old, still-marked folder would leave a marker that vouches
    for a mix of two saves. Torn saves (no marker) are removed; complete ones that failed their
    check are renamed `unusable-checkpoint-N`, kept for inspection. Returns one line per action.
    """
    step = checkpoint_step(resume_from)
    notes = []
    for checkpoint in all_checkpoints(output_dir):
        if checkpoint_step(checkpoint) <= step:
            continue
        if is_complete(checkpoint):
            target = checkpoint.with_name(f"{UNUSABLE_PREFIX}{checkpoint.name}")
            if target.exists():
                shutil.rmtree(target)
            unmark(checkpoint)
            checkpoint.rename(target)
            notes.append(f"{checkpoint.name} moved aside to {target} (delete it once you no longer need it)")
        else:
            shutil.rmtree(checkpoint)
            notes.append(f"{checkpoint.name} removed (a save cut off before it finished)")
    if notes:
        fsync_dir(checkpoints_dir(output_dir))
    return notes


def rotate(output_dir: Path, keep: int | None, protect: Path | None = None) -> None:
    """Keep the newest `keep` complete checkpoints (and `protect`, the best one), remove the rest.

    Runs after the newest checkpoint is marked complete, never before. Unmarked checkpoints
    older than the newest complete one are torn saves of an earlier kill and go too. A folder
    is unmarked (durably) before it is deleted, so a deletion cut short is never resumed from.
    """
    complete = complete_checkpoints(output_dir)
    if not complete:
        return
    newest = checkpoint_step(complete[-1])
    doomed = [c for c in all_checkpoints(output_dir) if not is_complete(c) and checkpoint_step(c) < newest]
    if keep is not None and keep > 0:
        protected = {complete[-1], *([Path(protect)] if protect else [])}
        doomed += [c for c in complete[:-keep] if c not in protected]
    for checkpoint in doomed:
        unmark(checkpoint)
        shutil.rmtree(checkpoint, ignore_errors=True)
    if doomed:
        fsync_dir(checkpoints_dir(output_dir))


def discard_incomplete(output_dir: Path, step: int) -> Path | None:
    """Remove the unmarked `checkpoint-<step>` (a save that failed); returns it if there was one."""
    checkpoint = checkpoints_dir(output_dir) / f"checkpoint-{step}"
    if checkpoint.is_dir() and not is_complete(checkpoint):
        shutil.rmtree(checkpoint, ignore_errors=True)
        return checkpoint
    return None


def saving_checkpoint(output_dir: Path, step: int) -> Path | None:
    """`checkpoint-<step>` when its save started and did not finish."""
    checkpoint = checkpoints_dir(output_dir) / f"checkpoint-{step}"
    return checkpoint if checkpoint.is_dir() and not is_complete(checkpoint) else None
