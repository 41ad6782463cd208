"""`dpo plan` as a library function: config in, memory/compute plan and its printed table out."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from dpo_cli.config.schema import RunConfig
from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.planning.arch import ModelShape, load_model_shape
from dpo_cli.planning.compute import ComputePlan, estimate_compute
from dpo_cli.planning.memory import GIB, MemoryPlan, estimate_memory
from dpo_cli.planning.suggest import Suggestion, suggest

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(text: str) -> float:
    """`80GiB`, `80GB`, `81920MiB` or a plain byte count -> bytes. A bare `80g` means GiB.

    Raises:
        DpoError: Unreadable size.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    unit = {"g": "gib", "m": "mib", "t": "tib", "k": "kib"}.get(unit, unit)
    if not match or unit not in _UNITS:
        raise DpoError(f"--gpu-memory {text!r}: expected a size such as 80GiB, 40GB or 24576MiB", exit_code=EXIT_USAGE)
    return float(match.group(1)) * _UNITS[unit]


@dataclass
class Plan:
    """Everything `dpo plan` prints."""

    shape: ModelShape
    memory: MemoryPlan
    compute: ComputePlan
    gpu_memory: float
    suggestions: list[Suggestion]
    utilization: float
    peak_tflops: float | None

    @property
    def fits(self) -> bool:
        return self.memory.gpu_total <= self.gpu_memory


def count_rows(cfg: RunConfig) -> int | None:
    """Training pairs per epoch for local JSONL files (one line each, plain or compressed); None when
    unknown cheaply. A mixture's `fraction` and `max_samples` are applied to each source's count."""
    from dpo_cli.data import open_binary, resolve_source, source_entries, split_suffix

    rows = 0
    for entry in source_entries(cfg.data, "train"):
        try:
            source = resolve_source(entry["path"])
        except DpoError:
            return None
        if not source.files or not all(split_suffix(f)[0] == ".jsonl" for f in source.files):
            return None
        count = 0
        for name in source.files:
            with open_binary(name) as handle:
                count += sum(1 for line in handle if line.strip())
        if entry["fraction"] is not None:
            count = max(1, round(count * entry["fraction"])) if count else 0
        if entry["max_samples"] is not None:
            count = min(count, entry["max_samples"])
        rows += count
    if cfg.data.eval is None and cfg.data.eval_fraction:
        rows -= int(rows * cfg.data.eval_fraction)
    if cfg.data.max_train_samples:
        rows = min(rows, cfg.data.max_train_samples)
    return rows


def make_plan(
    cfg: RunConfig,
    *,
    gpus: int | None = None,
    gpu_memory: float = 80 * GIB,
    peak_tflops: float | None = 989.0,
    utilization: float = 0.4,
    model_config: str | Path | None = None,
    rows: int | None = None,
) -> Plan:
    """Estimate memory per device and compute for the run, without loading any weights.

    Args:
        cfg: The validated run config.
        gpus: Devices; defaults to `launch.num_processes`.
        gpu_memory: Memory of one device in bytes.
        peak_tflops: Dense 16-bit peak of one device (989: H100 SXM); None skips timing.
        utilization: Fraction of the peak the run reaches.
        model_config: Explicit config.json, instead of finding the model's own.
        rows: Training pairs per epoch; counted from local JSONL files when None.
    """
    if not 0 < utilization <= 1:
        raise DpoError(f"--utilization {utilization}: expected a fraction in (0, 1]", exit_code=EXIT_USAGE)
    gpus = gpus or cfg.launch.num_processes
    shape = load_model_shape(cfg.model.name_or_path, model_config, cfg.model.revision)
    ds_json = _deepspeed_json(cfg)
    memory = estimate_memory(cfg, shape, gpus, deepspeed_json=ds_json)
    compute = estimate_compute(
        cfg,
        shape,
        gpus,
        rows=rows if rows is not None else count_rows(cfg),
        peak_tflops=peak_tflops,
        utilization=utilization,
    )
    return Plan(
        shape=shape,
        memory=memory,
        compute=compute,
        gpu_memory=gpu_memory,
        suggestions=suggest(cfg, shape, gpus, gpu_memory, memory),
        utilization=utilization,
        peak_tflops=peak_tflops,
    )


def _deepspeed_json(cfg: RunConfig) -> dict | None:
    path = cfg.launch.deepspeed_config
    if not path:
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DpoError(f"launch.deepspeed_config: {path}: {exc}", exit_code=EXIT_USAGE) from None


