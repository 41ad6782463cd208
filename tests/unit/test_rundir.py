"""Run directory protection, checkpoint markers and metrics truncation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpo_cli.errors import DpoError
from dpo_cli.rundir import (
    atomic_write_text,
    check_run_dir,
    init_run_dir,
    latest_checkpoint,
    mark_complete,
    read_metrics,
    truncate_metrics,
)


def test_non_empty_dir_is_refused_without_a_flag(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(DpoError) as info:
        check_run_dir(tmp_path, overwrite=False, resume=False)
    assert "not empty" in info.value.message and info.value.exit_code == 2
    assert (tmp_path / "metrics.jsonl").exists()


def test_overwrite_replaces(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "old.txt").write_text("x")
    init_run_dir(run, overwrite=True, resume=False)
    assert run.is_dir() and not any(run.iterdir())


def test_empty_or_missing_dir_is_fine(tmp_path: Path) -> None:
    init_run_dir(tmp_path / "new", overwrite=False, resume=False)
    assert (tmp_path / "new").is_dir()


def test_flags_contradict(tmp_path: Path) -> None:
    with pytest.raises(DpoError):
        check_run_dir(tmp_path, overwrite=True, resume=True)


def test_resume_needs_a_complete_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    with pytest.raises(DpoError) as info:
        check_run_dir(tmp_path, overwrite=False, resume=True)
    assert "no complete checkpoint" in info.value.message


def test_latest_checkpoint_skips_unmarked(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for step in (5, 10, 15):
        (root / f"checkpoint-{step}").mkdir(parents=True)
    mark_complete(root / "checkpoint-5")
    mark_complete(root / "checkpoint-10")
    assert latest_checkpoint(tmp_path) == root / "checkpoint-10"  # 15 was being written when killed


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]


def test_metrics_truncation_and_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (1, 5, 10, 15)]
    path.write_text("\n".join(lines) + '\n{"step": 20, "lo')
    assert [r["step"] for r in read_metrics(path)] == [1, 5, 10, 15]
    truncate_metrics(path, 10)
    assert [r["step"] for r in read_metrics(path)] == [1, 5, 10]


def test_run_lock_refuses_a_second_writer_and_is_released(tmp_path: Path) -> None:
    from dpo_cli.rundir import run_lock

    run = tmp_path / "run"
    with run_lock(run):
        with pytest.raises(DpoError) as info:
            with run_lock(run):
                pass
        assert "in use by another dpo process" in info.value.message
    with run_lock(run):  # released when the first holder is done
        pass


def test_atomic_writes_follow_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    target = tmp_path / "config.yaml"
    atomic_write_text(target, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
