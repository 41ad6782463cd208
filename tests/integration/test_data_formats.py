"""Training straight from users' formats on the tiny model: an HH-RLHF `.jsonl.gz` whose few
over-long prompts are dropped (not refused), a ShareGPT ranking file, and a mixture of sources
in different layouts with held-out metrics per eval source."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dpo_cli.cli.main import app
from tests.conftest import ROOT, SAMPLE

pytestmark = pytest.mark.integration
SMOKE = ROOT / "configs" / "smoke.yaml"
FORMATS = ROOT / "data" / "formats"
WORDS = ["river", "stone", "cloud", "lantern", "meadow", "copper", "violet", "harbor", "ember", "willow"]


def hh_rows(n: int, long_prompts: tuple[int, ...]) -> list[dict]:
    """HH-style transcripts of our own; the rows in `long_prompts` open with a very long question."""
    rows = []
    for i in range(n):
        question = f"What is a good name for a {WORDS[i % 10]} {i}?"
        if i in long_prompts:
            question += " " + " ".join(WORDS[(i + k) % 10] for k in range(900))
        turns = f"\n\nHuman: {question}"
        if i % 4 == 1:
            turns = f"\n\nHuman: Hello.\n\nAssistant: Hi, how can I help?{turns}"
        rows.append(
            {
                "chosen": f"{turns}\n\nAssistant: Try {WORDS[(i + 3) % 10].title()}, it is short and warm.",
                "rejected": f"{turns}\n\nAssistant: No.",
            }
        )
    return rows


def train(tiny_model_dir: Path, out: Path, *sets: str):
    args = [
        "train",
        str(SMOKE),
        "--set",
        f"model.name_or_path={tiny_model_dir}",
        "--set",
        f"output_dir={out}",
        "--set",
        "training.max_steps=2",
        "--set",
        "training.per_device_train_batch_size=4",
        "--set",
        "training.save_steps=100",
    ]
    for item in sets:
        args += ["--set", item]
    return CliRunner().invoke(app, args)


def test_hh_jsonl_gz_drops_the_three_prompts_over_max_length_and_says_so(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "hh.jsonl.gz"
    path.write_bytes(
        gzip.compress("".join(json.dumps(r) + "\n" for r in hh_rows(256, (17, 101, 230))).encode(), mtime=0)
    )
    out = tmp_path / "run"
    result = train(
        tiny_model_dir,
        out,
        f"data.train={path}",
        "data.eval=null",
        "data.eval_fraction=null",
        "training.max_length=512",
    )
    assert result.exit_code == 0, result.output
    assert "dropped: 3 of 256 train rows (response_cut_off x3), 253 left" in result.output
    run = json.loads((out / "run.json").read_text())
    assert run["train_rows"] == 253 and run["data"]["check"]["train"]["dropped_by"] == {"response_cut_off": 3}
    assert run["data"]["sources"]["train"][0]["layout"] == "hh"
    rejects = [json.loads(line) for line in (out / "data" / "rejects.jsonl").read_text().splitlines()]
    assert [r["where"] for r in rejects] == [f"{path}:{i + 1}" for i in (17, 101, 230)]
    assert all("prompt alone is" in r["reasons"][0]["note"] for r in rejects)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["train_rows"] == 253
    assert "253 train rows (3 of 256 dropped: response_cut_off 3)" in result.output


def test_hh_prompts_are_cut_exactly_as_trls_extract_prompt_cuts_them(tmp_path: Path) -> None:
    from trl.data_utils import extract_prompt

    from dpo_cli.config.schema import DataSection
    from dpo_cli.data import load_preference_data

    sample = [json.loads(line) for line in gzip.decompress((FORMATS / "hh_rlhf.jsonl.gz").read_bytes()).splitlines()]
    ours = hh_rows(40, ())
    ours[7] = {"chosen": "\n\nHuman: Hi\n\nAssistant: Completely different", "rejected": "Nothing shared"}
    path = tmp_path / "hh.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ours))
    for source, rows in ((FORMATS / "hh_rlhf.jsonl.gz", sample), (path, ours)):
        train = load_preference_data(DataSection(train=str(source), eval_fraction=None)).train
        assert list(train) == [extract_prompt(r) for r in rows]  # TRL's own extraction, row for row


def test_trains_straight_from_a_sharegpt_ranking_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(
        tiny_model_dir,
        out,
        f"data.train={FORMATS / 'sharegpt_ranking.json'}",
        "data.eval=null",
        "data.eval_fraction=null",
        "training.per_device_train_batch_size=2",
    )
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["data_format"] == "conversational" and run["train_rows"] == 6
    assert run["data"]["sources"]["train"][0]["layout"] == "sharegpt"
    losses = [
        json.loads(line)["loss"]
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in line and "train_runtime" not in line
    ]
    assert abs(losses[0] - math.log(2)) < 0.01  # a fresh LoRA starts exactly at the reference


def test_a_mixture_of_layouts_with_metrics_per_eval_source(tiny_model_dir: Path, tmp_path: Path) -> None:
    mixture = [
        {"path": str(SAMPLE / "train_chat.jsonl"), "fraction": 0.1, "name": "chat"},
        {"path": str(FORMATS / "sharegpt_ranking.json")},
        {"path": str(FORMATS / "hh_rlhf.jsonl.gz"), "max_samples": 4},  # text transcripts, parsed into turns
    ]
    evals = [
        {"path": str(SAMPLE / "eval_chat.jsonl"), "max_samples": 8, "name": "held"},
        {"path": str(FORMATS / "openai_preference.jsonl"), "name": "openai"},
    ]
    out = tmp_path / "run"
    result = train(
        tiny_model_dir,
        out,
        f"data.train={json.dumps(mixture)}",
        f"data.eval={json.dumps(evals)}",
        "training.eval_steps=100",
    )
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    taken = {s["name"]: (s["layout"], s["taken"]) for s in run["data"]["sources"]["train"]}
    assert taken == {"chat": ("trl", 40), "sharegpt_ranking": ("sharegpt", 6), "hh_rlhf": ("hh", 4)}
    # the OpenAI sample asks the questions the ShareGPT and HH samples train on: those 3 eval rows leak, and go
    assert run["data"]["check"]["eval"]["dropped_by"] == {"leakage": 3}
    assert run["train_rows"] == 50 and run["eval_rows"] == 11 and run["data_format"] == "conversational"
    summary = json.loads((out / "summary.json").read_text())
    by_source = summary["eval_by_source"]
    assert set(by_source) == {"held", "openai"} and by_source["held"]["rows"] == 8 and by_source["openai"]["rows"] == 3
    assert all(0.0 <= row["reward_accuracy"] <= 1.0 and math.isfinite(row["loss"]) for row in by_source.values())
    assert "held     reward accuracy" in result.output
    # dpo eval's held-out metrics come per source as well
    from dpo_cli.config.loader import load_config
    from dpo_cli.evaluation.preference import preference_metrics

    metrics = preference_metrics(load_config(out / "config.yaml"), out / "final")
    assert set(metrics["by_source"]) == {"held", "openai"}
    assert metrics["by_source"]["held"]["reference"]["reward_accuracy"] == 0.0  # the reference ties every pair
