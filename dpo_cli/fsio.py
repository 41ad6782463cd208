"""Durable writes and clear messages when a write fails.

A rename is atomic but not durable: after a power loss or a kernel crash the new name can
point at a file whose blocks never reached the disk. Whatever a later step trusts (a
checkpoint's `.complete` marker, `final/`'s marker, `run.json`) is therefore preceded by
`fsync` of the files it vouches for and followed by `fsync` of the directory that holds it.

A full disk surfaces in many shapes: `OSError(ENOSPC)` from Python, `SafetensorError` with
the OS message inside, torch's zip writer's `RuntimeError: ... file write failed` without any
errno. `WriteError` turns each of them into one message that names the path and what was
being written.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

from dpo_cli.errors import DpoError

OUT_OF_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_OUT_OF_SPACE_TEXT = ("no space left on device", "storagefull", "os error 28", "disk quota exceeded", "errno 28")
# torch's zip writer reports a short write as "[enforce fail at inline_container.cc] unexpected pos".
_WRITE_FAILURE_TEXT = (
    "file write failed", "failed writing", "error while serializing", "ioerror", "write error", "inline_container",
)
# Free space under which a write failure that carries no errno (torch's zip writer) is taken
# for a full disk: the failed write itself has usually consumed what was left.
NEARLY_FULL_BYTES = 64 << 20


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the names in `path` (renames, new files) durable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # a platform that cannot open directories has no directory fsync either
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):  # file systems without directory fsync
            raise
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then every directory, deepest first."""
    dirs = []
    for folder, _subdirs, files in os.walk(root):
        dirs.append(Path(folder))
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                fsync_file(path)
    for folder in reversed(dirs):
        fsync_dir(folder)


def nearly_full(path: Path) -> bool:
    """True when the file system holding `path` (or its nearest existing parent) is all but full."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return False
    return usage.free < min(NEARLY_FULL_BYTES, max(usage.total // 100, 1 << 20))


def is_write_failure(exc: BaseException) -> bool:
    """True for the shapes a failed write takes in Python, safetensors and torch."""
    if isinstance(exc, OSError):
        return True
    text = str(exc).lower()
    if any(t in text for t in _OUT_OF_SPACE_TEXT):  # e.g. the tokenizers library's bare `Exception`
        return True
    if type(exc).__name__ == "SafetensorError":
        return "serializ" in text or any(t in text for t in _OUT_OF_SPACE_TEXT)
    return isinstance(exc, RuntimeError) and any(t in text for t in (*_WRITE_FAILURE_TEXT, *_OUT_OF_SPACE_TEXT))


def is_out_of_space(exc: BaseException, path: Path | None = None) -> bool:
    """True when `exc` (a write failure) means the disk or the quota is full."""
    if isinstance(exc, OSError) and exc.errno in OUT_OF_SPACE_ERRNOS:
        return True
    text = str(exc).lower()
    if any(t in text for t in _OUT_OF_SPACE_TEXT):
        return True
    return path is not None and not isinstance(exc, OSError) and is_write_failure(exc) and nearly_full(path)


class WriteError(DpoError):
    """Writing one of the run's files failed: the disk is full, over quota, read-only or failing.

    Args:
        path: The file or directory being written.
        what: What it is, in the user's words (`checkpoint at step 40`, `metrics record`).
        cause: The library's own exception.
    """

    def __init__(self, path: Path | str, what: str, cause: BaseException):
        self.path = Path(path)
        self.what = what
        self.cause = cause
        self.out_of_space = is_out_of_space(cause, self.path)
        if self.out_of_space:
            reason = "no space left on device"
        else:
            strerror = getattr(cause, "strerror", None) or str(cause).strip().splitlines()[0][:200] or type(cause).__name__
            reason = f"could not write ({strerror})"
        super().__init__(f"{reason} while writing {self.path} ({what})")


def as_write_error(exc: BaseException, path: Path | str, what: str) -> WriteError | None:
    """`exc` as a `WriteError` about `path`, or None when it is not a failed write."""
    if isinstance(exc, WriteError):
        return exc
    if not is_write_failure(exc):
        return None
    filename = getattr(exc, "filename", None)
    return WriteError(filename or path, what, exc)


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to a JSON Lines file and fsync it: a batch written is a batch kept."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        handle.flush()
        os.fsync(handle.fileno())