def to_dict(plan: Plan) -> dict:
    """The plan's figures for scripts (`dpo plan --json`); memory in bytes and GiB, time in seconds."""
    m, c, s = plan.memory, plan.compute, plan.shape

    def gib(value: float) -> float:
        return round(value / GIB, 3)

    return {
        "fits": plan.fits,
        "gpus": m.gpus,
        "gpu_memory_bytes": int(plan.gpu_memory),
        "gpu_memory_gib": gib(plan.gpu_memory),
        "total_bytes": int(m.gpu_total),
        "total_gib": gib(m.gpu_total),
        "headroom_gib": gib(plan.gpu_memory - m.gpu_total),
        "cpu_offload_gib": gib(m.cpu_total),
        "memory": [
            {
                "label": r.label,
                "gpu_bytes": int(r.gpu_bytes),
                "gpu_gib": gib(r.gpu_bytes),
                "cpu_gib": gib(r.cpu_bytes),
                "note": r.note,
            }
            for r in m.rows
        ],
        "gradient_checkpointing": m.checkpointing,
        "assumptions": list(m.assumptions),
        "model": {
            "source": s.source,
            "params": s.params,
            "layers": s.layers,
            "hidden": s.hidden,
            "heads": s.heads,
            "kv_heads": s.kv_heads,
            "intermediate": s.intermediate,
            "vocab": s.vocab,
        },
        "compute": {
            "forward_flops_per_token": c.forward_flops_per_token,
            "flops_per_step": c.flops_per_step,
            "tokens_per_step": c.tokens_per_step,
            "rows_per_epoch": c.rows_per_epoch,
            "steps_per_epoch": c.steps_per_epoch,
            "seconds_per_step": c.seconds_per_step,
            "seconds_per_epoch": c.seconds_per_epoch,
            "precompute_seconds": c.precompute_seconds,
            "peak_tflops": plan.peak_tflops,
            "utilization": plan.utilization,
        },
        "suggestions": [
            {"text": g.text, "overrides": list(g.overrides), "total_gib": gib(g.gpu_total), "fits": g.fits}
            for g in plan.suggestions
        ],
    }


def _gib(value: float) -> str:
    return f"{value / GIB:8.2f} GiB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def render(plan: Plan) -> str:
    """The plan as the table `dpo plan` prints."""
    m, c, s = plan.memory, plan.compute, plan.shape
    lines = [
        f"model: {s.source}",
        (
            f"  {s.params / 1e9:.2f}B params, {s.layers} layers, hidden {s.hidden}, {s.heads} heads / {s.kv_heads} kv, "
            f"intermediate {s.intermediate}, vocab {s.vocab}"
        ),
        f"memory per GPU ({m.gpus} GPU{'s' if m.gpus > 1 else ''}):",
    ]
    width = max(len(r.label) for r in m.rows)
    for row in m.rows:
        lines.append(f"  {row.label:<{width}}  {_gib(row.gpu_bytes)}  {row.note}")
    lines.append(f"  {'total':<{width}}  {_gib(m.gpu_total)}  of {plan.gpu_memory / GIB:.1f} GiB per GPU")
    if m.cpu_total:
        lines.append(f"  {'CPU memory (offload)':<{width}}  {_gib(m.cpu_total)}  per process")
    other = m.activations_without_checkpointing if m.checkpointing else m.activations_with_checkpointing
    lines.append(
        f"  (activations {'without' if m.checkpointing else 'with'} gradient checkpointing: {other / GIB:.2f} GiB)"
    )
    verdict = "fits" if plan.fits else "does NOT fit"
    headroom = plan.gpu_memory - m.gpu_total
    lines.append(f"verdict: {verdict} ({headroom / GIB:+.2f} GiB headroom)")
    for note in m.assumptions:
        lines.append(f"  assumes {note}")
    lines.append("compute:")
    lines.append(f"  {c.forward_flops_per_token / 1e9:.2f} GFLOP per token forward; {c.multiplier_note}")
    lines.append(f"  {c.tokens_per_step} tokens per optimizer step; {c.flops_per_step / 1e15:.2f} PFLOP per step")
    if c.seconds_per_step is not None:
        lines.append(
            f"  at {plan.utilization:.0%} of {plan.peak_tflops:g} TFLOP/s per GPU: {_duration(c.seconds_per_step)} per step"
        )
        if c.seconds_per_epoch is not None:
            lines.append(
                f"  {c.rows_per_epoch} pairs -> {c.steps_per_epoch} steps -> {_duration(c.seconds_per_epoch)} per epoch"
            )
        else:
            lines.append("  time per epoch: pass --rows N (the training set is not a local JSONL file)")
        if c.precompute_seconds is not None:
            lines.append(f"  + {_duration(c.precompute_seconds)} precomputing reference log-probs")
    if plan.suggestions:
        lines.append("suggestions (per-GPU total after each change alone):")
        for sug in plan.suggestions:
            mark = "fits" if sug.fits else "still over"
            lines.append(f"  - {sug.text}: {_gib(sug.gpu_total).strip()} ({mark})")
            lines.append(f"      {' '.join('--set ' + o for o in sug.overrides)}")
    elif not plan.fits:
        lines.append("no single change found that lowers the total; consider a smaller model or more GPUs")
    return "\n".join(lines)
