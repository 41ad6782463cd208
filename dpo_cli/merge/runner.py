"""Merge a LoRA/QLoRA adapter into its base model: one deployable, verified model directory.

The steps, in order, each able to stop the merge before anything is written:

1. Resolve the input (`merge.source`): a run directory (its `final/` adapter, with the base model, dtype,
   revision and `trust_remote_code` from its `config.yaml`) or an adapter directory.
2. Refuse an output directory that holds something, unless asked to replace it (`merge.checks`).
3. Check that the base matches the adapter (`merge.checks`): the recorded base name, the recorded base's
   config where it can still be read, the tokenizer's vocabulary, and the shape of every
   adapter tensor against the modules PEFT would adapt in this base (built on the `meta`
   device, so this costs no memory even for a 70B model).
4. Load the base in a full-precision dtype (never 4-bit, even after QLoRA: merging into
   quantized weights would round the update away), apply the adapter, record logits on a few
   prompts, `merge_and_unload`, save sharded safetensors with the tokenizer, chat template and
   generation config into a temporary directory beside the output.
5. Reload the saved model with plain `AutoModelForCausalLM.from_pretrained`, compare its logits
   with those of the adapter on the base, and only then rename the directory into place.
"""

from __future__ import annotations

import gc
import glob
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.fsio import atomic_write_json, publish_dir, staging_dir
from dpo_cli.merge.checks import base_mismatches, check_output_dir, has_tokenizer
from dpo_cli.merge.source import MERGE_DTYPES, MergeSource, resolve_source

# Largest max-abs logit difference accepted between the merged model and the adapter applied
# on the base, per dtype (max over every position and vocabulary entry of a few prompts).
# Measured on SmolLM2-135M-Instruct (30 layers) with random all-linear r=16 adapters that move
# logits by 0.3 to 3 (docs/merge.md): float32 reached 1.3e-4 (summation order over 30
# layers; 2e-7 on the 2-layer test model), float16 0.24 and bfloat16 2.4, because the 16-bit
# models round W + BA once while adapter-on-base rounds W and BA(x) separately and 30 layers
# amplify that. The limits are ~4-8x the measurements. In 16 bits the check catches a broken
# save or a wrong merge (errors of many logits), not rounding-sized faults: merge with
# `--dtype float32` for a strict check.
TOLERANCE = {"float32": 1e-3, "float16": 1.0, "bfloat16": 4.0}

# Short prompts, chat-templated when the tokenizer has a template, run through both models.
VERIFY_PROMPTS = (
    "What is the capital of France?",
    "Write two sentences about the sea.",
    "Explain in one line why the sky is blue.",
)

MERGE_INFO = "merge_info.json"


@dataclass
class MergeResult:
    output_dir: Path
    dtype: str
    max_abs_diff: float
    mean_abs_diff: float
    tolerance: float
    adapter_effect: float  # max |logits(adapter on base) - logits(base)|: the scale the diff is judged against
    prompts: int
    shards: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- merge


def default_dtype(source: MergeSource) -> str:
    """The run's `model.dtype` if concrete, else the base checkpoint's own dtype, else float32."""
    if source.run_dtype:
        return source.run_dtype
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(
            source.base, revision=source.revision, trust_remote_code=source.trust_remote_code
        )
    except (OSError, ValueError):
        return "float32"
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(stored).removeprefix("torch.") if stored is not None else ""
    return name if name in MERGE_DTYPES else "float32"


