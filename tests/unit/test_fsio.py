"""Failed writes become one message naming the path and what was written (issue 15, item 5)."""

from __future__ import annotations

import errno
from pathlib import Path

from dpo_cli.fsio import WriteError, as_write_error, is_out_of_space


def test_every_shape_of_a_full_disk_reads_the_same(tmp_path: Path, monkeypatch) -> None:
    import shutil
    from collections import namedtuple

    target = tmp_path / "checkpoints" / "checkpoint-4"
    python = OSError(errno.ENOSPC, "No space left on device")
    rust = type("SafetensorError", (Exception,), {})(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    )
    tokenizers = Exception("No space left on device (os error 28)")
    for exc in (python, rust, tokenizers):
        error = as_write_error(exc, target, "checkpoint at step 4")
        assert error is not None and error.out_of_space
        assert error.message == f"no space left on device while writing {target} (checkpoint at step 4)"
    # torch's zip writer says only "unexpected pos": the disk's free space decides.
    torch_short_write = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 72320 vs 72212")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10 << 30, 10 << 30, 4096))
    assert is_out_of_space(torch_short_write, target)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10 << 30, 1 << 30, 9 << 30))
    error = as_write_error(torch_short_write, target, "checkpoint at step 4")
    assert not error.out_of_space and error.message.startswith("could not write (")


def test_other_failures_are_left_alone() -> None:
    assert as_write_error(ValueError("bad value"), Path("x"), "y") is None
    assert as_write_error(RuntimeError("CUDA out of memory"), Path("x"), "y") is None
    quota = WriteError(Path("/data/run/metrics.jsonl"), "metrics record at step 3", OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert quota.message == "no space left on device while writing /data/run/metrics.jsonl (metrics record at step 3)"
    readonly = WriteError(Path("/ro/run.json"), "run record", OSError(errno.EROFS, "Read-only file system"))
    assert readonly.message == "could not write (Read-only file system) while writing /ro/run.json (run record)"
