"""A real beta sweep on the tiny model: table, plot, choice, reuse of work, failure isolation, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from dpo_cli.config.loader import load_config
from dpo_cli.fsio import read_json
from dpo_cli.sweep.runner import REF_CACHE_DIR, run_sweep
from tests.conftest import ROOT, smoke_overrides
from tests.html_check import parse_strict

pytestmark = pytest.mark.integration
SMOKE = ROOT / "configs" / "smoke.yaml"
SHORT = ["training.max_steps=4", "training.logging_steps=2", "training.save_steps=100", "data.max_eval_samples=32"]


@pytest.fixture(scope="module")
def sweep(tiny_model_dir: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    overrides = smoke_overrides(tiny_model_dir, root / "run", *SHORT)
    result = run_sweep(SMOKE, overrides, betas=[0.05, 0.1, 0.5], sweep_dir=root / "sweep")
    return overrides, result


def test_three_betas_produce_table_plot_and_choice(sweep) -> None:
    _, result = sweep
    out = result.sweep_dir
    assert [r["point"] for r in result.rows] == ["beta_0.05", "beta_0.1", "beta_0.5"]
    assert all(r["status"] == "completed" for r in result.rows)
    with (out / "results.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["point"] for row in table] == ["beta_0.05", "beta_0.1", "beta_0.5"]
    assert all(0.0 <= float(row["reward_accuracy"]) <= 1.0 for row in table)
    assert result.plot is not None and result.plot.stat().st_size > 1000
    assert result.winner is not None
    assert f"Chosen: `{result.winner['point']}`" in (out / "results.md").read_text()
    assert Path(result.winner["final_dir"], "adapter_model.safetensors").is_file()
    state = read_json(out / "sweep.json")
    assert state["winner"] == result.winner["point"] and "Rule" not in state["rule"]


def test_sweep_page_and_the_winners_card(sweep) -> None:
    from huggingface_hub import ModelCard

    _, result = sweep
    page = parse_strict((result.sweep_dir / "report.html").read_text())
    assert result.page == result.sweep_dir / "report.html"
    assert len(page.images) == 1  # sweep.png, embedded
    assert all(f"{row['point']}/report.html" in page.links for row in result.rows)
    assert f"Chosen: {result.winner['point']}" in " ".join(page.text.split())
    winner = result.sweep_dir / result.winner["point"]
    card = ModelCard.load(winner / "final" / "README.md")
    assert card.data.library_name == "peft" and "dpo" in card.data.tags
    selection = card.text.split("## Selection (`dpo sweep-beta`)")[1].split("\n## ")[0]
    assert "the point `dpo sweep-beta` chose among 3" in selection
    assert f"| **{result.winner['point']}** (chosen) |" in selection
    assert (winner / "final" / "plots" / "sweep.png").is_file()
    others = [r["point"] for r in result.rows if r["point"] != result.winner["point"]]
    assert (
        f"the chosen point is `{result.winner['point']}`"
        in (result.sweep_dir / others[0] / "final" / "README.md").read_text()
    )
    parse_strict((winner / "report.html").read_text())


def test_each_point_is_a_normal_run(sweep) -> None:
    _, result = sweep
    for row in result.rows:
        run_dir = result.sweep_dir / row["point"]
        cfg = load_config(run_dir / "config.yaml")
        assert cfg.training.beta == row["beta"]
        assert read_json(run_dir / "run.json")["status"] == "completed"


def test_reference_log_probs_computed_once_and_reused(sweep) -> None:
    _, result = sweep
    sources = [row["ref_logps"] for row in result.rows]
    assert sources[0] == {"train": "computed", "eval": "computed"}
    assert sources[1:] == [{"train": "reused", "eval": "reused"}] * 2
    assert len(list((result.sweep_dir / REF_CACHE_DIR).glob("*.npz"))) == 2


def test_reused_reference_log_probs_equal_fresh_ones(sweep, tmp_path: Path) -> None:
    from dpo_cli.train.trainer import build_trainer

    overrides, result = sweep
    fresh_cfg = load_config(
        SMOKE,
        [*overrides, f"output_dir={tmp_path / 'fresh'}", "training.precompute_ref_log_probs=true", "training.beta=0.3"],
    )
    fresh = build_trainer(fresh_cfg, tmp_path / "metrics.jsonl").trainer  # TRL's own precompute, no sharing
    cached = {p.name.split("-")[0]: np.load(p) for p in (result.sweep_dir / REF_CACHE_DIR).glob("*.npz")}
    np.testing.assert_allclose(cached["train"]["chosen"], fresh.train_dataset["ref_chosen_logps"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        cached["eval"]["rejected"], fresh.eval_dataset["ref_rejected_logps"], rtol=1e-5, atol=1e-5
    )


def test_rerun_skips_finished_points_and_adds_new_ones(sweep, capsys) -> None:
    overrides, result = sweep
    started = {r["point"]: read_json(result.sweep_dir / r["point"] / "run.json")["started"] for r in result.rows}
    again = run_sweep(SMOKE, overrides, betas=[0.05, 0.1, 0.5, 0.2], sweep_dir=result.sweep_dir)
    out = capsys.readouterr().out
    assert out.count("done earlier, skipped") == 3
    for name, when in started.items():
        assert read_json(result.sweep_dir / name / "run.json")["started"] == when
    assert [r["status"] for r in again.rows] == ["completed"] * 4


def test_a_failed_point_is_recorded_and_the_rest_go_on(tiny_model_dir: Path, tmp_path: Path) -> None:
    # The first point cannot create its run directory (a file is in the way, as with a full or
    # read-only disk): it fails, is recorded with its error, and the next point still trains.
    overrides = smoke_overrides(tiny_model_dir, tmp_path / "run", *SHORT)
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "beta_0.1").write_text("not a directory")
    result = run_sweep(SMOKE, overrides, betas=[0.1, 0.2], sweep_dir=sweep_dir)
    status = {r["point"]: r for r in result.rows}
    assert status["beta_0.1"]["status"] == "failed"
    assert "exists and is not a directory" in status["beta_0.1"]["error"]
    assert status["beta_0.2"]["status"] == "completed"
    assert result.winner["point"] == "beta_0.2"
    assert "did not finish" in (sweep_dir / "results.md").read_text()
    assert json.loads((sweep_dir / "sweep.json").read_text())["points"]["beta_0.1"]["error"]


@pytest.mark.slow
def test_sweep_with_a_judge_selects_by_win_rate(
    tiny_model_dir: Path, tiny_reward_model_dir: Path, tmp_path: Path
) -> None:
    overrides = smoke_overrides(
        tiny_model_dir,
        tmp_path / "run",
        *SHORT,
        "eval.judge.kind=reward_model",
        f"eval.judge.path={tiny_reward_model_dir}",
        "eval.num_prompts=4",
        "eval.max_new_tokens=8",
        "sweep.select_by=win_rate",
    )
    result = run_sweep(SMOKE, overrides, betas=[0.1, 0.5], sweep_dir=tmp_path / "sweep")
    for row in result.rows:
        assert 0.0 <= row["win_rate"] <= 1.0
        assert (result.sweep_dir / row["point"] / "eval" / "report.json").is_file()
    assert "win_rate" in result.rule


def test_parallel_points_read_the_sweep_data_check_instead_of_checking_again(tiny_model_dir: Path, tmp_path: Path):
    """Each point runs as its own `dpo train --data-check SWEEP`: it leaves out the rows the one check dropped."""
    import subprocess
    import sys

    from dpo_cli.sweep.runner import run_parallel

    lines = (ROOT / "data" / "sample" / "train.jsonl").read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join([*lines, lines[5]]) + "\n")  # one copied pair
    overrides = [*smoke_overrides(tiny_model_dir, tmp_path / "run", *SHORT), f"data.train={tmp_path / 'train.jsonl'}"]
    seen: list[list[str]] = []

    class Done:  # runs the point to its end right away, as a finished process would look
        def __init__(self, argv, env, stdout, stderr):
            seen.append(argv)
            self.code = subprocess.run(argv, env=env, stdout=stdout, stderr=stderr, check=False, cwd=ROOT).returncode

        def poll(self):
            return self.code

    result = run_parallel(
        SMOKE,
        overrides,
        device_groups=[""],
        betas=[0.1],
        sweep_dir=tmp_path / "sweep",
        dpo_argv=[sys.executable, "-m", "dpo_cli"],
        popen=Done,
    )
    out = result.sweep_dir
    assert seen and "--data-check" in seen[0] and str(out) == seen[0][seen[0].index("--data-check") + 1]
    assert "--skip-validation" not in seen[0]
    point = next(p for p in out.iterdir() if (p / "run.json").is_file())
    run = read_json(point / "run.json")
    assert run["status"] == "completed" and run["train_rows"] == 400, (out / f"{point.name}.log").read_text()[-2000:]
    assert run["data"]["check"]["train"]["dropped_by"] == {"duplicate_pair": 1}
    assert (point / "data" / "rejects.jsonl").read_text().count('"duplicate_pair"') == 1
