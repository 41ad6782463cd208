"""`dpo train` and `dpo sweep-beta` refuse a tracker that is not installed before anything loads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dpo_cli.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    # A model that does not exist: reaching the model (or its tokenizer) would fail with another message.
    path = tmp_path / "c.yaml"
    path.write_text(
        f"output_dir: {tmp_path / 'run'}\nmodel: {{name_or_path: nobody/not-a-model}}\n"
        f"data: {{train: {ROOT / 'data/sample/train.jsonl'}, eval: {ROOT / 'data/sample/eval.jsonl'}}}\n"
        "training: {report_to: [tensorboard]}\n"
    )
    return path


@pytest.mark.parametrize("verb", ["train", "sweep-beta"])
def test_missing_tracker_stops_before_the_model_loads(verb: str, config: Path, tmp_path: Path, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("tensorboard") else real(name, *a)
    )
    result = runner.invoke(app, [verb, str(config)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: training.report_to: `tensorboard` needs the `tensorboard` package, which is not installed: "
        + "pip install 'dpo-cli[tracking]' (or pip install tensorboard)"
    ]
    assert not (tmp_path / "run").exists()


def test_unknown_tracker_is_a_usage_error(config: Path) -> None:
    result = runner.invoke(app, ["train", str(config), "--set", "training.report_to=wandbb"])
    assert result.exit_code == 2
    assert "`wandbb` is not a tracker transformers knows; did you mean `wandb`?" in result.output
    assert "Traceback" not in result.output
