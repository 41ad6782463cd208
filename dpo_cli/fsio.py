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
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpo_cli.errors import EXIT_USAGE, DpoError

OUT_OF_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_OUT_OF_SPACE_TEXT = ("no space left on device", "storagefull", "os error 28", "disk quota exceeded", "errno 28")
# torch's zip writer reports a short write as "[enforce fail at inline_container.cc] unexpected pos".
_WRITE_FAILURE_TEXT = (
    "file write failed",
    "failed writing",
    "error while serializing",
    "ioerror",
    "write error",
    "inline_container",
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
            strerror = (
                getattr(cause, "strerror", None) or str(cause).strip().splitlines()[0][:200] or type(cause).__name__
            )
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        handle.flush()
        os.fsync(handle.fileno())


# --------------------------------------------------------------------------- atomic files

# The process's umask, read once (reading it means setting it): new files get the modes any
# other file made here would get, instead of mkstemp's and mkdtemp's owner-only 0600 / 0700.
UMASK = os.umask(0)
os.umask(UMASK)


def shared_mode(path: Path) -> None:
    """Give `path` the mode a plain `open()` or `mkdir()` would have (0644 / 0755 under umask 022)."""
    path.chmod((0o777 if path.is_dir() else 0o666) & ~UMASK)


def atomic_save(path: Path, write: Callable[[Path], None], *, suffix: str | None = None) -> None:
    """Write `path` through `write(temporary path)` in the same folder, then rename it into place.

    For writers that take a file name (`savefig`, `np.savez`). The temporary file keeps the
    final name's suffix unless told otherwise (matplotlib picks the format from it); it gets the
    umask's mode, is fsynced before the rename and the folder after it, and is removed if
    `write` fails, so a reader sees the old file or the whole new one, never a part.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix if suffix is None else suffix
    )
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        shared_mode(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically and durably (see `atomic_save`); the temporary name ends in `.tmp`."""
    atomic_save(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), suffix=".tmp")


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def read_json_object(path: Path, *, what: str = "file") -> dict[str, Any]:
    """A JSON object from a file the user pointed at (a model's `config.json`, an adapter's config).

    Raises:
        DpoError: Exit code 2, naming the file: it is missing (as `what`), unreadable, not JSON
            (with the line), or not an object.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DpoError(f"{path}: {what} not found", exit_code=EXIT_USAGE) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DpoError(f"{path}: unreadable: {exc}", exit_code=EXIT_USAGE) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DpoError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}", exit_code=EXIT_USAGE) from None
    if not isinstance(data, dict):
        raise DpoError(f"{path}: expected a JSON object", exit_code=EXIT_USAGE)
    return data


# --------------------------------------------------------------------------- publishing a directory


def staging_dir(output: Path, tag: str = "") -> Path:
    """A new private folder beside `output` to build its replacement in (see `publish_dir`).

    Its name is `.NAME.<tag><random>`, so that leftovers of a stopped build can be recognised.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.{tag}"))


def publish_dir(staging: Path, output: Path) -> None:
    """Make the finished `staging` folder `output`, replacing an earlier one only at the last moment.

    Every file and folder gets the umask's mode first: mkdtemp makes the folder private and
    safetensors writes 0600 files, while a model directory is meant to be read by a serving
    process that may run as another user. An earlier `output` is moved aside and deleted only
    after the rename, so there is never a moment with no model at the path.
    """
    shared_mode(staging)
    for path in staging.rglob("*"):
        shared_mode(path)
    if output.exists():
        old = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.old-"))
        os.replace(output, old / output.name)
        os.replace(staging, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, output)
    fsync_dir(output.parent)
