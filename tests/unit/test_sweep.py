"""Sweep grid expansion, naming, validation of every point, and the choice rule (no torch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpo_cli.config.loader import load_config
from dpo_cli.config.schema import SweepSection
from dpo_cli.errors import ConfigError
from dpo_cli.sweep.runner import Point, choose, expand, point_configs, train_commands

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"


def test_expand_names_and_order() -> None:
    points = expand(SweepSection(betas=[0.1, 0.01, 0.1], learning_rates=[5e-6, 1e-5]))
    assert [p.name for p in points] == [
        "beta_0.1_lr_5e-06",
        "beta_0.1_lr_1e-05",
        "beta_0.01_lr_5e-06",
        "beta_0.01_lr_1e-05",
    ]


def test_cli_values_replace_config_grid() -> None:
    points = expand(SweepSection(), betas=[0.2, 0.5])
    assert [p.name for p in points] == ["beta_0.2", "beta_0.5"]


def test_point_overrides(tmp_path: Path) -> None:
    overrides = Point(0.05, 1e-5).overrides(tmp_path)
    assert "training.beta=0.05" in overrides
    assert "training.learning_rate=1.0e-05" in overrides  # YAML reads 1e-05 as a string
    assert f"output_dir={tmp_path / 'beta_0.05_lr_1e-05'}" in overrides
    assert "training.precompute_ref_log_probs=true" in overrides


def test_every_point_is_validated_before_training(tmp_path: Path) -> None:
    points = [Point(0.1), Point(-1.0), Point(0.2, -3.0)]
    with pytest.raises(ConfigError) as info:
        point_configs(load_config(SMOKE), points, tmp_path, str(SMOKE))
    text = "\n".join(info.value.problems)
    assert "beta_-1:" in text and "beta_0.2_lr_-3:" in text
    assert "beta_0.1:" not in text
    assert not any(tmp_path.iterdir())  # nothing was created


def test_sweep_section_rejects_non_positive_values() -> None:
    with pytest.raises(ValueError):
        SweepSection(betas=[0.1, 0.0])


def row(
    point: str, beta: float, acc: float, margin: float = 0.5, shift: float = 0.0, status: str = "completed"
) -> dict:
    return {
        "point": point,
        "beta": beta,
        "status": status,
        "reward_accuracy": acc,
        "reward_margin": margin,
        "chosen_logp_shift": shift,
        "logp_margin": acc * 10,
    }


def test_choose_best_accuracy_with_guards() -> None:
    rows = [
        row("a", 0.01, 0.95, shift=-20.0),  # best accuracy, but drifted far: excluded by the guard
        row("b", 0.1, 0.90),
        row("c", 0.5, 0.90),  # tie with b: larger beta wins
        row("d", 0.2, 0.99, margin=-0.1),  # negative margin: excluded
        row("e", 0.3, 1.0, status="failed"),
    ]
    winner, rule = choose(rows, SweepSection(max_chosen_logp_drop=5.0))
    assert winner["point"] == "c"
    assert "5 nats" in rule and "larger beta" in rule
    winner, _ = choose(rows, SweepSection(max_chosen_logp_drop=None))
    assert winner["point"] == "a"


def test_choose_by_logp_margin() -> None:
    rows = [row("a", 0.1, 0.9), row("b", 0.2, 0.95)]
    winner, rule = choose(rows, SweepSection(select_by="logp_margin"))
    assert winner["point"] == "b" and "logp_margin" in rule


def test_no_winner_when_nothing_qualifies() -> None:
    winner, _ = choose([row("a", 0.1, 0.9, margin=0.0)], SweepSection())
    assert winner is None


def test_train_commands_for_a_scheduler(tmp_path: Path) -> None:
    commands = train_commands(SMOKE, ["lora.r=4"], [Point(0.1), Point(0.2)], tmp_path)
    assert commands[0][:3] == ["dpo", "train", str(SMOKE)]
    assert commands[0][3:5] == ["--set", "lora.r=4"]
    assert f"output_dir={tmp_path / 'beta_0.2'}" in commands[1]


def test_win_rate_selection_needs_a_judge(tmp_path: Path) -> None:
    from dpo_cli.config.loader import load_config

    with pytest.raises(ConfigError) as info:
        load_config(SMOKE, ["sweep.select_by=win_rate"])
    assert "needs a judge" in str(info.value)


def test_an_interrupted_sweep_prints_the_command_that_trains_the_same_grid(tmp_path: Path, monkeypatch) -> None:
    """Issue 15, item 6: the printed command named no grid, and run as printed trained the config's default one."""
    import shlex

    import dpo_cli.models
    import dpo_cli.train.run
    from dpo_cli.errors import EXIT_INTERRUPTED, DpoError
    from dpo_cli.fsio import read_json
    from dpo_cli.sweep.runner import STATE_FILE, run_sweep

    config = tmp_path / "my cfg ü.yaml"
    config.write_text(SMOKE.read_text())
    overrides = [
        f"output_dir={tmp_path / 'run'}",
        f"data.train={ROOT / 'data/sample/train.jsonl'}",
        f"data.eval={ROOT / 'data/sample/eval.jsonl'}",
    ]
    trained: list[float] = []

    def interrupted(cfg, **kwargs):
        trained.append(cfg.training.beta)
        raise DpoError("interrupted at step 3", exit_code=EXIT_INTERRUPTED)

    monkeypatch.setattr(dpo_cli.train.run, "train", interrupted)
    monkeypatch.setattr(dpo_cli.models, "load_policy", lambda cfg: object())
    with pytest.raises(DpoError) as info:
        run_sweep(config, overrides, betas=[0.05, 0.1], sweep_dir=tmp_path / "sweep", validate=False)
    assert info.value.exit_code == EXIT_INTERRUPTED
    command = info.value.details[0].removeprefix("continue with: ")
    argv = shlex.split(command)
    assert argv[:3] == ["dpo", "sweep-beta", str(config)]
    assert argv[argv.index("--betas") + 1] == "0.05,0.1" and "--skip-validation" in argv
    assert read_json(tmp_path / "sweep" / STATE_FILE)["grid"] == {"betas": [0.05, 0.1], "learning_rates": None}

    # Run again without --betas, as a user would after reading the state file: the same grid.
    with pytest.raises(DpoError):
        run_sweep(config, overrides, sweep_dir=tmp_path / "sweep", validate=False)
    assert trained == [0.05, 0.05]


