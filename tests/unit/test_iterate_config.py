"""How `dpo iterate` builds each round's config, and what it refuses before loading a model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dpo_cli.config.loader import load_config, with_updates
from dpo_cli.errors import DpoError
from dpo_cli.generation import Prompt
from dpo_cli.iterate.runner import check_loop, config_digest, prepare_dir, round_prompts, run_iterate, train_updates
from dpo_cli.rundir import run_lock

BASE = {
    "output_dir": "runs/loop",
    "model": {"name_or_path": "models/base"},
    "lora": {"r": 4},
    "data": {"train": "data/sample/train.jsonl", "eval": "data/sample/eval.jsonl"},
    "generate": {"prompts": "data/sample/train.jsonl", "scorer": "dpo_cli.scorers:concise"},
}


def write(tmp_path: Path, **changes) -> Path:
    config = {**BASE, **changes}
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_round_configs_continue_the_adapter_and_keep_the_original_reference(tmp_path: Path) -> None:
    path = write(tmp_path)
    base = load_config(path)
    out = Path("runs/loop")
    first = with_updates(base, train_updates(base, out, 1))
    assert first.output_dir == "runs/loop/round-1/run" and first.data.train == "runs/loop/round-1/pairs/pairs.jsonl"
    assert first.lora is not None and first.model.adapter is None and first.reference.kind == "policy"
    second = with_updates(base, train_updates(base, out, 2))
    assert second.lora is None and second.model.adapter == "runs/loop/round-1/run/final"
    assert (second.reference.kind, second.reference.name_or_path) == ("model", "models/base")


def test_previous_reference_and_full_fine_tuning(tmp_path: Path) -> None:
    path = write(tmp_path, lora=None, iterate={"reference": "previous"})
    base = load_config(path)
    second = with_updates(base, train_updates(base, Path("runs/loop"), 2))
    assert second.model.name_or_path == "runs/loop/round-1/run/final" and second.reference.kind == "policy"


def test_loop_refusals_are_listed_together(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, algorithm="kto", generate={"scorer": "dpo_cli.scorers:concise"}))
    with pytest.raises(DpoError) as exc:
        check_loop(cfg)
    assert any("generate.prompts" in d for d in exc.value.details)
    assert any("algorithm: kto" in d for d in exc.value.details)


def test_rerun_with_another_config_is_refused(tmp_path: Path) -> None:
    base = load_config(write(tmp_path))
    out = tmp_path / "loop"
    state = prepare_dir(out, config_digest(base), overwrite=False)
    out.mkdir()
    (out / "iterate.json").write_text('{"config_digest": "abc", "rounds": {}}')
    with pytest.raises(DpoError, match="different config"):
        prepare_dir(out, config_digest(base), overwrite=False)
    assert state == {"config_digest": config_digest(base), "rounds": {}}
    more_rounds = load_config(write(tmp_path, iterate={"rounds": 5}))
    assert config_digest(more_rounds) == config_digest(base)  # only the number of rounds may change
    assert prepare_dir(out, config_digest(base), overwrite=True)["rounds"] == {} and not any(out.iterdir())


def test_foreign_directory_is_never_taken_over(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(DpoError, match="not a `dpo iterate` directory"):
        prepare_dir(tmp_path, "d", overwrite=True)
    assert (tmp_path / "keep.txt").exists()


def earlier_loop(out: Path) -> None:
    """The files a finished two-round loop leaves (see the layout in dpo_cli.iterate.runner)."""
    for k in (0, 1, 2):
        (out / f"round-{k}").mkdir(parents=True)
        (out / f"round-{k}" / "heldout.jsonl").write_text("{}\n")
    (out / "round-1" / "run" / "final").mkdir(parents=True)
    for name in ("iterate.json", "rounds.md", "rounds.png", ".rounds.md.tmp"):
        (out / name).write_text('{"config_digest": "old", "rounds": {}}')


def test_overwrite_deletes_the_earlier_loops_own_entries(tmp_path: Path) -> None:
    out = tmp_path / "loop"
    earlier_loop(out)
    assert prepare_dir(out, "new", overwrite=True) == {"config_digest": "new", "rounds": {}}
    assert list(out.iterdir()) == []


def test_overwrite_keeps_everything_when_a_foreign_file_or_an_input_is_inside(tmp_path: Path) -> None:
    out = tmp_path / "loop"
    earlier_loop(out)
    (out / "notes.md").write_text("mine")
    with pytest.raises(DpoError, match="not the earlier loop's own") as exc:
        prepare_dir(out, "new", overwrite=True)
    assert exc.value.details[0] == "notes.md: not a file dpo iterate writes"
    (out / "notes.md").unlink()
    model = (out / "round-1" / "run" / "final").resolve()
    with pytest.raises(DpoError) as exc:
        prepare_dir(out, "new", overwrite=True, protected=[("model.name_or_path", model)])
    assert exc.value.details[0] == f"model.name_or_path: {model} is inside the loop it would replace"
    assert (out / "iterate.json").is_file() and (out / "round-2" / "heldout.jsonl").is_file()


def test_overwrite_waits_for_the_lock_of_a_loop_still_running(tmp_path: Path) -> None:
    earlier_loop(tmp_path / "loop")
    with run_lock(tmp_path / "loop"), pytest.raises(DpoError, match="in use"):
        run_iterate(write(tmp_path, output_dir=str(tmp_path / "loop")), overwrite=True, progress=False)
    assert (tmp_path / "loop" / "round-1" / "run" / "final").is_dir()


def test_prompts_per_round_take_turns_and_wrap() -> None:
    prompts = [Prompt(i, None, str(i)) for i in range(5)]
    assert [p.index for p in round_prompts(prompts, None, 3)] == [0, 1, 2, 3, 4]
    assert [p.index for p in round_prompts(prompts, 2, 1)] == [0, 1]
    assert [p.index for p in round_prompts(prompts, 2, 3)] == [4, 0]


def test_scorer_reference_is_checked_at_load(tmp_path: Path) -> None:
    from dpo_cli.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, generate={"scorer": "no-colon"}))
    assert any("generate.scorer" in p for p in exc.value.problems)


def test_generate_pairs_model_option_takes_an_adapter_or_a_model(tmp_path: Path) -> None:
    from dpo_cli.cli.generate_pairs import model_overrides

    adapter, full = tmp_path / "adapter", tmp_path / "merged"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    full.mkdir()
    path = write(tmp_path)  # has a `lora:` section, as a training config does
    with_adapter = load_config(path, model_overrides(adapter))
    assert with_adapter.model.adapter == str(adapter) and with_adapter.lora is None
    with_model = load_config(path, model_overrides(full))
    assert with_model.model.name_or_path == str(full) and with_model.model.adapter is None
    with pytest.raises(DpoError, match="directory not found"):
        model_overrides(tmp_path / "missing")
