"""Concrete changes that would make a run fit, each with the memory it saves.

Every suggestion is re-estimated with the changed config (not guessed from the table), so the
saving printed is what `dpo plan` would show after the change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dpo_cli.config.schema import DeepSpeedSection, LoraSection, RunConfig
from dpo_cli.planning.arch import ModelShape
from dpo_cli.planning.memory import MemoryPlan, estimate_memory
from dpo_cli.train.speed import precompute_choice


@dataclass(frozen=True)
class Suggestion:
    """One change, as `--set` overrides, and the per-device total after it."""

    text: str
    overrides: tuple[str, ...]
    gpu_total: float
    fits: bool


def _update(cfg: RunConfig, section: str, **changes: object) -> RunConfig:
    current = getattr(cfg, section)
    return cfg.model_copy(update={section: current.model_copy(update=changes)})


def _with_deepspeed(cfg: RunConfig, **changes: object) -> RunConfig:
    ds = cfg.launch.deepspeed or DeepSpeedSection()
    launch = cfg.launch.model_copy(update={"deepspeed": ds.model_copy(update=changes), "deepspeed_config": None})
    return cfg.model_copy(update={"launch": launch})


def candidates(cfg: RunConfig, gpus: int) -> list[tuple[str, tuple[str, ...], Callable[[RunConfig], RunConfig]]]:
    """The changes worth trying for this config, cheapest in quality and speed first."""
    t = cfg.training
    out: list[tuple[str, tuple[str, ...], Callable[[RunConfig], RunConfig]]] = []
    if not t.gradient_checkpointing:
        out.append(
            (
                "turn on gradient checkpointing (about a third slower per step)",
                ("training.gradient_checkpointing=true",),
                lambda c: _update(c, "training", gradient_checkpointing=True),
            )
        )
    ref_loaded = cfg.reference.kind == "model" or (cfg.lora is None and not cfg.model.adapter)
    if ref_loaded and not precompute_choice(cfg)[0]:
        out.append(
            (
                "precompute reference log-probs (one extra pass before training; no reference model in memory)",
                ("training.precompute_ref_log_probs=true",),
                lambda c: _update(c, "training", precompute_ref_log_probs=True),
            )
        )
    if t.per_device_train_batch_size > 1:
        micro = max(1, t.per_device_train_batch_size // 2)
        accum = t.gradient_accumulation_steps * t.per_device_train_batch_size // micro
        out.append(
            (
                (
                    f"halve the micro-batch and double accumulation (same effective batch of "
                    f"{micro * accum * gpus} pairs)"
                ),
                (f"training.per_device_train_batch_size={micro}", f"training.gradient_accumulation_steps={accum}"),
                lambda c: _update(c, "training", per_device_train_batch_size=micro, gradient_accumulation_steps=accum),
            )
        )
    if gpus > 1:
        stage = cfg.launch.deepspeed.zero_stage if cfg.launch.deepspeed else 0
        if stage < 3:
            out.append(
                (
                    f"shard weights, gradients and optimizer states over the {gpus} GPUs with ZeRO-3",
                    ("launch.deepspeed.zero_stage=3",),
                    lambda c: _with_deepspeed(c, zero_stage=3),
                )
            )
    if cfg.launch.deepspeed is None or cfg.launch.deepspeed.offload_optimizer != "cpu":
        how = "with DeepSpeed ZeRO-3, " if cfg.launch.deepspeed is None else ""
        out.append(
            (
                f"{how}offload optimizer states to CPU memory (ZeRO-Offload; slower steps)",
                ("launch.deepspeed.offload_optimizer=cpu",),
                lambda c: _with_deepspeed(c, offload_optimizer="cpu"),
            )
        )
    if (
        cfg.launch.deepspeed is not None
        and cfg.launch.deepspeed.zero_stage == 3
        and cfg.launch.deepspeed.offload_param != "cpu"
    ):
        out.append(
            (
                "offload parameters to CPU memory too (ZeRO-3 offload; much slower steps)",
                ("launch.deepspeed.offload_param=cpu",),
                lambda c: _with_deepspeed(c, offload_param="cpu", offload_optimizer="cpu"),
            )
        )
    if cfg.lora is None and not cfg.model.adapter:
        out.append(
            (
                "train LoRA adapters instead of all weights (add a `lora:` section)",
                ("lora.r=16",),
                lambda c: c.model_copy(update={"lora": LoraSection()}),
            )
        )
    if (t.max_length or 1024) > 512:
        shorter = (t.max_length or 1024) // 2
        out.append(
            (
                f"shorten max_length to {shorter} (truncates longer pairs; check `dpo validate-data` length stats)",
                (f"training.max_length={shorter}",),
                lambda c: _update(c, "training", max_length=shorter),
            )
        )
    return out


def suggest(cfg: RunConfig, shape: ModelShape, gpus: int, gpu_memory: float, plan: MemoryPlan) -> list[Suggestion]:
    """Suggestions that lower the per-device total, best saving first; empty when it fits."""
    if plan.gpu_total <= gpu_memory:
        return []
    found = []
    for text, overrides, change in candidates(cfg, gpus):
        total = estimate_memory(change(cfg), shape, gpus).gpu_total
        if total < plan.gpu_total * 0.98:
            found.append(Suggestion(text, overrides, total, total <= gpu_memory))
    return sorted(found, key=lambda s: s.gpu_total)
