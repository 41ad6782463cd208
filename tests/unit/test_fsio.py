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
    quota = WriteError(
        Path("/data/run/metrics.jsonl"), "metrics record at step 3", OSError(errno.EDQUOT, "Disk quota exceeded")
    )
    assert quota.message == "no space left on device while writing /data/run/metrics.jsonl (metrics record at step 3)"
    readonly = WriteError(Path("/ro/run.json"), "run record", OSError(errno.EROFS, "Read-only file system"))
    assert readonly.message == "could not write (Read-only file system) while writing /ro/run.json (run record)"


def test_atomic_files_get_the_umask_mode_and_leave_nothing_behind_on_error(tmp_path: Path) -> None:
    import os

    import pytest

    from dpo_cli.fsio import UMASK, atomic_save, atomic_write_json, read_json

    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert read_json(tmp_path / "a.json") == {"x": 1}
    # A writer that takes a file name (savefig, np.savez): not mkstemp's owner-only 0600.
    atomic_save(tmp_path / "plot.png", lambda tmp: tmp.write_bytes(b"png"))
    for name in ("a.json", "plot.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~UMASK, name

    def fails(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(errno.EIO, "disk gone")

    with pytest.raises(OSError):
        atomic_save(tmp_path / "plot.png", fails)
    assert (tmp_path / "plot.png").read_bytes() == b"png"  # the old file, whole
    assert sorted(os.listdir(tmp_path)) == ["a.json", "plot.png"]


def test_publish_dir_swaps_a_whole_directory_in(tmp_path: Path) -> None:
    from dpo_cli.fsio import UMASK, publish_dir, staging_dir

    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    staging = staging_dir(out, "merging-")
    assert staging.name.startswith(".model.merging-") and staging.stat().st_mode & 0o777 == 0o700
    (staging / "weights.safetensors").write_text("new")
    (staging / "weights.safetensors").chmod(0o600)  # as safetensors writes it
    publish_dir(staging, out)
    assert [p.name for p in out.iterdir()] == ["weights.safetensors"]
    assert (out / "weights.safetensors").stat().st_mode & 0o777 == 0o666 & ~UMASK
    assert out.stat().st_mode & 0o777 == 0o777 & ~UMASK
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # the old copy is gone too


def test_a_json_object_the_user_pointed_at_is_read_or_named_in_the_error(tmp_path: Path) -> None:
    import pytest

    from dpo_cli.errors import EXIT_USAGE, DpoError
    from dpo_cli.fsio import read_json_object

    good = tmp_path / "config.json"
    good.write_text('{"hidden_size": 64}')
    assert read_json_object(good) == {"hidden_size": 64}
    cases = {
        "missing.json": (None, "model config not found"),
        "broken.json": ('{\n  "a": 1,\n  oops\n}', ":3: invalid JSON"),
        "list.json": ("[1, 2]", "expected a JSON object"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(DpoError) as caught:
            read_json_object(path, what="model config")
        assert str(caught.value).startswith(str(path)) and message in str(caught.value), name
        assert caught.value.exit_code == EXIT_USAGE
