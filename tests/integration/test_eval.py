"""`dpo eval` with real components: TRL's evaluate, real generation, a real `transformers serve`
judge on loopback, the tiny reward model as judge."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dpo_cli.cli.main import app
from dpo_cli.config.loader import load_config
from dpo_cli.config.schema import JudgeSection
from dpo_cli.errors import DpoError
from dpo_cli.evaluation.judges import EndpointJudge, LlmJudge, RewardModelJudge
from dpo_cli.evaluation.winrate import judge_pair, tally
from tests.conftest import ROOT, smoke_overrides

pytestmark = pytest.mark.integration

SMOKE = ROOT / "configs" / "smoke.yaml"
SMOLLM2 = ROOT / ".cache" / "models" / "smollm2-135m-instruct"
FAST_EVAL = ["eval.num_prompts=4", "eval.batch_size=2", "eval.max_new_tokens=12", "eval.judge.max_new_tokens=6"]
runner = CliRunner()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, timeout: float = 180.0):
    """`transformers serve` on loopback with `model` preloaded; returns (process, base_url)."""
    import tempfile

    from tests.conftest import output, spawn

    port = free_port()
    serve = Path(sys.executable).parent / "transformers"
    proc = spawn(
        [str(serve), "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        Path(tempfile.mkdtemp(prefix="dpo-serve-")),
        "serve",
        combined=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited: {output(proc)[0][-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                if reply.status == 200:
                    return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("transformers serve did not come up")


@pytest.fixture(scope="module")
def served_tiny(tiny_model_dir: Path):
    proc, url = start_server(tiny_model_dir)
    yield url, str(tiny_model_dir)
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def trained_run(tiny_model_dir: Path, tmp_path_factory) -> Path:
    from dpo_cli.train.run import train

    out = tmp_path_factory.mktemp("eval-runs") / "lora"
    cfg = load_config(SMOKE, smoke_overrides(tiny_model_dir, out, "training.save_steps=100"))
    train(cfg)
    return out


def test_fresh_lora_scores_exactly_like_the_reference(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from dpo_cli.evaluation.preference import preference_metrics
    from dpo_cli.train.trl_args import to_lora_config

    cfg = load_config(SMOKE, smoke_overrides(tiny_model_dir, tmp_path / "run", "data.max_eval_samples=32"))
    fresh = tmp_path / "fresh-adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), to_lora_config(cfg.lora)).save_pretrained(
        fresh
    )
    rows = preference_metrics(cfg, fresh)
    ref, pol = rows["reference"], rows["policy"]
    for key in ("reward_accuracy", "reward_margin", "dpo_loss", "logp_chosen", "logp_rejected"):
        assert pol[key] == pytest.approx(ref[key], abs=1e-5), key
    assert pol["reward_chosen"] == pytest.approx(0.0, abs=1e-6) == pol["reward_rejected"]
    assert ref["dpo_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert ref["pairs"] == 32


def test_trained_run_accuracy_rises_and_matches_training_eval(trained_run: Path) -> None:
    from dpo_cli.evaluation.preference import preference_metrics

    rows = preference_metrics(load_config(trained_run / "config.yaml"), trained_run / "final")
    ref, pol = rows["reference"], rows["policy"]
    assert ref["reward_accuracy"] == 0.0 and ref["reward_margin"] == 0.0
    assert pol["reward_accuracy"] >= 0.75 and pol["reward_margin"] > 0.1
    assert pol["dpo_loss"] < ref["dpo_loss"] - 0.05
    summary = json.loads((trained_run / "summary.json").read_text())
    # Same trainer path as training's own final eval, so the same numbers.
    assert pol["dpo_loss"] == pytest.approx(summary["eval_loss"], abs=1e-4)
    assert pol["reward_accuracy"] == pytest.approx(summary["eval_reward_accuracy"], abs=1e-6)


def test_reward_model_judge_is_order_independent(tiny_reward_model_dir: Path) -> None:
    judge = RewardModelJudge(JudgeSection(kind="reward_model", path=str(tiny_reward_model_dir)))
    prompt = "How do I fall asleep faster?"
    answers = ["Keep the same bedtime every night.", "That is a silly thing to ask.", "Put the phone away."]
    scores = [judge.score(prompt, a) for a in answers]
    assert len(set(scores)) == 3  # a real head, not a constant
    for i in range(3):
        for j in range(3):
            if i != j:
                verdict, raw = judge(prompt, answers[i], answers[j])
                assert verdict == ("A" if scores[i] > scores[j] else "B")
                assert "score A" in raw
    pairs = [(0, prompt, answers[0], answers[1]), (1, prompt, answers[1], answers[2])]
    summary = tally(judge_pair(judge, *p) for p in pairs)
    assert summary["tie"] == 0 and summary["position_disagreements"] == 0


def test_llm_judge_unparseable_replies_are_ties(tiny_model_dir: Path) -> None:
    judge = LlmJudge(JudgeSection(kind="llm", path=str(tiny_model_dir), max_new_tokens=6))
    result = judge_pair(judge, 0, "How?", "Like this.", "Like that.")
    assert result.policy_first is None and result.policy_second is None  # the tiny model writes noise
    assert result.outcome == "tie" and all(isinstance(r, str) for r in result.raw)


def test_endpoint_judge_against_transformers_serve(served_tiny) -> None:
    url, model = served_tiny
    judge = EndpointJudge(JudgeSection(kind="endpoint", base_url=url, model=model, max_new_tokens=6))
    judge.check()
    verdict, raw = judge("How?", "Like this.", "Like that.")
    assert isinstance(raw, str) and verdict is None  # served, answered, not a verdict: a tie
    bad_model = EndpointJudge(JudgeSection(kind="endpoint", base_url=url, model="/no/such/model", max_retries=0))
    with pytest.raises(DpoError, match="answered HTTP"):
        bad_model.check()


def test_dead_endpoint_ends_with_a_clear_message() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    judge = EndpointJudge(JudgeSection(kind="endpoint", base_url=url, model="m", max_retries=1, timeout=5))
    with pytest.raises(DpoError, match=r"unreachable after 1 retries"):
        judge.check()


def test_missing_api_key_variable_is_named(monkeypatch) -> None:
    monkeypatch.delenv("DPO_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(DpoError, match="DPO_TEST_NO_SUCH_KEY"):
        EndpointJudge(
            JudgeSection(
                kind="endpoint", base_url="http://127.0.0.1:1/v1", model="m", api_key_env="DPO_TEST_NO_SUCH_KEY"
            )
        )


def test_generation_is_seeded_and_cached(trained_run: Path, tmp_path: Path) -> None:
    from dpo_cli.data import load_preference_data
    from dpo_cli.evaluation.generate import eval_prompts, generate, load_generation_models

    cfg = load_config(trained_run / "config.yaml", ["eval.num_prompts=3", "eval.batch_size=2", "eval.max_new_tokens=8"])
    prompts = eval_prompts(load_preference_data(cfg.data).eval, cfg.eval.num_prompts)
    models = load_generation_models(cfg, trained_run / "final")
    first = generate(
        models.policy,
        models.tokenizer,
        prompts,
        cfg.eval,
        label="policy",
        model_id=models.policy_id,
        out_path=tmp_path / "a.jsonl",
        progress=False,
    )
    again = generate(
        models.policy,
        models.tokenizer,
        prompts,
        cfg.eval,
        label="policy",
        model_id=models.policy_id,
        out_path=tmp_path / "b.jsonl",
        progress=False,
    )
    assert [r["response"] for r in first] == [r["response"] for r in again]  # same seed, same text
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    # A rerun with everything cached reads the file and never touches a model (none is given).
    reread = generate(
        None,
        models.tokenizer,
        prompts,
        cfg.eval,
        label="policy",
        model_id=models.policy_id,
        out_path=tmp_path / "a.jsonl",
        progress=False,
    )
    assert (tmp_path / "a.jsonl").read_text().splitlines() == lines and reread == first
    with models.reference_context():
        ref = generate(
            models.reference,
            models.tokenizer,
            prompts,
            cfg.eval,
            label="reference",
            model_id=models.reference_id,
            out_path=tmp_path / "r.jsonl",
            progress=False,
        )
    assert [r["response"] for r in ref] != [r["response"] for r in first]  # the adapter is off for the reference


def test_dpo_eval_cli_with_reward_model_judge_and_side_by_side(
    trained_run: Path, tiny_reward_model_dir: Path, tmp_path: Path
) -> None:
    second = tmp_path / "lora-copy"
    shutil.copytree(trained_run, second, ignore=shutil.ignore_patterns("eval"))
    args = [
        "eval",
        str(trained_run),
        str(second),
        "--judge",
        f"reward_model:{tiny_reward_model_dir}",
        "--compare-dir",
        str(tmp_path / "cmp"),
        "--no-progress",
        "--set",
        "eval.preference=false",
        *[x for o in FAST_EVAL for x in ("--set", o)],
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "win rate" in result.stdout and "pathology" in result.stdout
    report = json.loads((trained_run / "eval" / "report.json").read_text())
    assert report["winrate"]["n"] == 4 and report["winrate"]["unparseable_replies"] == 0
    assert {p.name for p in (trained_run / "eval" / "plots").iterdir()} == {"winrate.png", "pathology.png"}
    assert (tmp_path / "cmp" / "compare.md").read_text().count("| lora") == 2
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.stderr


@pytest.mark.slow
def test_dpo_eval_cli_end_to_end_with_served_judge(trained_run: Path, served_tiny, tmp_path: Path, monkeypatch) -> None:
    url, model = served_tiny
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("eval"))
    secret = "sk-dpo-test-secret-0123456789"
    monkeypatch.setenv("DPO_TEST_JUDGE_KEY", secret)
    result = runner.invoke(
        app,
        [
            "eval",
            str(run),
            "--judge",
            f"endpoint:{url}",
            "--judge-model",
            model,
            "--no-progress",
            "--set",
            "eval.judge.api_key_env=DPO_TEST_JUDGE_KEY",
            *[x for o in FAST_EVAL for x in ("--set", o)],
        ],
    )
    assert result.exit_code == 0, result.output
    assert "reward acc" in result.stdout and "could not be parsed" in result.stdout
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["preference"]["policy"]["reward_accuracy"] > report["preference"]["reference"]["reward_accuracy"]
    assert report["winrate"]["tie"] == 4 and report["winrate"]["unparseable_replies"] == 8
    for path in (run / "eval").rglob("*"):
        if path.is_file() and path.suffix in {".json", ".jsonl", ".md"}:
            assert secret not in path.read_text(), path
    assert secret not in result.output


@pytest.mark.slow
@pytest.mark.skipif(not (SMOLLM2 / "config.json").is_file(), reason="SmolLM2 not converted (make demo builds it)")
def test_smollm2_served_judge_gives_parseable_verdicts() -> None:
    proc, url = start_server(SMOLLM2)
    try:
        judge = EndpointJudge(JudgeSection(kind="endpoint", base_url=url, model=str(SMOLLM2), max_new_tokens=16))
        good = "Keep the same bedtime every night and put your phone in another room."
        bad = "That is a silly thing to ask. Search for it yourself."
        results = [judge_pair(judge, 0, "Any tips on how to fall asleep faster?", good, bad)]
        assert results[0].raw and all(isinstance(r, str) for r in results[0].raw)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def arithmetic_task(tmp_path: Path) -> Path:
    """A multiple-choice lm-evaluation-harness task over a local JSONL file (sums, four choices)."""
    import random

    rng = random.Random(0)
    rows = []
    for _ in range(12):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        wrong = rng.sample([a + b + d for d in (-3, -2, -1, 1, 2, 3)], 3)
        choices = [str(a + b), *map(str, wrong)]
        rng.shuffle(choices)
        rows.append({"question": f"What is {a} plus {b}?", "choices": choices, "answer": choices.index(str(a + b))})
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = tmp_path / "sums.yaml"
    task.write_text(
        "task: dpo_test_sums\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return task


def test_alignment_tax_on_a_task_over_a_local_file(trained_run: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from dpo_cli.train.trl_args import to_lora_config

    task = arithmetic_task(tmp_path)
    tax = [
        f"eval.alignment_tax.tasks=[{task}]",
        "eval.alignment_tax.batch_size=4",
        "eval.preference=false",
        "eval.generate=false",
    ]
    args = ["--no-progress", *[x for o in tax for x in ("--set", o)]]

    # A fresh adapter (B = 0) is the reference exactly: the tax must be 0 to the last digit.
    cfg = load_config(SMOKE, smoke_overrides(tiny_model_dir, tmp_path / "run"))
    fresh = tmp_path / "fresh"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), to_lora_config(cfg.lora)).save_pretrained(
        fresh
    )
    config = tmp_path / "fresh.yaml"
    data = yaml.safe_load((trained_run / "config.yaml").read_text())
    config.write_text(yaml.safe_dump({**data, "output_dir": str(tmp_path / "fresh-run")}))
    result = runner.invoke(app, ["eval", str(config), "--model", str(fresh), *args])
    assert result.exit_code == 0, result.output
    report = json.loads((Path(load_config(config).output_dir) / "eval" / "report.json").read_text())
    (row,) = report["alignment_tax"]["rows"]
    assert (row["task"], row["metric"]) == ("dpo_test_sums", "acc")
    assert row["delta"] == 0.0 and row["policy"] == row["reference"]
    assert 0.0 <= row["reference"] <= 1.0 and row["stderr"] > 0

    trained = runner.invoke(app, ["eval", str(trained_run), "--overwrite", *args])
    assert trained.exit_code == 0, trained.output
    assert "alignment tax" in trained.stdout and "dpo_test_sums" in trained.stdout
    report = json.loads((trained_run / "eval" / "report.json").read_text())
    (row,) = report["alignment_tax"]["rows"]
    assert row["delta"] == pytest.approx(row["policy"] - row["reference"])
    assert "## Alignment tax" in (trained_run / "eval" / "report.md").read_text()


def test_unknown_alignment_tax_task_is_named(trained_run: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "eval",
            str(trained_run),
            "--overwrite",
            "--no-progress",
            "--set",
            "eval.alignment_tax.tasks=[no_such_task_xyz]",
            "--set",
            "eval.preference=false",
            "--set",
            "eval.generate=false",
        ],
    )
    assert result.exit_code == 2 and "no_such_task_xyz" in result.output and "Traceback" not in result.output
