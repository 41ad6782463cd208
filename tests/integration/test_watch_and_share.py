"""A run you can watch and share, on the tiny model: trackers offline, the model card, report.html,
`dpo eval` refreshing both, `push_to_hub` with the Hub intercepted, and a merged model's card."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest

from dpo_cli.config.loader import load_config
from dpo_cli.fsio import read_json
from dpo_cli.rundir import read_metrics
from tests.conftest import ROOT, smoke_overrides
from tests.html_check import parse_strict

pytestmark = pytest.mark.integration

SMOKE = ROOT / "configs" / "smoke.yaml"
PROJECT, RUN_NAME = "dpo-tests", "tracked"
DPO_SCALARS = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")


def _sections(markdown: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


@pytest.fixture(scope="module")
def tracked(tiny_model_dir: Path, tmp_path_factory) -> SimpleNamespace:
    """`dpo train` as a user runs it, with TensorBoard and trackio, and no way out to the network."""
    root = tmp_path_factory.mktemp("tracked")
    run, trackio_dir = root / "run", root / "trackio"
    overrides = smoke_overrides(
        tiny_model_dir,
        run,
        "training.report_to=[tensorboard,trackio]",
        f"training.project={PROJECT}",
        f"training.run_name={RUN_NAME}",
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TRACKIO_DIR": str(trackio_dir),
        "HF_HUB_OFFLINE": "1",
        # Any attempt to reach a server goes to a closed loopback port and fails at once.
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }
    env.pop("TENSORBOARD_LOGGING_DIR", None)
    argv = [sys.executable, "-m", "dpo_cli", "train", str(SMOKE), *[a for o in overrides for a in ("--set", o)]]
    log = root / "train.log"
    with log.open("w") as handle:
        code = subprocess.run(argv, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, check=False).returncode
    assert code == 0, log.read_text()[-3000:]
    return SimpleNamespace(run=run, trackio_dir=trackio_dir, env=env, log=log.read_text())


def test_tensorboard_event_files_hold_the_dpo_scalars(tracked) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tracked.run / "tensorboard"
    assert list(logdir.glob("events.out.tfevents.*")), "no event file in RUN/tensorboard/"
    events = EventAccumulator(str(logdir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"train/{k}" for k in DPO_SCALARS} <= tags and "eval/rewards/accuracies" in tags
    logged = {
        r["step"]: r for r in read_metrics(tracked.run / "metrics.jsonl") if "loss" in r and "train_runtime" not in r
    }
    for key in ("loss", "rewards/margins", "rewards/accuracies"):
        scalars = {e.step: e.value for e in events.Scalars(f"train/{key}")}
        assert scalars.keys() == logged.keys()
        assert all(math.isclose(scalars[s], logged[s][key], rel_tol=1e-5, abs_tol=1e-6) for s in scalars)
    assert abs(events.Scalars("train/loss")[0].value - math.log(2)) < 0.01


def test_trackio_logged_locally_and_reads_back_offline(tracked) -> None:
    assert (tracked.trackio_dir / f"{PROJECT}.db").is_file()
    trackio = Path(sys.executable).with_name("trackio")

    def metric(name: str) -> list[float]:
        out = subprocess.run(
            [str(trackio), "get", "metric", "--project", PROJECT, "--run", RUN_NAME, "--metric", name, "--json"],
            env=tracked.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        return [v["value"] for v in json.loads(out.stdout)["values"]]

    logged = [r for r in read_metrics(tracked.run / "metrics.jsonl") if "rewards/margins" in r]
    # trackio numbers its own log calls; the Trainer's step travels as train/global_step.
    assert metric("train/global_step")[: len(logged)] == [r["step"] for r in logged]
    margins = metric("train/rewards/margins")
    assert len(margins) == len(logged)
    assert all(math.isclose(v, r["rewards/margins"], rel_tol=1e-5, abs_tol=1e-6) for v, r in zip(margins, logged))


def test_model_card_of_final_states_the_run(tracked) -> None:
    from huggingface_hub import ModelCard

    from dpo_cli.publish.card import cell, num

    card = ModelCard.load(tracked.run / "final" / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "peft" and data["pipeline_tag"] == "text-generation"
    assert "base_model" not in data and "datasets" not in data  # a local model and local files are no Hub ids
    assert {"dpo", "lora", "trl"} <= set(data["tags"])
    s = _sections(card.text)
    summary, info = read_json(tracked.run / "summary.json"), read_json(tracked.run / "run.json")
    assert f"| train | `{ROOT / 'data/sample/train.jsonl'}` | {info['train_rows']} |" in s["Training data"]
    assert f"| eval | `{ROOT / 'data/sample/eval.jsonl'}` | {info['eval_rows']} |" in s["Training data"]
    for row in (
        "| beta | 0.1 |",
        "| learning rate | 0.002 |",
        f"| optimizer steps | {summary['steps']} |",
        "| rank r | 8 |",
        "| target modules | `c_attn, c_proj` |",
        "| loss | `sigmoid` |",
    ):
        assert row in s["Training procedure"], row
    assert f"| held-out reward accuracy | {num(summary['eval_reward_accuracy'])} |" in s["Results"]
    assert f"| held-out loss | {num(summary['eval_loss'])} |" in s["Results"]
    assert all(f"**{f['level']}**: {cell(f['message'])}" in s["Diagnosis"] for f in summary["diagnosis"])
    assert len(re.findall(r"!\[[^\]]*\]\(plots/[a-z_]+\.png\)", s["Plots"])) == 4
    assert f"| trl | `{info['versions']['trl']}` |" in s["Framework versions"]
    assert "dpo train" in s["Reproduce"] and "training.report_to=[tensorboard,trackio]" in s["Reproduce"]
    assert "<details>" in s["Configuration"] and "report_to:" in s["Configuration"]


def test_report_html_is_one_self_contained_page(tracked) -> None:
    html = (tracked.run / "report.html").read_text()
    page = parse_strict(html)
    assert len(page.images) == 4
    for heading in ("Summary", "Diagnosis", "Training curves", "Data", "Settings", "Versions"):
        assert f"<h2>{heading}</h2>" in html
    assert "Evaluation" not in html  # no `dpo eval` yet
    assert "page" in tracked.log and "report.html" in tracked.log  # the summary names it


def test_report_html_renders_in_headless_chromium(tracked, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium here (apt-get install chromium)")
    shot = tmp_path / "report.png"
    argv = [
        browser,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1280,2400",
        f"--screenshot={shot}",
        (tracked.run / "report.html").as_uri(),
    ]
    with (tmp_path / "chromium.log").open("w") as log:
        code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=120, check=False).returncode
    assert code == 0, (tmp_path / "chromium.log").read_text()[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2400)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 200  # text and plots were drawn, not a blank page


def test_dpo_eval_refreshes_the_card_and_the_page(tracked) -> None:
    from huggingface_hub import ModelCard

    from dpo_cli.evaluation.runner import resolve_target, run_eval

    target = resolve_target(tracked.run, model=None, updates={"eval.generate": False})
    (report,) = run_eval([target], overwrite=True, progress=False, echo=lambda _t: None)
    card = ModelCard.load(tracked.run / "final" / "README.md")
    evaluation = _sections(card.text)["Evaluation (`dpo eval`)"]
    accuracy = report["preference"]["policy"]["reward_accuracy"]
    assert "| policy |" in evaluation and f"{accuracy:.3f}" in evaluation
    assert (tracked.run / "final" / "plots" / "eval_preference.png").is_file()
    page = parse_strict((tracked.run / "report.html").read_text())
    assert "Evaluation" in page.text and f"{accuracy:.3f}" in page.text
    assert len(page.images) == 5  # the four curves and the eval's preference plot


def test_merged_model_gets_a_card(tracked, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from dpo_cli.merge.runner import merge_adapter

    out = tmp_path / "merged"
    result = merge_adapter(tracked.run, out, dtype="float32")
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and "merged-lora" in card.data.tags
    merge = _sections(card.text)["Merge"]
    assert f"max abs logit difference {result.max_abs_diff:.3g}" in merge and "`float32`" in merge
    assert f"dpo merge-adapter {tracked.run} --output {out} --dtype float32" in _sections(card.text)["Reproduce"]
    assert "AutoModelForCausalLM" in _sections(card.text)["How to use"]
    assert (out / "plots" / "loss.png").is_file()


class FakeHub:
    """`HfApi.create_repo` / `upload_folder`, recorded instead of sent."""

    def __init__(self) -> None:
        self.repos: list[str] = []
        self.uploads: list[dict] = []

    def create_repo(self, api, repo_id, **kwargs):
        self.repos.append(repo_id)
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, api, *, repo_id, folder_path, run_as_future=False, **kwargs):
        readme = Path(folder_path, "README.md")
        self.uploads.append(
            {
                "repo_id": repo_id,
                "folder": Path(folder_path),
                "path_in_repo": kwargs.get("path_in_repo"),
                "readme": readme.read_text() if readme.is_file() else None,
            }
        )
        info = SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0")
        if run_as_future:
            future: Future = Future()
            future.set_result(info)
            return future
        return info


def test_push_to_hub_pushes_final_with_our_card_last(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import HfApi, ModelCard

    from dpo_cli.train.run import train

    hub = FakeHub()
    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: hub.create_repo(api, repo_id, **kw))
    monkeypatch.setattr(HfApi, "upload_folder", lambda api, **kw: hub.upload_folder(api, **kw))
    cfg = load_config(
        SMOKE,
        smoke_overrides(
            tiny_model_dir,
            tmp_path / "pushed",
            "training.max_steps=4",
            "training.save_steps=2",
            "training.logging_steps=2",
            "training.push_to_hub=true",
            "training.hub_model_id=someone/tiny-dpo",
            "training.hub_strategy=every_save",
        ),
    )
    result = train(cfg)
    assert hub.repos == ["someone/tiny-dpo"]
    *during, last = hub.uploads
    assert during, "the Trainer's checkpoint pushes (hub_strategy: every_save) did not run"
    assert last["folder"] == result.final_dir and last["repo_id"] == "someone/tiny-dpo" and last["path_in_repo"] is None
    assert last["readme"] == (result.final_dir / "README.md").read_text()
    card = ModelCard(last["readme"])
    assert card.data.library_name == "peft" and "## Training procedure" in card.text
    assert "someone/tiny-dpo" in card.text  # title and how-to-use name the repository
    assert all(u["folder"] != result.final_dir for u in during)


def test_push_to_hub_without_a_repository_id_is_named_after_the_run(tmp_path: Path) -> None:
    from dpo_cli.train.trl_args import to_trainer_config

    cfg = load_config(SMOKE, [f"output_dir={tmp_path / 'my-run'}", "training.push_to_hub=true"])
    args = to_trainer_config(cfg, tmp_path / "my-run" / "checkpoints")
    assert args.push_to_hub and args.hub_model_id == "my-run"  # transformers would have said `checkpoints`
