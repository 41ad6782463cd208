"""`dpo plan` and `dpo doctor` through the CLI: tables, exit codes, no torch, no weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from dpo_cli.cli.main import app

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
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    out = proc.stdout
    assert "TORCH_LOADED False EXIT 0" in out, proc.stderr
    assert "memory per GPU (8 GPUs)" in out
    assert "base weights, 4-bit (frozen)" in out and "ZeRO-3 / 8" in out
    assert "of 80.0 GiB per GPU" in out and "verdict: fits" in out
    assert "PFLOP per step" in out and "s per step" in out


def test_plan_that_does_not_fit_prints_suggestions():
    result = runner.invoke(app, [
        "plan", str(ROOT / "configs" / "mistral.yaml"), "--gpus", "1", "--gpu-memory", "24GiB",
        "--set", "quantization=null", "--set", "lora=null", "--set", "launch.deepspeed=null", "--set", "launch.num_processes=1",
        "--set", "training.precompute_ref_log_probs=false",
    ])
    assert result.exit_code == 0, result.output
    assert "does NOT fit" in result.output
    assert "suggestions" in result.output and "--set training.precompute_ref_log_probs=true" in result.output


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
    config_json.write_text(json.dumps({"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 4,
                                       "num_attention_heads": 4, "intermediate_size": 512, "vocab_size": 1000}))
    result = runner.invoke(app, ["plan", str(ROOT / "configs" / "mistral.yaml"), "--model-config", str(config_json)])
    assert result.exit_code == 0, result.output
    assert str(config_json) in result.output and "4 layers, hidden 256" in result.output
