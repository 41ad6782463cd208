"""Held-out preference metrics without generation, computed by TRL exactly as in training.

The trainer is built by `dpo_cli.train.trainer.build_trainer`, the same function `dpo train`
uses: same data, tokenizer, chat template, truncation, beta and loss. Before the trained
weights are loaded the policy *is* the reference (a fresh LoRA adapter is zero, a full model
is its own starting point), so `DPOTrainer.evaluate()` at that moment gives the reference
row; after loading the trained weights it gives the policy row. The numbers are therefore
the ones training's own eval would log for these weights.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_cli.errors import EXIT_USAGE, DpoError

if TYPE_CHECKING:
    from dpo_cli.config.schema import RunConfig

# TRL's eval keys (without `eval_`) -> report names.
METRICS = {
    "rewards/accuracies": "reward_accuracy",
    "rewards/margins": "reward_margin",
    "loss": "dpo_loss",
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
    "logps/chosen": "logp_chosen",
    "logps/rejected": "logp_rejected",
}


def preference_metrics(cfg: RunConfig, weights: Path) -> dict[str, dict[str, float]]:
    """Implicit-reward metrics of the reference and of the trained weights on the eval split.

    Args:
        cfg: The run's config (its `data`, `training.beta`, `loss_type`, `max_length` apply).
        weights: A LoRA adapter directory or a full model directory.

    Returns:
        `{"reference": {...}, "policy": {...}}`, each with `reward_accuracy` (share of pairs
        whose chosen reward is strictly above the rejected one: the reference ties every pair,
        so it scores 0), `reward_margin`, `dpo_loss`, `reward_chosen`, `reward_rejected`,
        `logp_chosen`, `logp_rejected` and `logp_margin` (mean log-prob of chosen minus rejected,
        meaningful for both rows), plus `pairs`.

    Raises:
        DpoError: No held-out split, or weights that do not fit the config.
    """
    kind = weights_kind(weights)
    expected = "full" if cfg.mode == "full" else "lora"
    if kind != expected:
        raise DpoError(
            f"{weights}: holds a {'LoRA adapter' if kind == 'lora' else 'full model'}, but the config "
            f"trains {'a LoRA adapter' if expected == 'lora' else 'the full model'}",
            exit_code=EXIT_USAGE,
            details=["pass the config the weights were trained with"],
        )
    if cfg.data.eval is None and not cfg.data.eval_fraction:
        raise DpoError(
            "preference metrics need held-out pairs: set `data.eval` or `data.eval_fraction`", exit_code=EXIT_USAGE
        )
    if cfg.reference.kind == "model":
        reference_built = _built(_reference_as_policy(cfg))
        reference, reference_by = _evaluate(reference_built), _by_source(reference_built)
        built = _built(cfg)
    else:
        built = _built(cfg)
        reference, reference_by = _evaluate(built), _by_source(built)
    load_trained_weights(built.trainer.model, weights, kind)
    policy, policy_by = _evaluate(built), _by_source(built)
    result: dict[str, Any] = {"reference": reference, "policy": policy}
    if policy_by:
        # With a list of eval sources: the same rows per source (`model [source]` in the report tables).
        result["by_source"] = {
            name: {"reference": reference_by.get(name, {}), "policy": row}
            for name, row in policy_by.items()
            if isinstance(row, dict)
        }
    return result


def _by_source(built: Any) -> dict[str, Any]:
    if not built.data.eval_sources:
        return {}
    from dpo_cli.evaluation.by_source import evaluate_by_source

    return evaluate_by_source(built.trainer, built.data.eval_sources, built.tokenizer)


def weights_kind(weights: Path) -> str:
    if (weights / "adapter_config.json").is_file():
        return "lora"
    if (weights / "config.json").is_file():
        return "full"
    raise DpoError(
        f"{weights}: neither a LoRA adapter (adapter_config.json) nor a model (config.json)", exit_code=EXIT_USAGE
    )


def load_trained_weights(model: Any, weights: Path, kind: str) -> None:
    """Put the trained weights into the trainer's policy, in place."""
    if kind == "lora":
        from peft import load_peft_weights, set_peft_model_state_dict

        state = load_peft_weights(str(weights), device="cpu")
        result = set_peft_model_state_dict(model, state, adapter_name="default")
        missing = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
        if missing:
            raise DpoError(
                f"{weights}: adapter weights do not match the config's `lora:` section",
                exit_code=EXIT_USAGE,
                details=missing[:3],
            )
        return
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(str(weights), dtype=next(model.parameters()).dtype)
    try:
        model.load_state_dict(trained.state_dict())
    except RuntimeError as exc:
        raise DpoError(
            f"{weights}: weights do not fit the config's model: {str(exc).splitlines()[0]}", exit_code=EXIT_USAGE
        ) from None
    del trained


def _reference_as_policy(cfg: RunConfig) -> RunConfig:
    """The config with the separate reference checkpoint in the policy's place."""
    from dpo_cli.config.schema import ReferenceSection

    ref = cfg.reference
    model = cfg.model.model_copy(update={"name_or_path": ref.name_or_path, "revision": ref.revision, "adapter": None})
    return cfg.model_copy(update={"model": model, "reference": ReferenceSection()})


def _built(cfg: RunConfig) -> Any:
    import tempfile

    from dpo_cli.train.callbacks import MetricsWriter
    from dpo_cli.train.trainer import build_trainer

    # Training rows are not needed, only loaded and tokenized by the trainer: keep one. The
    # held-out split is cut before `max_train_samples` applies, so it is unchanged.
    # Nor are the run's trackers: these evaluations are not steps of the training run they logged.
    cfg = cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update={"max_train_samples": 1}),
            "training": cfg.training.model_copy(update={"report_to": "none"}),
        }
    )
    # The run's metrics.jsonl belongs to training; eval writes its own report instead.
    built = build_trainer(cfg, Path(tempfile.gettempdir()) / "dpo-eval-unused.jsonl")
    built.trainer.remove_callback(MetricsWriter)
    if built.data.eval is None or len(built.data.eval) == 0:
        raise DpoError("preference metrics need held-out pairs; the eval split is empty", exit_code=EXIT_USAGE)
    return built


def _evaluate(built: Any) -> dict[str, float]:
    raw = built.trainer.evaluate()
    row = {name: float(raw[f"eval_{key}"]) for key, name in METRICS.items() if f"eval_{key}" in raw}
    if "logp_chosen" in row and "logp_rejected" in row:
        row["logp_margin"] = row["logp_chosen"] - row["logp_rejected"]
    row["pairs"] = len(built.data.eval)
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise DpoError(f"preference metrics are NaN/inf: {', '.join(bad)}")
    return row
