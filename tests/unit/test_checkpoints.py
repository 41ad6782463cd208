"""Checkpoint rotation after the marker, and the checks `--resume` runs before trusting one (issue 15, items 3-4).

The checkpoints here are built from the files a Trainer writes (safetensors, torch zip archives,
trainer_state.json), made with the standard library so that no torch is imported.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import pytest

from dpo_cli.checkpoints import (
    checkpoint_problems,
    choose_resume_checkpoint,
    pickle_problem,
    rotate,
    safetensors_problem,
    set_aside_after,
)
from dpo_cli.errors import DpoError
from dpo_cli.rundir import COMPLETE_MARKER, all_checkpoints, latest_checkpoint, mark_complete


def safetensors_bytes(n_floats: int = 8) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * (4 * n_floats)


def torch_zip(path: Path, payload: bytes = b"x" * 256) -> None:
    # torch.save writes a zip archive: `<name>/data.pkl`, `<name>/data/0`, ...
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{path.stem}/data.pkl", payload)
        archive.writestr(f"{path.stem}/data/0", payload * 4)


def checkpoint(root: Path, step: int, *, complete: bool = True) -> Path:
    folder = root / "checkpoints" / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(safetensors_bytes())
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        torch_zip(folder / name)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    if complete:
        mark_complete(folder, step=step)
    return folder


def test_whole_files_pass_and_damaged_ones_are_named(tmp_path: Path) -> None:
    good = checkpoint(tmp_path, 4)
    assert checkpoint_problems(good) == []
    path = good / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-5])
    assert (
        safetensors_problem(path)
        == "adapter_model.safetensors: truncated (" + f"{path.stat().st_size} of {path.stat().st_size + 5} bytes)"
    )
    (good / "rng_state.pth").write_bytes(b"")
    assert pickle_problem(good / "rng_state.pth") == "rng_state.pth: empty"
    opt = good / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[: opt.stat().st_size // 2])
    assert "not a readable torch file" in pickle_problem(opt)


def test_every_kind_of_damage_makes_a_checkpoint_unusable(tmp_path: Path) -> None:
    def damaged(step: int, damage) -> list[str]:
        folder = checkpoint(tmp_path / str(step), step)
        damage(folder)
        return checkpoint_problems(folder)

    (problem,) = damaged(1, lambda f: (f / "trainer_state.json").write_text("{not json"))
    assert problem.startswith("trainer_state.json: 9 bytes, ") and problem.endswith(" when it was saved")
    assert any("missing" in p for p in damaged(2, lambda f: (f / "trainer_state.json").unlink()))
    assert "optimizer.pt: missing" in damaged(3, lambda f: (f / "optimizer.pt").unlink())

    # A marker from before dpo listed the files: the format checks alone still catch the damage.
    def legacy_truncation(folder: Path) -> None:
        (folder / COMPLETE_MARKER).write_text("")
        (folder / "scheduler.pt").write_bytes(b"PK\x03\x04 torn")

    assert any(p.startswith("scheduler.pt: not a readable torch file") for p in damaged(4, legacy_truncation))

    def invalid_state(folder: Path) -> None:
        (folder / COMPLETE_MARKER).write_text("")
        (folder / "trainer_state.json").write_text('{"global_step": 7}')

    assert damaged(6, invalid_state) == ["trainer_state.json: step 7, not 6"]

    # A zip whose member was overwritten in place fails its CRC.
    def flipped(folder: Path) -> None:
        data = bytearray((folder / "optimizer.pt").read_bytes())
        index = data.index(b"x" * 256 * 4)
        data[index] = ord("y")
        (folder / COMPLETE_MARKER).write_text("")
        (folder / "optimizer.pt").write_bytes(bytes(data))

    assert any("fails its checksum" in p for p in damaged(5, flipped))


def test_resume_falls_back_to_the_previous_complete_checkpoint_naming_both(tmp_path: Path) -> None:
    older = checkpoint(tmp_path, 2)
    newer = checkpoint(tmp_path, 4)
    checkpoint(tmp_path, 6, complete=False)  # a torn save: never a candidate
    (newer / "adapter_model.safetensors").write_bytes(b"\0" * 10)
    chosen, warnings = choose_resume_checkpoint(tmp_path)
    assert chosen == older
    assert len(warnings) == 1 and warnings[0].startswith("checkpoint-4 is unusable (adapter_model.safetensors: ")
    assert warnings[0].endswith("resuming from checkpoint-2 instead")
    notes = set_aside_after(tmp_path, chosen)
    assert [p.name for p in all_checkpoints(tmp_path)] == ["checkpoint-2"]
    assert (tmp_path / "checkpoints" / "unusable-checkpoint-4" / "adapter_model.safetensors").is_file()
    assert len(notes) == 2


def test_no_usable_checkpoint_is_one_clear_refusal(tmp_path: Path) -> None:
    for step in (2, 4):
        (checkpoint(tmp_path, step) / "optimizer.pt").write_bytes(b"")
    with pytest.raises(DpoError) as info:
        choose_resume_checkpoint(tmp_path)
    assert "no usable checkpoint" in info.value.message and info.value.exit_code == 2
    assert info.value.details[0].startswith("checkpoint-4: optimizer.pt:")
    assert info.value.details[1].startswith("checkpoint-2: optimizer.pt:")


def test_save_only_model_checkpoints_need_no_optimizer(tmp_path: Path) -> None:
    folder = checkpoint(tmp_path, 2, complete=False)
    for name in ("optimizer.pt", "scheduler.pt"):
        (folder / name).unlink()
    mark_complete(folder)
    assert checkpoint_problems(folder, needs_optimizer=False) == []
    assert checkpoint_problems(folder) == ["optimizer.pt: missing", "scheduler.pt: missing"]


def test_rotation_keeps_the_last_complete_checkpoint_until_a_newer_one_is_marked(tmp_path: Path) -> None:
    checkpoint(tmp_path, 2)
    # The save of checkpoint-4 has started (its files are there) but is not marked yet; a
    # rotation now (the Trainer's own runs at this point) must not leave nothing to resume.
    checkpoint(tmp_path, 4, complete=False)
    rotate(tmp_path, keep=1)
    assert latest_checkpoint(tmp_path).name == "checkpoint-2"
    assert [p.name for p in all_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-4"]
    mark_complete(tmp_path / "checkpoints" / "checkpoint-4")
    rotate(tmp_path, keep=1)
    assert [p.name for p in all_checkpoints(tmp_path)] == ["checkpoint-4"]


def test_rotation_keeps_the_best_and_clears_torn_saves(tmp_path: Path) -> None:
    best = checkpoint(tmp_path, 2)
    checkpoint(tmp_path, 3, complete=False)  # torn by an earlier kill
    for step in (4, 6, 8):
        checkpoint(tmp_path, step)
    rotate(tmp_path, keep=2, protect=best)
    assert [p.name for p in all_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-6", "checkpoint-8"]
    rotate(tmp_path, keep=None)  # no limit: every complete one stays
    assert len(all_checkpoints(tmp_path)) == 3


def test_the_marker_lists_every_file_with_its_size(tmp_path: Path) -> None:
    folder = checkpoint(tmp_path, 2)
    marker = json.loads((folder / COMPLETE_MARKER).read_text())
    assert marker["step"] == 2
    assert marker["files"]["adapter_model.safetensors"] == (folder / "adapter_model.safetensors").stat().st_size
    assert COMPLETE_MARKER not in marker["files"]