def merge_adapter(
    source_path: Path,
    output: Path,
    *,
    dtype: str | None = None,
    base: str | None = None,
    force: bool = False,
    overwrite: bool = False,
    max_shard_size: str = "5GB",
    device: str = "auto",
    trust_remote_code: bool | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> MergeResult:
    """Merge an adapter into its base, save it, verify it, and move it into `output`.

    Args:
        source_path: Run directory or adapter directory.
        output: Directory for the merged model; must be absent or empty unless `overwrite`.
        dtype: `bfloat16`, `float16` or `float32`; None picks `default_dtype`.
        base: Base model instead of the recorded one.
        force: Merge despite a base that differs from the recorded one.
        overwrite: Replace a non-empty `output`.
        max_shard_size: Largest safetensors shard (`transformers` size string, e.g. `5GB`).
        device: `auto` (CUDA when present, else CPU), `cpu`, `cuda`, `cuda:1`, ...
        trust_remote_code: Overrides the run's setting.
        progress: Receives one line per step.

    Raises:
        DpoError: Bad input, a protected output, a mismatched base, or a merged model whose
            logits differ from the adapter's by more than the dtype's tolerance; another merge
            into `output` is running.
    """
    from dpo_cli.rundir import run_lock

    output = Path(output)
    with run_lock(output, advice="wait for the other merge into it to finish"):
        for note in clean_leftovers(output):
            progress(note)
        return _merge(
            source_path,
            output,
            dtype=dtype,
            base=base,
            force=force,
            overwrite=overwrite,
            max_shard_size=max_shard_size,
            device=device,
            trust_remote_code=trust_remote_code,
            progress=progress,
        )


def clean_leftovers(output: Path) -> list[str]:
    """Remove what a killed merge into `output` left beside it; returns one line per action.

    `.NAME.merging-*` are unfinished staging copies. `.NAME.old-*` hold the previous `output`
    while it is being replaced: when `output` itself is missing, the kill came between moving
    the old model aside and moving the new one in, and the old one is put back first. Called
    under the output's lock, so no running merge owns them.
    """
    parent = output.parent
    if not parent.is_dir():
        return []
    notes = []
    prefix = glob.escape(f".{output.name}")
    for old in sorted(parent.glob(f"{prefix}.old-*")):
        kept = old / output.name
        if kept.is_dir() and not output.exists():
            os.replace(kept, output)
            notes.append(f"restored {output} (an earlier merge was stopped while replacing it)")
        shutil.rmtree(old, ignore_errors=True)
        notes.append(f"removed {old} (left by an earlier merge that was stopped)")
    for staging in sorted(parent.glob(f"{prefix}.merging-*")):
        shutil.rmtree(staging, ignore_errors=True)
        notes.append(f"removed {staging} (left by an earlier merge that was stopped)")
    return notes


def _merge(
    source_path: Path,
    output: Path,
    *,
    dtype: str | None,
    base: str | None,
    force: bool,
    overwrite: bool,
    max_shard_size: str,
    device: str,
    trust_remote_code: bool | None,
    progress: Callable[[str], None],
) -> MergeResult:
    if dtype is not None and dtype not in MERGE_DTYPES:
        raise DpoError(f"--dtype: {dtype!r} is not one of {', '.join(MERGE_DTYPES)}", exit_code=EXIT_USAGE)
    source = resolve_source(Path(source_path), base=base, trust_remote_code=trust_remote_code)
    check_output_dir(output, source, overwrite=overwrite)
    progress(f"adapter: {source.adapter_dir}")
    progress(f"base:    {source.base}" + (f" (revision {source.revision})" if source.revision else ""))

    fatal, forceable = base_mismatches(source)
    if fatal:
        raise DpoError(
            f"{source.adapter_dir}: the adapter cannot be merged into {source.base}, not even with --force",
            details=[*fatal, *forceable],
        )
    if forceable and not force:
        raise DpoError(
            f"{source.base}: does not match the base the adapter was trained on",
            exit_code=EXIT_USAGE,
            details=[*forceable, "pass --force if you are sure this base is right"],
        )
    warnings = [f"--force: {line}" for line in forceable]

    dtype = dtype or default_dtype(source)
    tolerance = TOLERANCE[dtype]
    if source.quantized_run:
        progress(f"the run used QLoRA: the base is loaded in {dtype}, not 4-bit, for the merge")

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(output, "merging-")
    try:
        progress(f"merging in {dtype} ...")
        reference, base_effect, tokenizer = _merge_into(source, staging, dtype, device, max_shard_size)
        progress("verifying: reloading the merged model ...")
        merged_logits = _reload_logits(staging, dtype, device, tokenizer)
        pairs = list(zip(merged_logits, reference, strict=True))
        max_diff = max(float((m - r).abs().max()) for m, r in pairs)
        mean_diff = sum(float((m - r).abs().mean()) for m, r in pairs) / len(pairs)
        if max_diff > tolerance:
            raise DpoError(
                f"verification failed: merged logits differ from the adapter's by {max_diff:.3g} "
                f"(tolerance {tolerance:g} for {dtype}); nothing was written to {output}",
                details=[
                    f"the adapter itself changes logits by {base_effect:.3g}",
                    "try --dtype float32 to rule out rounding",
                ],
            )
        if base_effect == 0.0:
            warnings.append("the adapter leaves the base's logits unchanged (an untrained adapter?)")
        shards = sorted(p.name for p in staging.glob("*.safetensors"))
        atomic_write_json(
            staging / MERGE_INFO,
            {
                "adapter": str(source.adapter_dir.resolve()),
                "base": source.base,
                "revision": source.revision,
                "dtype": dtype,
                "forced": bool(forceable),
                "verification": {
                    "prompts": len(reference),
                    "max_abs_diff": max_diff,
                    "mean_abs_diff": mean_diff,
                    "tolerance": tolerance,
                    "adapter_effect": base_effect,
                },
            },
        )
        from dpo_cli.publish.card import write_merged_card

        write_merged_card(
            staging,
            run_dir=source.run_dir,
            merge_command=merge_command(
                source_path, output, dtype=dtype, base=base, force=force, max_shard_size=max_shard_size
            ),
        )
        publish_dir(staging, output)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return MergeResult(
        output_dir=output,
        dtype=dtype,
        max_abs_diff=max_diff,
        mean_abs_diff=mean_diff,
        tolerance=tolerance,
        adapter_effect=base_effect,
        prompts=len(reference),
        shards=shards,
        warnings=warnings,
    )


def merge_command(
    source_path: Path, output: Path, *, dtype: str, base: str | None, force: bool, max_shard_size: str
) -> str:
    """The `dpo merge-adapter` command line that makes this merge again (for the model card)."""
    import shlex

    parts = [
        "dpo",
        "merge-adapter",
        shlex.quote(str(source_path)),
        "--output",
        shlex.quote(str(output)),
        "--dtype",
        dtype,
    ]
    if base:
        parts += ["--base", shlex.quote(base)]
    if force:
        parts.append("--force")
    if max_shard_size != "5GB":
        parts += ["--max-shard-size", shlex.quote(max_shard_size)]
    return " ".join(parts)


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DpoError(f"--device {device}: no CUDA GPU is available here", exit_code=EXIT_USAGE)
    return device


def _load_kwargs(dtype: str, device: str, trust_remote_code: bool) -> dict[str, Any]:
    import torch

    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype), "trust_remote_code": trust_remote_code}
    if device != "cpu":
        kwargs["device_map"] = {"": device}
    return kwargs


