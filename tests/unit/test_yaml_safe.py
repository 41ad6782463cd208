"""Hostile YAML: alias bombs are refused before anything expands them, under any key (issue 15, item 7)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dpo_cli.config.loader import load_config
from dpo_cli.config.yaml_safe import MAX_VALUES, expanded_size, load_yaml
from dpo_cli.errors import ConfigError
from tests.conftest import ROOT

HEAD = "output_dir: runs/x\nmodel: {name_or_path: m}\ndata: {train: t.jsonl}\n"


def bomb(levels: int = 9, width: int = 9, indent: str = "    ") -> str:
    """`levels` lines that stand for width**levels values."""
    lines = [f"{indent}a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"{indent}a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def load_in_a_capped_process(path: Path, *set_args: str) -> subprocess.CompletedProcess:
    """`dpo config show` in a child limited to 2 GiB and 60 s, so an unguarded expansion cannot hurt the machine."""
    code = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from typer.testing import CliRunner
        from dpo_cli.cli.main import app
        r = CliRunner().invoke(app, ["config", "show", {str(path)!r}, *{list(set_args)!r}])
        print(r.output)
        sys.exit(r.exit_code)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )


@pytest.mark.parametrize(
    "key", ["lr_scheduler_kwargs", "model_init_kwargs_unknown_typo", "gradient_checkpointing_kwargs"]
)
def test_an_alias_bomb_is_refused_under_any_training_key(tmp_path: Path, key: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(f"{HEAD}training:\n  {key}:\n{bomb()}")
    done = load_in_a_capped_process(path)
    assert done.returncode == 2, (done.stdout + done.stderr)[-2000:]
    assert "expands to more than 100,000 values through aliases" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_an_alias_bomb_in_a_set_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(HEAD)
    value = (
        "{"
        + ", ".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9) if i else ', '.join(['x'] * 9)}]" for i in range(9))
        + "}"
    )
    done = load_in_a_capped_process(path, "--set", f"training.lr_scheduler_kwargs={value}")
    assert done.returncode == 2, (done.stdout + done.stderr)[-2000:]
    assert "--set training.lr_scheduler_kwargs=" in done.stdout and "through aliases" in done.stdout


def test_counting_is_linear_in_distinct_nodes() -> None:
    import yaml

    root = yaml.compose(f"top:\n{bomb(levels=30, width=2, indent='  ')}")
    assert expanded_size(root) == MAX_VALUES + 1  # stopped at the cap, not after 2**30 visits
    assert expanded_size(yaml.compose("a: &x [1, 2]\nb: *x\n")) == 9


def test_ordinary_anchors_merge_keys_and_python_tags() -> None:
    data, _ = load_yaml("base: &b {r: 8, alpha: 16}\nlora:\n  <<: *b\n  r: 16\n")
    assert data["lora"] == {"r": 16, "alpha": 16}
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_yaml("x: !!python/object/apply:os.system ['echo pwned']\n", "evil.yaml")
    with pytest.raises(ConfigError, match="recursive"):
        load_yaml("a: &a [1, *a]\n")


def test_a_huge_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(HEAD + "# " + "x" * (5 << 20) + "\n")
    with pytest.raises(ConfigError, match="a config is at most"):
        load_config(path)
