"""FLOPs per optimizer step and time per epoch, from the model's shape.

The usual dense-transformer rule: a forward pass costs 2 FLOPs per parameter per token (the
output head included, embeddings excluded) plus the attention scores; a full backward costs
twice the forward. With frozen base weights (LoRA, QLoRA) backward only propagates to the
inputs, about one forward; gradient checkpointing recomputes one forward. The reference
forward costs one more forward unless reference log-probs are precomputed (then it is paid
once, before training) or the reference is the policy itself under `reference.kind: none`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpo_cli.config.schema import RunConfig
from dpo_cli.planning.arch import ModelShape
from dpo_cli.train.speed import precompute_choice


@dataclass(frozen=True)
class ComputePlan:
    """FLOPs and time for the configured run."""

    forward_flops_per_token: float
    train_flops_per_token: float  # policy forward + backward (+ recompute) + reference forward
    tokens_per_step: int  # all devices, all accumulation micro-batches
    flops_per_step: float
    steps_per_epoch: int | None
    rows_per_epoch: int | None
    seconds_per_step: float | None
    seconds_per_epoch: float | None
    precompute_seconds: float | None  # one reference pass over the data, when precomputed
    multiplier_note: str


def forward_flops_per_token(shape: ModelShape, seq_len: int) -> float:
    """2 x (block linears + output head) + causal attention scores (QK^T and AV, half the matrix)."""
    matmul_params = shape.linear_params + shape.vocab * shape.hidden
    attention = 2 * 2 * shape.layers * shape.heads * shape.head_dim * seq_len / 2
    return 2 * matmul_params + attention


def estimate_compute(
    cfg: RunConfig,
    shape: ModelShape,
    gpus: int,
    *,
    rows: int | None,
    peak_tflops: float | None,
    utilization: float,
) -> ComputePlan:
    """FLOPs per optimizer step, and time at `utilization` of `peak_tflops` per device.

    Args:
        cfg: The validated run config.
        shape: The model's shape.
        gpus: Data-parallel processes.
        rows: Training pairs per epoch, when known.
        peak_tflops: Dense 16-bit peak per device (989 for an H100 SXM); None skips timing.
        utilization: Fraction of peak actually reached (model FLOPs utilisation).
    """
    t = cfg.training
    seq = t.max_length or 1024
    fwd = forward_flops_per_token(shape, seq)
    backward = 2.0 if cfg.mode == "full" else 1.0
    recompute = 1.0 if t.gradient_checkpointing else 0.0
    reference = 0.0 if (precompute_choice(cfg)[0] or cfg.reference.kind == "none") else 1.0
    multiplier = 1.0 + backward + recompute + reference
    note = (
        f"{multiplier:g} forwards per token: forward 1 + backward {backward:g}"
        + (" + recompute 1" if recompute else "")
        + (" + reference 1" if reference else "")
    )
    pairs_per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * gpus
    tokens_per_step = pairs_per_step * 2 * seq
    flops_per_step = fwd * multiplier * tokens_per_step
    seconds_per_step = None
    if peak_tflops:
        seconds_per_step = flops_per_step / (gpus * peak_tflops * 1e12 * utilization)
    steps = None
    if rows is not None:
        steps = max(1, -(-rows // pairs_per_step))
    if t.max_steps and t.max_steps > 0:
        steps = t.max_steps if steps is None else min(steps, t.max_steps)
    seconds_per_epoch = seconds_per_step * steps if (seconds_per_step is not None and steps) else None
    precompute = None
    if precompute_choice(cfg)[0] and rows is not None and peak_tflops:
        precompute = fwd * rows * 2 * seq / (gpus * peak_tflops * 1e12 * utilization)
    return ComputePlan(
        forward_flops_per_token=fwd,
        train_flops_per_token=fwd * multiplier,
        tokens_per_step=tokens_per_step,
        flops_per_step=flops_per_step,
        steps_per_epoch=steps,
        rows_per_epoch=rows,
        seconds_per_step=seconds_per_step,
        seconds_per_epoch=seconds_per_epoch,
        precompute_seconds=precompute,
        multiplier_note=note,
    )
