"""`algorithm:` on the command line: config errors name the right TRL config class, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from dpo_cli.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_wrong_key_for_the_algorithm_is_a_usage_error() -> None:
    orpo = ROOT / "configs" / "variants" / "orpo.yaml"
    result = runner.invoke(app, ["train", str(orpo), "--set", "training.loss_type=ipo"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "--set training.loss_type=ipo: training.loss_type" in result.stderr
    assert "ORPOConfig" in result.stderr and "`algorithm: dpo`" in result.stderr


def test_config_show_of_a_reference_free_algorithm() -> None:
    result = runner.invoke(app, ["config", "show", str(ROOT / "configs" / "variants" / "simpo.yaml")])
    assert result.exit_code == 0, result.output
    assert "algorithm: simpo" in result.output and "kind: none" in result.output