@pytest.mark.parametrize("algorithm", ["dpo", "orpo"])
def test_typed_point_updates_equal_the_printed_set_options(tmp_path: Path, algorithm: str) -> None:
    # Points are derived from the loaded config (typed); the printed commands must give the same run.
    from dpo_cli.config.loader import set_strings, with_updates

    user = [f"algorithm={algorithm}", "training.max_steps=3"]
    base = load_config(SMOKE, user)
    for point in expand(base.sweep, [0.05, 1e-5], [2e-5], algorithm):
        updates = point.updates(tmp_path / "odd: dir #1")
        typed = with_updates(base, updates)
        parsed = load_config(SMOKE, [*user, *set_strings(updates)])
        assert typed.model_dump() == parsed.model_dump()
        assert typed.training_overrides() == parsed.training_overrides()
        assert typed.output_dir == str(tmp_path / "odd: dir #1" / point.name)


def test_set_strings_read_back_as_the_same_values() -> None:
    from dpo_cli.config.loader import set_strings

    updates = {"a": 1e-05, "b": 0.01, "c": True, "d": None, "e": "x: y", "f": "true", "g": Path("runs/p"), "h": 3}
    assert set_strings(updates) == [
        "a=1.0e-05",
        "b=0.01",
        "c=true",
        "d=null",
        'e="x: y"',
        'f="true"',
        "g=runs/p",
        "h=3",
    ]
