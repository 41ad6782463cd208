"""Every config check that mirrors a TRL (or transformers) rule is backed by TRL itself.

dpo checks these at config time, so that a bad value fails in a second instead of minutes into a
run, after the model loaded. Each case builds the real TRL config class, or the real trainer on
the tiny model, with the offending values, so that a TRL release that drops or changes a rule
fails here and the copy in `dpo_cli/config/rules.py` is revisited.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dpo_cli.config.loader import apply_override
from dpo_cli.config.rules import cross_field_problems
from dpo_cli.config.variants import run_config_class

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "train.jsonl"


def unchecked(tmp_path: Path, model: str, *overrides: str) -> Any:
    """The config typed by pydantic but not through dpo's cross-field rules (what TRL would get)."""
    raw: dict[str, Any] = {
        "output_dir": str(tmp_path / "run"),
        "model": {"name_or_path": model},
        "data": {"train": str(SAMPLE), "max_train_samples": 8, "eval": None},
        "training": {"use_cpu": True, "max_length": 64, "per_device_train_batch_size": 2},
    }
    for override in overrides:
        apply_override(raw, override)
    return run_config_class(raw.get("algorithm", "dpo")).model_validate(raw)


def dpo_reports(cfg: Any, fragment: str) -> None:
    problems = cross_field_problems(cfg)
    assert any(fragment in p for p in problems), problems


# (dpo's overrides, a phrase of dpo's message, what TRL raises when its config class is built)
CONFIG_RULES = [
    pytest.param(("training.bf16=true", "training.fp16=true"), "both true", ValueError, id="bf16-and-fp16"),
    pytest.param(
        ("training.loss_type=[sigmoid, sft]", "training.loss_weights=[1.0]"),
        "loss_weights",
        ValueError,
        id="loss-weights-length",
    ),
    pytest.param(
        ("algorithm=orpo", "training.precompute_ref_log_probs=true"),
        "no reference model",
        TypeError,
        id="orpo-precompute",
    ),
    pytest.param(
        ("algorithm=cpo", "training.precompute_ref_log_probs=true"),
        "no reference model",
        TypeError,
        id="cpo-precompute",
    ),
]


@pytest.mark.parametrize(("overrides", "fragment", "raised"), CONFIG_RULES)
def test_config_rules_are_trls(tmp_path: Path, overrides: tuple[str, ...], fragment: str, raised: type) -> None:
    from dpo_cli.config.algorithms import algorithm_of
    from dpo_cli.train.trl_args import trainer_config_kwargs

    cfg = unchecked(tmp_path, "unused", *overrides)
    dpo_reports(cfg, fragment)
    with pytest.raises(raised):
        algorithm_of(cfg).config_class()(**trainer_config_kwargs(cfg, tmp_path / "checkpoints"))


def test_alphapo_zeroes_cpo_alpha_in_trl_too(tmp_path: Path) -> None:
    # TRL does not raise here: it silently sets cpo_alpha to 0, which is why dpo says so instead.
    from trl.experimental.cpo import CPOConfig

    cfg = unchecked(tmp_path, "unused", "algorithm=cpo", "training.loss_type=alphapo", "training.cpo_alpha=1.0")
    dpo_reports(cfg, "sets `cpo_alpha` to 0")
    assert CPOConfig(output_dir=str(tmp_path), use_cpu=True, loss_type="alphapo", cpo_alpha=1.0).cpo_alpha == 0.0


# Rules TRL enforces only when the trainer is built (after the model loaded).
TRAINER_RULES = [
    pytest.param(("training.loss_type=exo_pair",), "label_smoothing", id="exo-pair-needs-smoothing"),
    pytest.param(
        ("training.loss_type=apo_zero", "training.f_divergence_type=js_divergence"),
        "f_divergence_type",
        id="f-divergence-losses",
    ),
    pytest.param(("training.loss_type=aot", "training.use_weighting=true"), "use_weighting", id="wpo-and-aot"),
    pytest.param(("training.sync_ref_model=true",), "not supported with LoRA", id="sync-ref-with-lora"),
    pytest.param(
        ("algorithm=kto", "data.unpair=true", "training.per_device_train_batch_size=1"),
        "batch_size` > 1",
        id="kto-batch-of-one",
    ),
    pytest.param(
        ("algorithm=kto", "data.unpair=true", "training.train_sampling_strategy=random"),
        "KL estimate",
        id="kto-sequential",
    ),
]


@pytest.mark.parametrize(("overrides", "fragment"), TRAINER_RULES)
def test_trainer_rules_are_trls(
    tiny_model_dir: Path, tmp_path: Path, overrides: tuple[str, ...], fragment: str
) -> None:
    from dpo_cli.train.trainer import build_trainer

    lora = ("lora.r=4", "lora.lora_alpha=8", "lora.target_modules=[c_attn]")
    cfg = unchecked(tmp_path, str(tiny_model_dir), *lora, *overrides)
    dpo_reports(cfg, fragment)
    with pytest.raises((ValueError, NotImplementedError)):
        build_trainer(cfg, tmp_path / "metrics.jsonl")


def test_the_same_trainer_builds_without_the_offending_values(tiny_model_dir: Path, tmp_path: Path) -> None:
    # The counterpart of the cases above: their errors come from the values under test.
    from dpo_cli.train.trainer import build_trainer

    lora = ("lora.r=4", "lora.lora_alpha=8", "lora.target_modules=[c_attn]")
    for algorithm in ("dpo", "kto"):
        cfg = unchecked(
            tmp_path / algorithm,
            str(tiny_model_dir),
            *lora,
            f"algorithm={algorithm}",
            *(["data.unpair=true"] if algorithm == "kto" else []),
        )
        assert cross_field_problems(cfg) == []
        assert build_trainer(cfg, tmp_path / f"{algorithm}.jsonl").trainer is not None
