"""`dpo plan` and `dpo doctor` through the CLI: tables, exit codes, no torch, no weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dpo_cli.cli.main import app
from dpo_cli.errors import EXIT_DOES_NOT_FIT

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_mistral_plans_for_8x80gb_offline_without_torch(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # In a fresh process: the test session may already hold torch from other tests.
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from dpo_cli.cli.main import app\n"
        "r = CliRunner().invoke(app, ['plan', 'configs/mistral.yaml', '--gpus', '8', '--gpu-memory', '80GiB'])\n"
        "print(r.output)\n"
        "print('TORCH_LOADED', 'torch' in sys.modules, 'EXIT', r.exit_code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    out = proc.stdout
    assert "TORCH_LOADED False EXIT 0" in out, proc.stderr
    assert "memory per GPU (8 GPUs)" in out
    assert "base weights, 4-bit (frozen)" in out and "ZeRO-3 / 8" in out
    assert "of 80.0 GiB per GPU" in out and "verdict: fits" in out
    assert "PFLOP per step" in out and "s per step" in out


FULL_7B_ON_ONE_24GB = [
    "plan",
    str(ROOT / "configs" / "mistral.yaml"),
    "--gpus",
    "1",
    "--gpu-memory",
    "24GiB",
    "--set",
    "quantization=null",
    "--set",
    "lora=null",
    "--set",
    "launch.deepspeed=null",
    "--set",
    "launch.num_processes=1",
    "--set",
    "training.precompute_ref_log_probs=false",
]


def test_plan_that_does_not_fit_prints_suggestions_and_exits_3():
    result = runner.invoke(app, FULL_7B_ON_ONE_24GB)
    assert result.exit_code == EXIT_DOES_NOT_FIT == 3, result.output
    assert "does NOT fit" in result.output
    assert "suggestions" in result.output and "--set training.precompute_ref_log_probs=true" in result.output


def test_plan_json_gives_the_figures_and_the_same_exit_code():
    result = runner.invoke(app, [*FULL_7B_ON_ONE_24GB, "--json"])
    assert result.exit_code == 3, result.output
    plan = json.loads(result.stdout)
    assert plan["fits"] is False and plan["gpus"] == 1 and plan["gpu_memory_gib"] == 24.0
    assert plan["total_gib"] > 24 and plan["headroom_gib"] == pytest.approx(24 - plan["total_gib"], abs=0.01)
    assert plan["total_bytes"] == pytest.approx(sum(r["gpu_bytes"] for r in plan["memory"]), rel=1e-6)
    assert {r["label"] for r in plan["memory"]} >= {"weights", "gradients", "optimizer states"}
    assert plan["model"]["layers"] == 32 and plan["compute"]["seconds_per_step"] > 0
    assert any("training.precompute_ref_log_probs=true" in s["overrides"] for s in plan["suggestions"])

    fits = runner.invoke(app, ["plan", str(ROOT / "configs" / "mistral.yaml"), "--gpus", "8", "--json"])
    assert fits.exit_code == 0, fits.output
    assert json.loads(fits.stdout)["fits"] is True


def test_plan_help_documents_the_exit_codes():
    result = runner.invoke(app, ["plan", "--help"])
    assert "3 it does not fit" in " ".join(result.output.split())


def test_plan_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("output_dir: x\nmodel: {name_or_path: nobody/unknown-model}\ndata: {train: t.jsonl}\n")
    result = runner.invoke(app, ["plan", str(cfg)])
    assert result.exit_code == 2
    assert "nobody/unknown-model: could not read its config.json" in result.output
    assert "--model-config" in result.output and "Traceback" not in result.output
    bad = runner.invoke(app, ["plan", str(ROOT / "configs" / "mistral.yaml"), "--gpu-memory", "huge"])
    assert bad.exit_code == 2 and "expected a size" in bad.output


def test_plan_with_explicit_model_config(tmp_path):
    config_json = tmp_path / "config.json"
    config_json.write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": 256,
                "num_hidden_layers": 4,
                "num_attention_heads": 4,
                "intermediate_size": 512,
                "vocab_size": 1000,
            }
        )
    )
    result = runner.invoke(app, ["plan", str(ROOT / "configs" / "mistral.yaml"), "--model-config", str(config_json)])
    assert result.exit_code == 0, result.output
    assert str(config_json) in result.output and "4 layers, hidden 256" in result.output
