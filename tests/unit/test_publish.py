"""Model card and report.html from a run directory shaped like `dpo train` leaves it (no torch)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from dpo_cli.config.loader import load_config
from dpo_cli.publish import refresh_run_documents
from dpo_cli.publish.card import code, write_merged_card
from dpo_cli.publish.record import provenance, redact
from dpo_cli.train.plots import write_plots
from tests.conftest import ROOT
from tests.html_check import parse_strict

HOSTILE = "<script>alert('x')</script>"
SECRET = "hf_NotARealTokenButSecret123"
CONFIG = f"""\
output_dir: {{out}}
model:
  name_or_path: HuggingFaceTB/SmolLM2-135M-Instruct
lora:
  r: 16
  lora_alpha: 32
  target_modules: [q_proj, v_proj]
data:
  train: trl-lib/ultrafeedback_binarized
  eval_fraction: 0.1
training:
  beta: 0.05
  learning_rate: 5.0e-6
  max_steps: 30
  run_name: "{HOSTILE}"
  hub_token: {SECRET}
{{extra}}"""


def _records(steps: int = 30) -> list[dict]:
    """Metrics as TRL 1.16 logs them through `MetricsWriter` (train every 5 steps, one final eval)."""
    out = []
    for step in [1, *range(5, steps + 1, 5)]:
        progress = step / steps
        out.append(
            {
                "loss": math.log(2) - 0.2 * progress,
                "grad_norm": 3.1 - progress,
                "learning_rate": 5e-6 * (1 - progress),
                "rewards/chosen": 0.3 * progress,
                "rewards/rejected": -0.2 * progress,
                "rewards/accuracies": 0.5 + 0.4 * progress,
                "rewards/margins": 0.5 * progress,
                "logps/chosen": -180.0 + progress,
                "logps/rejected": -190.0 - 3 * progress,
                "logits/chosen": -1.2,
                "logits/rejected": -1.3,
                "epoch": progress,
                "step": step,
                "time": 1.0 * step,
            }
        )
    out.append(
        {
            "eval_loss": 0.61,
            "eval_rewards/chosen": 0.25,
            "eval_rewards/rejected": -0.12,
            "eval_rewards/accuracies": 0.78,
            "eval_rewards/margins": 0.37,
            "eval_logps/chosen": -181.0,
            "eval_logps/rejected": -192.5,
            "epoch": 1.0,
            "step": steps,
            "time": 40.0,
        }
    )
    return out


def make_run(tmp_path: Path, name: str = "smol-dpo", *, data_check: dict | None = None, extra: str = "") -> Path:
    run = tmp_path / name
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text(CONFIG.format(out=run, extra=extra))
    cfg = load_config(run / "config.yaml")
    records = _records()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plots = write_plots(records, run / "plots", expected_loss=math.log(2))
    (run / "final" / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 16}')
    (run / "final" / "README.md").write_text(
        "---\nlibrary_name: peft\n---\n# Model Card for Model ID\n[More Information Needed]\n"
    )
    trainer_args = SimpleNamespace(
        beta=0.05,
        loss_type=["sigmoid"],
        loss_weights=None,
        label_smoothing=0.0,
        learning_rate=5e-6,
        lr_scheduler_type="linear",
        warmup_steps=0,
        num_train_epochs=3.0,
        max_steps=30,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        world_size=2,
        max_length=1024,
        optim="adamw_torch_fused",
        bf16=True,
        fp16=False,
        seed=42,
        push_to_hub=False,
    )
    summary = {
        "steps": 30,
        "initial_loss": records[0]["loss"],
        "final_loss": records[-2]["loss"],
        "final_train_reward_accuracy": 0.9,
        "eval_loss": 0.61,
        "eval_reward_accuracy": 0.78,
        "eval_reward_margin": 0.37,
        "mode": "lora",
        "expected_initial_loss": math.log(2),
        "final_dir": str(run / "final"),
        "plots": [str(p) for p in plots],
        "diagnosis": [
            {"level": "ok", "message": "first loss 0.6931 matches the expected 0.6931"},
            {"level": "warning", "message": "chosen <b>and</b> rejected rewards are both falling"},
        ],
        "provenance": provenance(cfg, trainer_args, config_path="configs/smol.yaml", overrides=["training.beta=0.05"]),
    }
    (run / "summary.json").write_text(json.dumps(summary))
    info = {
        "status": "completed",
        "started": "2026-01-02T03:04:05",
        "finished": "2026-01-02T03:14:05",
        "train_rows": 360,
        "eval_rows": 40,
        "data_format": "conversational",
        "versions": {"python": "3.11.7", "trl": "1.16.0", "transformers": "5.24.0", "peft": "0.21.2"},
    }
    if data_check is not None:  # what `dpo train` records of its data check (dpo_cli.validation.DataCheck.summary)
        info["data"] = {"sources": {}, "check": data_check}
    (run / "run.json").write_text(json.dumps(info))
    return run


def sections(markdown: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    check = {
        "train": {
            "rows": 403,
            "kept": 400,
            "dropped": 3,
            "sources": [],
            "dropped_by": {"empty response": 2, "chosen equals rejected": 1},
        }
    }
    run = make_run(tmp_path, data_check=check)
    refresh_run_documents(run)
    return run


def test_card_metadata_is_valid_hub_metadata(run_dir: Path) -> None:
    from huggingface_hub import ModelCard

    card = ModelCard.load(run_dir / "final" / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert data["base_model_relation"] == "adapter"
    assert data["datasets"] == ["trl-lib/ultrafeedback_binarized"]
    assert data["library_name"] == "peft" and data["pipeline_tag"] == "text-generation"
    assert {"dpo", "lora", "trl", "dpo-cli"} <= set(data["tags"])
    assert "More Information Needed" not in card.text  # PEFT's template is gone


def test_card_states_every_fact(run_dir: Path) -> None:
    from huggingface_hub import ModelCard

    text = ModelCard.load(run_dir / "final" / "README.md").text
    s = sections(text)
    assert "`HuggingFaceTB/SmolLM2-135M-Instruct`" in s["Base model"]
    assert "the base model (adapter disabled)" in s["Base model"]
    data = s["Training data"]
    assert (
        "| train | `trl-lib/ultrafeedback_binarized`" in data
        and "| 360 | 3 (2 empty response, 1 chosen equals rejected)" in data
    )
    assert (
        "| eval | `trl-lib/ultrafeedback_binarized` | 40 | not recorded | held out from train: 0.1 of its rows (seed 42) |"
        in data
    )
    proc = s["Training procedure"]
    for row in (
        "| algorithm | DPO (TRL) |",
        "| loss | `sigmoid` |",
        "| beta | 0.05 |",
        "| learning rate | 5e-06 |",
        "| optimizer steps | 30 |",
        "4 per device x 2 accumulation x 2 process(es) = 16 pairs per step",
        "| mixed precision | bf16 |",
        "| rank r | 16 |",
        "| lora_alpha | 32 |",
        "| target modules | `q_proj, v_proj` |",
    ):
        assert row in proc, row
    results = s["Results"]
    assert "| held-out reward accuracy | 0.78 |" in results and "| held-out pairs | 40 |" in results
    assert "| held-out reward margin | 0.37 |" in results and "closed form at step 0: 0.6931" in results
    assert "**warning**: chosen &lt;b&gt;and&lt;/b&gt; rejected" in s["Diagnosis"]  # text, never markup
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", s["Plots"])
    assert images == ["plots/loss.png", "plots/reward_margins.png", "plots/reward_accuracy.png", "plots/rewards.png"]
    assert all((run_dir / "final" / p).is_file() for p in images)  # copied beside the card, for the Hub
    assert "dpo train configs/smol.yaml --set training.beta=0.05" in s["Reproduce"]
    assert "| trl | `1.16.0` |" in s["Framework versions"] and "| dpo-cli |" in s["Framework versions"]
    assert "AutoPeftModelForCausalLM" in s["How to use"]


def test_card_config_is_collapsed_and_redacted(run_dir: Path) -> None:
    text = (run_dir / "final" / "README.md").read_text()
    details = re.search(r"<details>.*?```yaml\n(.*?)\n```.*?</details>", text, re.DOTALL)
    assert details, "the resolved config is not in a <details> block"
    shown = yaml.safe_load(details.group(1))
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert shown["training"]["hub_token"] == "<redacted>"
    assert shown == redact(saved)
    assert SECRET not in text and SECRET not in (run_dir / "report.html").read_text()


def test_report_html_is_self_contained_and_escapes_config_values(run_dir: Path) -> None:
    html = (run_dir / "report.html").read_text()
    page = parse_strict(html)
    assert len(page.images) == 4  # the four training curves, embedded
    assert HOSTILE in page.text and "script" not in page.tags  # shown as text, never run
    assert "chosen <b>and</b> rejected" in page.text and "b" not in page.tags
    assert not re.search(r"https?://", html.replace(HOSTILE, ""))
    for heading in ("Summary", "Diagnosis", "Training curves", "Data", "Settings", "Versions"):
        assert f"<h2>{heading}</h2>" in html
    assert "360" in page.text and "2 empty response" in page.text


def test_card_without_row_counts_or_hub_ids_degrades(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    run = make_run(tmp_path)
    config = (run / "config.yaml").read_text().replace("HuggingFaceTB/SmolLM2-135M-Instruct", str(tmp_path))
    (run / "config.yaml").write_text(
        config.replace("trl-lib/ultrafeedback_binarized", str(ROOT / "data/sample/train.jsonl"))
    )
    summary = json.loads((run / "summary.json").read_text())
    summary.pop("provenance")  # a run from before the card existed
    (run / "summary.json").write_text(json.dumps(summary))
    refresh_run_documents(run)
    card = ModelCard.load(run / "final" / "README.md")
    assert "base_model" not in card.data.to_dict() and "datasets" not in card.data.to_dict()
    assert "| 360 | not recorded |" in sections(card.text)["Training data"]
    parse_strict((run / "report.html").read_text())


def test_sweep_point_cards_name_the_choice(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for name in ("beta_0.05", "beta_0.1"):
        make_run(sweep, name)
    points = {
        "beta_0.05": {"beta": 0.05, "status": "completed", "reward_accuracy": 0.78},
        "beta_0.1": {"beta": 0.1, "status": "completed", "reward_accuracy": 0.7},
    }
    (sweep / "sweep.json").write_text(
        json.dumps(
            {
                "points": points,
                "winner": "beta_0.05",
                "swept": "`training.beta`",
                "rule": "highest held-out reward_accuracy",
            }
        )
    )
    for name in points:
        refresh_run_documents(sweep / name)
    chosen = sections((sweep / "beta_0.05" / "final" / "README.md").read_text())["Selection (`dpo sweep-beta`)"]
    assert "the point `dpo sweep-beta` chose among 2" in chosen and "| **beta_0.05** (chosen) |" in chosen
    other = (sweep / "beta_0.1" / "final" / "README.md").read_text()
    assert "the chosen point is `beta_0.05`" in other
    assert "beta_0.05" in parse_strict((sweep / "beta_0.1" / "report.html").read_text()).text


def test_card_of_a_merged_bare_adapter(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    (tmp_path / "merge_info.json").write_text(
        json.dumps(
            {
                "adapter": "/x/my-adapter",
                "base": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "dtype": "bfloat16",
                "forced": False,
                "verification": {
                    "prompts": 3,
                    "max_abs_diff": 0.5,
                    "mean_abs_diff": 0.01,
                    "tolerance": 4.0,
                    "adapter_effect": 2.5,
                },
            }
        )
    )
    card = ModelCard.load(
        write_merged_card(tmp_path, run_dir=None, merge_command="dpo merge-adapter /x/my-adapter -o out")
    )
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.library_name == "transformers"
    merge = sections(card.text)["Merge"]
    assert "max abs logit difference 0.5" in merge and "(tolerance 4.0)" in merge and "`bfloat16`" in merge


def test_code_spans_survive_backticks_and_pipes() -> None:
    assert code("a|b") == "`a\\|b`"
    assert code("x `y` z") == "``x `y` z``"


def test_sweep_plot_ticks_sit_at_the_swept_values() -> None:
    from dpo_cli.sweep.report import sweep_figure

    rows = [
        {
            "point": f"beta_{b}",
            "beta": b,
            "status": "completed",
            "reward_accuracy": 0.6 + b / 10,
            "logp_margin": 1.0 + b,
            "chosen_logp_shift": -b,
        }
        for b in (0.2, 0.3, 0.4)
    ]
    fig = sweep_figure(rows)
    for ax in fig.axes:
        fig.canvas.draw()
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0.2", "0.3", "0.4"]
        assert [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()] == []
        assert list(ax.get_xticks()) == [0.2, 0.3, 0.4]


def test_publishing_imports_no_training_library(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    code_ = (
        "import sys\n"
        "from dpo_cli.publish import refresh_run_documents\n"
        f"refresh_run_documents({str(run)!r})\n"
        "print(','.join(m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code_], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


class FakeHub:
    """`HfApi.create_repo` / `upload_folder`, recorded instead of sent."""

    def __init__(self, monkeypatch) -> None:
        from huggingface_hub import HfApi

        self.calls: list[tuple] = []
        monkeypatch.setattr(HfApi, "create_repo", self.create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", self.upload_folder)

    # Bound methods set on the class are not re-bound: they are called without the HfApi instance.
    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create", repo_id, kwargs.get("private")))
        return SimpleNamespace(repo_id=repo_id if "/" in repo_id else f"someone/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        self.calls.append(("upload", repo_id, Path(folder_path), Path(folder_path, "README.md").read_text()))


def test_sweep_pushes_the_chosen_point_last(tmp_path: Path, monkeypatch) -> None:
    from dpo_cli.sweep.runner import finish

    hub = FakeHub(monkeypatch)
    sweep = tmp_path / "sweep"
    for name in ("beta_0.05", "beta_0.1"):
        make_run(sweep, name, extra="  push_to_hub: true\n  hub_private_repo: true\n")
    points = {
        "beta_0.05": {"beta": 0.05, "status": "completed", "reward_accuracy": 0.6, "reward_margin": 0.2},
        "beta_0.1": {"beta": 0.1, "status": "completed", "reward_accuracy": 0.8, "reward_margin": 0.3},
    }
    result = finish(sweep, points, load_config(sweep / "beta_0.1" / "config.yaml").sweep)
    assert result.winner["point"] == "beta_0.1"
    (create, upload) = hub.calls
    assert create == ("create", "beta_0.1", True)  # no hub_model_id: named after the run, not `checkpoints`
    assert upload[:3] == ("upload", "someone/beta_0.1", sweep / "beta_0.1" / "final")
    assert "the point `dpo sweep-beta` chose among 2" in upload[3]  # the card with its Selection section
    parse_strict((sweep / "report.html").read_text())


def test_a_failed_push_says_the_run_is_safe(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    from dpo_cli.errors import DpoError
    from dpo_cli.publish.hub import push_run

    def offline(api, repo_id, **kwargs):
        raise OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled.")

    monkeypatch.setattr(HfApi, "create_repo", offline)
    run = make_run(tmp_path, extra="  push_to_hub: true\n  hub_model_id: someone/smol-dpo\n")
    with pytest.raises(DpoError) as info:
        push_run(run)
    assert (
        info.value.message
        == "push to the Hub (someone/smol-dpo) failed: Cannot reach https://huggingface.co: offline mode is enabled."
    )
    assert info.value.details == [
        f"the run is complete in {run}",
        f"push it again with: hf upload someone/smol-dpo {run / 'final'} .",
    ]
