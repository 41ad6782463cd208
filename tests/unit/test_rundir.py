"""Run directory protection, checkpoint markers and metrics truncation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpo_cli.errors import DpoError
from dpo_cli.fsio import atomic_write_text
from dpo_cli.rundir import check_run_dir, init_run_dir, latest_checkpoint, mark_complete, read_metrics, truncate_metrics


def test_non_empty_dir_is_refused_without_a_flag(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(DpoError) as info:
        check_run_dir(tmp_path, overwrite=False, resume=False)
    assert "not empty" in info.value.message and info.value.exit_code == 2
    assert (tmp_path / "metrics.jsonl").exists()


def test_overwrite_replaces_an_earlier_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    (run / "run.json").write_text('{"status": "failed"}\n')
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
        with pytest.raises(DpoError) as info, run_lock(run):
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


# --------------------------------------------------------------------------- the lock (issue 15, item 1)


def test_the_lock_is_found_through_a_symlink_and_a_dotdot_path(tmp_path: Path) -> None:
    from dpo_cli.rundir import run_lock

    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(run)
    with run_lock(run):
        for other in (link, tmp_path / "runs" / "x" / ".." / "a"):
            with pytest.raises(DpoError) as info, run_lock(other):
                pass
            assert "in use by another dpo process" in info.value.message
            assert f"same folder as {run}" in info.value.details[0]


def test_a_launcher_holding_the_lock_lets_its_rank_through(tmp_path: Path, monkeypatch) -> None:
    from dpo_cli.rundir import LOCK_ENV, run_lock

    run = tmp_path / "run"
    with run_lock(run):
        monkeypatch.setenv(LOCK_ENV, str(run.resolve()))
        with run_lock(run):  # rank 0 of the launch the lock is held for
            pass
        monkeypatch.setenv(LOCK_ENV, str(tmp_path / "another"))
        with pytest.raises(DpoError), run_lock(run):
            pass


# --------------------------------------------------------------------------- --overwrite (item 2)


def earlier_run(run: Path) -> Path:
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (run / "final").mkdir()
    (run / "final" / "adapter_model.safetensors").write_bytes(b"w")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    (run / "config.yaml").write_text("output_dir: x\n")
    (run / "run.json").write_text(json.dumps({"status": "completed"}))
    return run


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_refuses_a_folder_that_holds_no_dpo_run(tmp_path: Path) -> None:
    folder = tmp_path / "X"
    (folder / "sub").mkdir(parents=True)
    (folder / "train.jsonl").write_text('{"prompt": "p"}\n')
    (folder / "notes.txt").write_text("mine")
    before = snapshot(folder)
    with pytest.raises(DpoError) as info:
        init_run_dir(folder, overwrite=True, resume=False)
    assert "replaces only a dpo run" in info.value.message and info.value.exit_code == 2
    assert snapshot(folder) == before and (folder / "sub").is_dir()


def test_overwrite_refuses_a_run_folder_with_anything_else_in_it(tmp_path: Path) -> None:
    from dpo_cli.rundir import config_inputs

    run = earlier_run(tmp_path / "X")
    (run / "train.jsonl").write_text('{"prompt": "p"}\n')
    (run / "notes.txt").write_text("mine")
    (run / "sub").mkdir()
    before = snapshot(run)
    cfg = {"output_dir": str(run), "data": {"train": str(run / "train.jsonl")}}
    with pytest.raises(DpoError) as info:
        init_run_dir(run, overwrite=True, resume=False, protected=config_inputs(cfg))
    text = "\n".join(info.value.details)
    assert "notes.txt: not a file dpo writes" in text and "sub: not a file dpo writes" in text
    assert f"data.train: {run.resolve() / 'train.jsonl'} is inside the run it would replace" in text
    assert snapshot(run) == before


def test_overwrite_never_deletes_an_input_kept_under_a_run_name(tmp_path: Path) -> None:
    from dpo_cli.rundir import config_inputs

    run = earlier_run(tmp_path / "X")
    # Training on from the earlier run's own final weights, into the same folder.
    cfg = {
        "output_dir": str(run),
        "model": {"name_or_path": str(run / "final")},
        "training": {"x": [str(run / "plots")]},
    }
    with pytest.raises(DpoError) as info:
        check_run_dir(run, overwrite=True, resume=False, protected=config_inputs(cfg, tmp_path / "cfg.yaml"))
    assert any(line.startswith("model.name_or_path:") for line in info.value.details)
    assert (run / "final" / "adapter_model.safetensors").exists()


def test_overwrite_removes_only_the_earlier_runs_own_files(tmp_path: Path) -> None:
    from dpo_cli.rundir import config_inputs

    run = earlier_run(tmp_path / "X")
    (run / "launch").mkdir()
    (run / "launch" / "deepspeed.json").write_text("{}")
    (run / ".run.json.abc123.tmp").write_text("torn")
    # Re-running a run from its own config.yaml is allowed: that file is rewritten at once.
    init_run_dir(
        run, overwrite=True, resume=False, protected=config_inputs({"output_dir": str(run)}, run / "config.yaml")
    )
    assert sorted(p.name for p in run.iterdir()) == ["launch"]


def test_undo_start_removes_only_empty_folders_it_created(tmp_path: Path) -> None:
    from dpo_cli.rundir import undo_start

    made = tmp_path / "made"
    (made / "checkpoints").mkdir(parents=True)
    undo_start(made, created=True)
    assert not made.exists()
    kept = tmp_path / "kept"
    (kept / "checkpoints").mkdir(parents=True)
    undo_start(kept, created=False)
    assert kept.is_dir() and not (kept / "checkpoints").exists()
    busy = tmp_path / "busy"
    (busy / "checkpoints").mkdir(parents=True)
    (busy / "notes.txt").write_text("mine")
    undo_start(busy, created=True)
    assert (busy / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------- metrics.jsonl (item 9)


def test_a_corrupt_metrics_line_is_reported_and_later_records_are_kept(tmp_path: Path, capsys) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "lo\n[1, 2]\n{"step": 3}\n{"step": 4}\n')
    assert [r["step"] for r in read_metrics(path)] == [1, 3, 4]
    err = capsys.readouterr().err
    assert f"warning: {path}:2: unreadable metrics record skipped" in err
    assert f"warning: {path}:3: unreadable metrics record skipped: not a JSON object" in err
    truncate_metrics(path, 3)  # what --resume does
    assert [r["step"] for r in read_metrics(path)] == [1, 3]


# --------------------------------------------------------------------------- printed commands (item 10)


def test_printed_commands_paste_back_into_a_shell_unchanged(tmp_path: Path) -> None:
    import shlex

    from dpo_cli.rundir import train_command

    config = "cfg dir ü/my cfg.yaml"
    sets = ["training.beta=0.2", "data.train=my data/train set.jsonl", "launch.deepspeed={zero_stage: 3}", "x=it's"]
    line = train_command(config, sets, "--resume")
    assert shlex.split(line) == ["dpo", "train", config, *[a for s in sets for a in ("--set", s)], "--resume"]


# --------------------------------------------------------------------------- run.json on a full disk (item 5)


def test_run_json_is_written_in_place_when_the_disk_has_no_room_for_a_copy(tmp_path: Path, monkeypatch) -> None:
    import errno

    from dpo_cli import rundir

    (tmp_path / "run.json").write_text(json.dumps({"status": "running", "pad": "x" * 200}))

    def full(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(rundir, "atomic_write_text", full)
    rundir.write_run_info(tmp_path, {"status": "failed", "error": "no space left on device while writing x"})
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "failed"


def test_precomputed_reference_log_probs_are_no_earlier_run(tmp_path: Path) -> None:
    # The trainer writes them while it is built, before the run directory is taken over.
    from dpo_cli.rundir import REF_CACHE_DIR, holds_run

    run = tmp_path / "run"
    (run / REF_CACHE_DIR).mkdir(parents=True)
    (run / REF_CACHE_DIR / "train-abc.npz").write_bytes(b"x")
    (run / "checkpoints").mkdir()
    assert not holds_run(run)
    (run / "metrics.jsonl").write_text("{}\n")
    assert holds_run(run)
