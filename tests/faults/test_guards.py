"""What must be refused before a run touches anything: a live run reached through a symlink, an
`--overwrite` that would delete what is not the run's, an alias bomb, a model that needs remote code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dpo_cli.cli.main import app
from dpo_cli.rundir import run_lock
from tests.conftest import ROOT
from tests.faults.conftest import cli_args, snapshot

pytestmark = pytest.mark.integration
runner = CliRunner()


def test_a_live_run_is_found_through_a_symlink_and_left_alone(
    reference_run: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Before the fix the second run, on a symlink to the live one, deleted its checkpoints and exited 0."""
    live = tmp_path / "runs" / "a"
    shutil.copytree(reference_run, live)
    link = tmp_path / "link"
    link.symlink_to(live, target_is_directory=True)
    before = snapshot(live)
    with run_lock(live):  # the live run holds its lock, as `dpo train` does for its whole life
        result = runner.invoke(app, cli_args(tiny_model_dir, link, "--overwrite"))
    assert result.exit_code == 2, result.output[-2000:]
    assert f"error: {link}: in use by another dpo process" in result.stderr
    assert f"it is the same folder as {live}" in result.stderr
    assert snapshot(live) == before


def test_overwrite_of_a_real_run_refuses_foreign_files_then_replaces_only_its_own(
    reference_run: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "X"
    shutil.copytree(reference_run, run)
    (run / "notes.txt").write_text("mine")
    before = snapshot(run)
    refused = runner.invoke(app, cli_args(tiny_model_dir, run, "--overwrite"))
    assert refused.exit_code == 2 and "notes.txt: not a file dpo writes" in refused.stderr
    assert snapshot(run) == before

    (run / "notes.txt").unlink()
    (run / "launch").mkdir()
    (run / "launch" / "accelerate.yaml").write_text("kept: true\n")
    (run / "metrics.jsonl").write_text('{"step": 99, "loss": 9.9}\n')  # a record only the old run had
    replaced = runner.invoke(app, cli_args(tiny_model_dir, run, "--overwrite"))
    assert replaced.exit_code == 0, replaced.output[-3000:]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert '"step": 99' not in (run / "metrics.jsonl").read_text()
    assert (run / "launch" / "accelerate.yaml").read_text() == "kept: true\n"
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir()) == ["checkpoint-6"]


def test_an_alias_bomb_in_a_run_config_is_refused_before_anything_loads(tmp_path: Path) -> None:
    config = tmp_path / "bomb.yaml"
    lines = ["      a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"      a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    config.write_text(
        (ROOT / "configs" / "smoke.yaml").read_text() + "  lr_scheduler_kwargs:\n    bomb:\n" + "\n".join(lines) + "\n"
    )
    code = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from typer.testing import CliRunner
        from dpo_cli.cli.main import app
        r = CliRunner().invoke(app, ["train", {str(config)!r}, "--set", "output_dir={tmp_path / "run"}"])
        print(r.output)
        sys.exit(r.exit_code)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )
    assert done.returncode == 2, (done.stdout + done.stderr)[-2000:]
    assert "through aliases" in done.stdout and "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "run").exists()


def test_a_model_that_needs_remote_code_names_the_setting(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Before the fix: a transformers traceback."""
    model = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["model_type"] = "dpo-test-custom"
    config["auto_map"] = {
        "AutoConfig": "configuration_custom.CustomConfig",
        "AutoModelForCausalLM": "modeling_custom.CustomModel",
    }
    (model / "config.json").write_text(json.dumps(config))
    (model / "configuration_custom.py").write_text(
        "from transformers import PretrainedConfig\n\n\nclass CustomConfig(PretrainedConfig):\n"
        "    model_type = 'dpo-test-custom'\n"
    )
    out = tmp_path / "run"
    args = cli_args(tiny_model_dir, out)
    args[args.index(f"model.name_or_path={tiny_model_dir}")] = f"model.name_or_path={model}"
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output[-3000:]
    assert "needs its own Python code" in result.stderr and "`model.trust_remote_code: true`" in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()
