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