def _merge_into(
    source: MergeSource, staging: Path, dtype: str, device: str, max_shard_size: str
) -> tuple[list[Any], float, Any]:
    """Load base + adapter, record logits, merge, save; returns (adapter logits, adapter effect, tokenizer)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dpo_cli.models import quiet_known_noise

    quiet_known_noise()
    device = _resolve_device(device)
    # No quantization_config is ever passed: the base loads in `dtype`, whatever the run used.
    kwargs = _load_kwargs(dtype, device, source.trust_remote_code)
    base_model = AutoModelForCausalLM.from_pretrained(source.base, revision=source.revision, **kwargs)
    model = PeftModel.from_pretrained(base_model, str(source.adapter_dir))
    model.eval()
    tokenizer_source = str(source.adapter_dir) if has_tokenizer(source.adapter_dir) else source.base
    tokenizer = AutoTokenizer.from_pretrained(
        tokenizer_source,
        revision=None if tokenizer_source == str(source.adapter_dir) else source.revision,
        trust_remote_code=source.trust_remote_code,
    )
    inputs = verification_inputs(tokenizer)
    with torch.no_grad():
        reference = [_logits(model, ids) for ids in inputs]
        with model.disable_adapter():
            bare = [_logits(model, ids) for ids in inputs]
    effect = max(float((r - b).abs().max()) for r, b in zip(reference, bare, strict=True))
    # safe_merge checks the merged weights for NaN/inf before replacing the originals.
    merged = model.merge_and_unload(safe_merge=True)
    merged.save_pretrained(str(staging), max_shard_size=max_shard_size)
    tokenizer.save_pretrained(str(staging))
    del merged, model, base_model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return reference, effect, tokenizer


def _reload_logits(staging: Path, dtype: str, device: str, tokenizer: Any) -> list[Any]:
    import torch
    from transformers import AutoModelForCausalLM

    device = _resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(str(staging), **_load_kwargs(dtype, device, False))
    model.eval()
    with torch.no_grad():
        logits = [_logits(model, ids) for ids in verification_inputs(tokenizer)]
    del model
    gc.collect()
    return logits


def verification_inputs(tokenizer: Any) -> list[Any]:
    """Token ids of the verification prompts, through the chat template when there is one."""
    inputs = []
    for prompt in VERIFY_PROMPTS:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
        else:
            text = prompt
        inputs.append(tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"])
    return inputs


def _logits(model: Any, ids: Any) -> Any:
    device = next(model.parameters()).device
    return model(input_ids=ids.to(device)).logits.float().cpu()
