"""`dpo generate-pairs` and `dpo iterate` for real: tiny model sampling, scoring, training, resuming.

The loop tests use full fine-tuning of the tiny model and a length preference (`concise`: minus
the word count), which DPO learns within a round; the held-out score must rise.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dpo_cli.cli.main import app
from dpo_cli.fsio import read_json
from tests.conftest import ROOT, SAMPLE, output, run_logged, spawn
from tests.integration.test_eval import start_server

pytestmark = pytest.mark.integration
runner = CliRunner()


def loop_config(tmp_path: Path, model: Path, **changes) -> Path:
    config = {
        "output_dir": str(tmp_path / "loop"),
        "model": {"name_or_path": str(model), "dtype": "float32"},
        "data": {"train": str(SAMPLE / "train.jsonl"), "eval": str(SAMPLE / "eval.jsonl")},
        "training": {
            "beta": 0.1,
            "learning_rate": 1e-3,
            "num_train_epochs": 2,
            "per_device_train_batch_size": 8,
            "max_length": 96,
            "logging_steps": 1,
            "save_steps": 4,
            "bf16": False,
            "gradient_checkpointing": False,
        },
        "generate": {
            "prompts": str(SAMPLE / "train.jsonl"),
            "num_samples": 4,
            "max_new_tokens": 16,
            "temperature": 1.0,
            "top_p": 1.0,
            "batch_size": 16,
            "scorer": "dpo_cli.scorers:concise",
        },
        "eval": {"num_prompts": 32, "max_new_tokens": 16, "temperature": 1.0, "batch_size": 32},
        "iterate": {"rounds": 2, "prompts_per_round": 64},
    }
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_rounds_raise_the_scored_metric_and_a_finished_round_is_never_redone(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = loop_config(tmp_path, tiny_model_dir)
    out = tmp_path / "loop"
    first = runner.invoke(app, ["iterate", str(config), "--rounds", "1", "--no-progress"])
    assert first.exit_code == 0, first.output
    round_one = read_json(out / "iterate.json")["rounds"]["1"]
    final_one = out / "round-1" / "run" / "final"
    stamp = {p.name: p.stat().st_mtime_ns for p in final_one.iterdir()}

    # Stopped between rounds; the same command with more rounds goes on from round 2.
    second = runner.invoke(app, ["iterate", str(config), "--no-progress"])
    assert second.exit_code == 0, second.output
    assert "round 1:" in second.output and "(done earlier)" in second.output
    state = read_json(out / "iterate.json")
    assert state["rounds"]["1"] == round_one
    assert {p.name: p.stat().st_mtime_ns for p in final_one.iterdir()} == stamp

    scores = [state["rounds"][k]["heldout_score"] for k in ("0", "1", "2")]
    assert scores[2] > scores[0], scores  # shorter held-out answers: the preference was learned
    assert state["rounds"]["2"]["status"] == "completed" and state["rounds"]["2"]["pairs"] >= 32
    table = (out / "rounds.md").read_text()
    assert "| 2 |" in table and "heldout_score" in table and (out / "rounds.png").stat().st_size > 0

    # Round 2 sampled from round 1's policy, continued it, and kept the original model as reference.
    run_cfg = yaml.safe_load((out / "round-2" / "run" / "config.yaml").read_text())
    assert run_cfg["model"]["name_or_path"] == str(final_one)
    assert run_cfg["reference"] == {"kind": "model", "name_or_path": str(tiny_model_dir), "revision": None}
    pair = json.loads((out / "round-2" / "pairs" / "pairs.jsonl").read_text().splitlines()[0])
    assert pair["model"] == str(final_one) and pair["chosen_score"] > pair["rejected_score"]
    assert pair["prompt"][0]["role"] == "user" and pair["chosen"][0]["role"] == "assistant"

    changed = runner.invoke(app, ["iterate", str(config), "--set", "training.beta=0.3", "--no-progress"])
    assert changed.exit_code == 2 and "different config" in changed.output


def test_interrupted_loop_resumes_where_it_stopped(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Real SIGINT in the middle of round 1's training; the rerun resumes from its checkpoint.
    config = loop_config(
        tmp_path, tiny_model_dir, iterate={"rounds": 1}, training={"num_train_epochs": 6, "save_steps": 2}
    )
    out = tmp_path / "loop"
    command = [sys.executable, "-m", "dpo_cli", "iterate", str(config), "--no-progress"]
    proc = spawn(command, tmp_path, "first", combined=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    checkpoints = out / "round-1" / "run" / "checkpoints"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(checkpoints.glob("checkpoint-*/.complete")):
        assert proc.poll() is None, output(proc)[0][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    assert proc.returncode == 130, output(proc)[0][-3000:]
    assert read_json(out / "iterate.json")["rounds"].get("1", {}).get("status") != "completed"

    again = run_logged(command, tmp_path, "again", cwd=ROOT, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "reused 64 of 64 prompts' samples" not in again.stdout  # the pairs were finished, not resampled
    assert read_json(out / "round-1" / "run" / "run.json").get("resumed_from")
    assert read_json(out / "iterate.json")["rounds"]["1"]["status"] == "completed"


def pairs_config(tmp_path: Path, model: Path, **generate) -> Path:
    config = {
        "output_dir": str(tmp_path / "unused"),
        "model": {"name_or_path": str(model), "dtype": "float32"},
        "data": {"train": str(SAMPLE / "train.jsonl")},
        "generate": {
            "num_samples": 3,
            "max_new_tokens": 12,
            "temperature": 1.0,
            "batch_size": 4,
            "max_prompts": 10,
            **generate,
        },
    }
    path = tmp_path / "pairs.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_generate_pairs_caches_samples_and_resumes_after_a_crash(tiny_model_dir: Path, tmp_path: Path) -> None:
    scorer = tmp_path / "score.py"
    scorer.write_text("def vowels(prompt, response):\n    return sum(c in 'aeiou' for c in response)\n")
    config = pairs_config(tmp_path, tiny_model_dir, pairing="all")
    out = tmp_path / "pairs"
    args = [
        "generate-pairs",
        str(config),
        "--prompts",
        str(SAMPLE / "eval_chat.jsonl"),
        "--output",
        str(out),
        "--scorer",
        f"{scorer}:vowels",
        "--no-progress",
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    summary = read_json(out / "summary.json")
    assert summary["prompts"] == 10 and summary["samples"] == 30
    assert summary["pairs"] == len((out / "pairs.jsonl").read_text().splitlines()) > 10  # `all`: up to 3 a prompt
    assert summary["judge"] == f"function {scorer}:vowels" and summary["settings"]["seed"] == 0
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert all(r["chosen_score"] > r["rejected_score"] for r in rows)
    assert rows[0]["prompt"][-1]["role"] == "user"  # conversational prompts stay conversations

    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "--overwrite" in refused.output

    # A crash after the first batch: the cache keeps that batch, the rerun samples the rest and
    # ends with the same pairs as the uninterrupted run.
    generations = (out / "generations.jsonl").read_text().splitlines()
    (out / "generations.jsonl").write_text("\n".join(generations[:4]) + "\n" + generations[4][:20])
    (out / "summary.json").unlink()
    (out / "scores.jsonl").unlink()
    before = (out / "pairs.jsonl").read_text()
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert "reused 4 of 10 prompts' samples" in resumed.output
    assert (out / "pairs.jsonl").read_text() == before


def test_generate_pairs_from_a_served_endpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    proc, url = start_server(tiny_model_dir)
    try:
        config = pairs_config(
            tmp_path,
            tiny_model_dir,
            endpoint={"base_url": url, "model": str(tiny_model_dir)},
            scorer="dpo_cli.scorers:concise",
            max_prompts=4,
            min_score_gap=0.5,
        )
        out = tmp_path / "served"
        result = runner.invoke(
            app,
            [
                "generate-pairs",
                str(config),
                "--prompts",
                str(SAMPLE / "eval.jsonl"),
                "--output",
                str(out),
                "--no-progress",
            ],
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert result.exit_code == 0, result.output
    summary = read_json(out / "summary.json")
    assert summary["model"] == f"endpoint {url} model {tiny_model_dir}" and summary["samples"] == 12
    cached = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert all(len(r["samples"]) == 3 and any(s["text"] for s in r["samples"]) for r in cached)
    accounted = summary["prompts_with_pairs"] + sum(summary["skipped"].values())
    assert accounted == 4  # every prompt either made a pair or is counted under a reason


def test_missing_scorer_and_prompts_are_clear_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = pairs_config(tmp_path, tiny_model_dir)
    no_prompts = runner.invoke(app, ["generate-pairs", str(config), "--output", str(tmp_path / "o")])
    assert no_prompts.exit_code == 2 and "--prompts" in no_prompts.output
    no_scorer = runner.invoke(
        app, ["generate-pairs", str(config), "--output", str(tmp_path / "o"), "--prompts", str(SAMPLE / "eval.jsonl")]
    )
    assert no_scorer.exit_code == 2 and "generate.scorer is not set" in no_scorer.output
    assert "Traceback" not in no_scorer.output


def test_pairwise_llm_judge_scores_every_answer_and_ties_are_reported(tiny_model_dir: Path, tmp_path: Path) -> None:
    # The tiny model answers the rubric with noise: every judgement is unparseable, so a tie, so
    # every prompt's answers tie and no pair is made; the summary says exactly that.
    config = pairs_config(tmp_path, tiny_model_dir, max_prompts=3)
    data = yaml.safe_load(config.read_text())
    data["eval"] = {"judge": {"kind": "llm", "path": str(tiny_model_dir), "max_new_tokens": 8}}
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "judged"
    result = runner.invoke(
        app,
        ["generate-pairs", str(config), "--prompts", str(SAMPLE / "eval.jsonl"), "--output", str(out), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    summary = read_json(out / "summary.json")
    assert summary["judge"] == f"judge llm {tiny_model_dir}"
    assert summary["pairs"] == 0 and summary["skipped"] == {"every distinct response scored the same": 3}
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert all(s["scores"] == [0.5] * len(s["kept"]) for s in scores)
    assert "no pair for 3 prompt(s): every distinct response scored the same" in result.output


def test_iterate_with_a_pairwise_judge_reports_the_win_rate_against_the_start(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # A local LLM judge (the tiny model, whose replies never parse: every judgement a tie): the
    # held-out metric is the win rate against round 0's answers, 0.5 at the start by definition.
    # Ties everywhere make no pairs, so the loop must stop with the reason, not train on nothing.
    config = loop_config(
        tmp_path, tiny_model_dir, iterate={"rounds": 1, "prompts_per_round": 4}, eval={"num_prompts": 4}
    )
    data = yaml.safe_load(config.read_text())
    data["generate"].pop("scorer")
    data["eval"]["judge"] = {"kind": "llm", "path": str(tiny_model_dir), "max_new_tokens": 4}
    config.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["iterate", str(config), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "round 1: 0 pair(s), fewer than iterate.min_pairs (4)" in result.output
    assert "every distinct response scored the same" in result.output
    state = read_json(tmp_path / "loop" / "iterate.json")
    assert state["metric"] == "heldout_win_rate" and state["rounds"]["0"]["heldout_win_rate"] == 0.5


def test_generate_pairs_scored_by_a_reward_model(
    tiny_model_dir: Path, tiny_reward_model_dir: Path, tmp_path: Path
) -> None:
    from dpo_cli.config.schema import JudgeSection
    from dpo_cli.evaluation.judges import RewardModelJudge

    config = pairs_config(tmp_path, tiny_model_dir, max_prompts=4)
    data = yaml.safe_load(config.read_text())
    data["eval"] = {"judge": {"kind": "reward_model", "path": str(tiny_reward_model_dir)}}
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "rm"
    result = runner.invoke(
        app,
        ["generate-pairs", str(config), "--prompts", str(SAMPLE / "eval.jsonl"), "--output", str(out), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 4  # a random reward model never ties exactly
    judge = RewardModelJudge(JudgeSection(kind="reward_model", path=str(tiny_reward_model_dir)))
    for row in rows:  # the recorded scores are the reward model's own
        prompt = row["prompt"][-1]["content"]
        assert row["chosen_score"] == pytest.approx(judge.score(prompt, row["chosen"][0]["content"]), abs=1e-5)
        assert row["chosen_score"] > row["rejected_score"]


def test_heldout_win_rate_compares_with_round_zero_answers_as_written(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Round 1's model differs from round 0's (another weight seed); a judge preferring the
    # shorter answer decides. The win rate must be computed against round 0's answers on file,
    # and round 0's file must not grow (it would if round 0 were sampled again with round 1's model).
    from dpo_cli.config.loader import load_config
    from dpo_cli.iterate.runner import HeldOut
    from dpo_cli.pairs.prompts import load_prompts
    from dpo_cli.pairs.sampling import LocalSampler
    from dpo_cli.pairs.scoring import PairwiseScorer
    from tests.conftest import load_script

    other = load_script("build_tiny_model").build_tiny_model(tmp_path / "other", seed=1)

    def shorter(prompt: str, a: str, b: str):
        return ("A" if len(a) < len(b) else "B" if len(b) < len(a) else "tie"), ""

    base = load_config(loop_config(tmp_path, tiny_model_dir, eval={"num_prompts": 6, "batch_size": 6}))
    prompts = load_prompts(str(SAMPLE / "eval.jsonl"), "prompt", limit=6, key="test")
    heldout = HeldOut(prompts, PairwiseScorer(shorter, "judge shorter"), base, tmp_path / "loop")
    assert heldout.evaluate(LocalSampler(base), 0, False)["heldout_win_rate"] == 0.5
    zero_file = tmp_path / "loop" / "round-0" / "heldout.jsonl"
    zero_lines = zero_file.read_text()
    second = base.model_copy(update={"model": base.model.model_copy(update={"name_or_path": str(other)})})
    found = heldout.evaluate(LocalSampler(second), 1, False)
    assert zero_file.read_text() == zero_lines

    def answers(k: int) -> list[str]:
        rows = [
            json.loads(line) for line in (tmp_path / "loop" / f"round-{k}" / "heldout.jsonl").read_text().splitlines()
        ]
        return [r["samples"][0]["text"].strip() for r in rows]

    points = [1.0 if len(n) < len(o) else 0.0 if len(n) > len(o) else 0.5 for n, o in zip(answers(1), answers(0))]
    assert answers(1) != answers(0)
    assert found["heldout_win_rate"] == pytest.approx(sum(points) / len(points))
