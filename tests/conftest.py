"""Shared fixtures: the offline tiny model, the bundled data, and config helpers."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"

# Nothing in the test suite may reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_script(name: str):
    """Import a module from scripts/ (they are not a package)."""
    path = ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """distilgpt2's architecture, shrunk, with a BPE tokenizer trained offline by our script."""
    out = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    load_script("build_tiny_model").build_tiny_model(out, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_reward_model_dir(tmp_path_factory) -> Path:
    """The same tiny architecture with a scalar head (GPT2ForSequenceClassification)."""
    out = tmp_path_factory.mktemp("models") / "tiny-gpt2-rm"
    load_script("build_tiny_model").build_tiny_model(out, seed=0, kind="seq-cls")
    return out


def smoke_overrides(tiny_model_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """`--set` overrides that point configs/smoke.yaml at the tiny model and a temp run dir."""
    return [
        f"model.name_or_path={tiny_model_dir}",
        f"output_dir={output_dir}",
        f"data.train={SAMPLE / 'train.jsonl'}",
        f"data.eval={SAMPLE / 'eval.jsonl'}",
        *extra,
    ]


# --------------------------------------------------------------------------- child processes
# A child's output goes to files, never to a pipe nobody reads while it runs: a child blocks
# once about 64 KB sit in a pipe, and a long training run or a server writes more than that.


def spawn(argv: list[str], log_dir: Path, name: str, *, combined: bool = False, **kwargs):
    """Start `argv` with its stdout and stderr in `log_dir/<name>.out` / `.err` (one file if `combined`)."""
    import subprocess

    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{name}.out", log_dir / (f"{name}.out" if combined else f"{name}.err")
    with out_path.open("w") as out, out if combined else err_path.open("w") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT if combined else err, **kwargs)
    proc.out_path, proc.err_path = out_path, err_path  # type: ignore[attr-defined]
    return proc


def output(proc) -> tuple[str, str]:
    """What a `spawn`ed child wrote so far: (stdout, stderr); the same text twice when `combined`."""
    read = lambda path: path.read_text(errors="replace") if path.exists() else ""
    return read(proc.out_path), read(proc.err_path)


def run_logged(argv: list[str], log_dir: Path, name: str, *, timeout: float | None = None, **kwargs):
    """`subprocess.run` with the output in files (see `spawn`), read back into the result."""
    import subprocess

    proc = spawn(argv, log_dir, name, **kwargs)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    stdout, stderr = output(proc)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
