"""Pure builders from the validated config to TRL's and PEFT's own objects.

One path from YAML to the trainer: `load_config` gives a frozen `RunConfig`;
`to_trainer_config` turns its `training:` section into the algorithm's TRL config
(`DPOConfig`, `KTOConfig`, `ORPOConfig`, `CPOConfig`) and `to_lora_config` its `lora:`
section into `peft.LoraConfig` (`dpo_cli.models.to_bnb_config` does `quantization:`).
Everything that differs between algorithms is read from their rows in
`dpo_cli.config.algorithms`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_cli.config.algorithms import DELIBERATE_DEFAULTS, algorithm_of
from dpo_cli.doctor import launched_without_gpu
from dpo_cli.errors import EXIT_USAGE, DpoError

if TYPE_CHECKING:
    from peft import LoraConfig

    from dpo_cli.config.schema import LoraSection, RunConfig


def to_lora_config(lora: LoraSection) -> LoraConfig:
    """LoRA settings as `peft.LoraConfig` for a causal LM."""
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=lora.r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules),
        bias=lora.bias,
        modules_to_save=list(lora.modules_to_save) if lora.modules_to_save else None,
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
    )


def trainer_config_kwargs(cfg: RunConfig, output_dir: Path) -> dict[str, Any]:
    """Keyword arguments for the algorithm's TRL config.

    Laid in this order, each over the last: dpo's deliberate defaults (`DELIBERATE_DEFAULTS`),
    the algorithm's own (SimPO's, KTO's batch order), then every `training:` key the user set; then what other
    sections own (`output_dir`, `model.trust_remote_code`) and what the environment decides.
    """
    from dpo_cli.train.speed import precompute_choice

    algorithm = algorithm_of(cfg)
    kwargs: dict[str, Any] = {**DELIBERATE_DEFAULTS, **algorithm.defaults, **cfg.training_overrides()}
    kwargs["output_dir"] = str(output_dir)
    if kwargs.get("push_to_hub") and not kwargs.get("hub_model_id"):
        from dpo_cli.publish.hub import default_repo_name

        kwargs["hub_model_id"] = default_repo_name(Path(cfg.output_dir))
    kwargs = renamed_for_transformers(kwargs)
    if cfg.model.trust_remote_code:
        kwargs["trust_remote_code"] = True
    if not kwargs.get("use_cpu") and launched_without_gpu():
        kwargs["use_cpu"] = True
    if algorithm.packs:
        # dpo packs pairs itself (dpo_cli.train.packing); TRL 1.16's own `padding_free` only warns and pads.
        kwargs["padding_free"] = False
        kwargs["precompute_ref_log_probs"] = precompute_choice(cfg)[0]
    return kwargs


def renamed_for_transformers(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`gradient_checkpointing*` -> `activation_checkpointing*` where transformers has the new names.

    transformers 5.24 renamed them, keeping the old ones as deprecated aliases that warn on every
    run; older 5.x releases only know the old names. TRL's trainers read either (they mirror).
    Returns a new dict; `kwargs` is left as it is.
    """
    from dataclasses import fields

    from transformers import TrainingArguments

    if "activation_checkpointing" not in {f.name for f in fields(TrainingArguments)}:
        return dict(kwargs)
    renamed = dict(kwargs)
    for old, new in (
        ("gradient_checkpointing", "activation_checkpointing"),
        ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
    ):
        if old in renamed and new not in renamed:
            renamed[new] = renamed.pop(old)
    return renamed


def to_trainer_config(cfg: RunConfig, output_dir: Path) -> Any:
    """Build the algorithm's TRL config (`DPOConfig`, `KTOConfig`, `ORPOConfig`, `CPOConfig`).

    Raises:
        DpoError: TRL or transformers rejected a `training:` value.
    """
    algorithm = algorithm_of(cfg)
    config_class = algorithm.config_class()
    try:
        return config_class(**trainer_config_kwargs(cfg, output_dir))
    except (TypeError, ValueError) as exc:
        raise DpoError(f"training: {algorithm.config} rejected the settings: {exc}", exit_code=EXIT_USAGE) from None


def trainer_kwargs(cfg: RunConfig, reference: Any) -> dict[str, Any]:
    """The trainer arguments that differ between algorithms: ORPO and CPO take no `ref_model` at all."""
    return {"ref_model": reference} if algorithm_of(cfg).reference else {}
