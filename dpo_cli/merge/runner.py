"""Merge a LoRA/QLoRA adapter into its base model: one deployable, verified model directory.

The steps, in order, each able to stop the merge before anything is written:

1. Resolve the input: a run directory (its `final/` adapter, with the base model, dtype,
   revision and `trust_remote_code` from its `config.yaml`) or an adapter directory.
2. Refuse an output directory that holds something, unless asked to replace it.
3. Check that the base matches the adapter: the recorded base name, the recorded base's
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
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.fsio import atomic_write_json, publish_dir, staging_dir
from dpo_cli.merge.run_config import RunSettings, read_run_settings
from dpo_cli.rundir import COMPLETE_MARKER

MERGE_DTYPES = ("bfloat16", "float16", "float32")

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

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MERGE_INFO = "merge_info.json"


@dataclass(frozen=True)
class MergeSource:
    """What to merge: the adapter, the base it goes on, and how to load that base."""

    adapter_dir: Path
    base: str
    recorded_base: str | None
    revision: str | None = None
    trust_remote_code: bool = False
    run_dtype: str | None = None  # `model.dtype` of the run, when the adapter came from one
    run_dir: Path | None = None
    quantized_run: bool = False


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


# --------------------------------------------------------------------------- input


def resolve_source(path: Path, base: str | None = None, trust_remote_code: bool | None = None) -> MergeSource:
    """Find the adapter and its base from a run directory or an adapter directory.

    Args:
        path: A run directory (uses `final/`) or a directory holding `adapter_config.json`
            (for example `RUN/checkpoints/checkpoint-N`).
        base: Base model to merge into instead of the one the adapter records.
        trust_remote_code: Overrides the run's setting; None keeps it (False without a run).

    Raises:
        DpoError: The path is neither, the run trained the full model, or the adapter weights
            are missing (a ZeRO-3 save without 16-bit gathering leaves none).
    """
    path = Path(path)
    if not path.is_dir():
        raise DpoError(f"{path}: no such directory", exit_code=EXIT_USAGE)
    run_dir: Path | None = None
    if (path / "config.yaml").is_file() and not (path / "adapter_config.json").is_file():
        run_dir, adapter_dir = path, path / "final"
        if not adapter_dir.is_dir():
            raise DpoError(
                f"{path}: the run has no final/ directory (training did not finish)",
                exit_code=EXIT_USAGE,
                details=[f"merge a checkpoint instead: dpo merge-adapter {path}/checkpoints/checkpoint-N ..."],
            )
        if not (adapter_dir / "adapter_config.json").is_file():
            raise DpoError(
                f"{adapter_dir}: this run trained the full model; final/ is already a complete model, nothing to merge",
                exit_code=EXIT_USAGE,
            )
    elif (path / "adapter_config.json").is_file():
        adapter_dir = path
        # RUN/final and RUN/checkpoints/checkpoint-N sit inside a run whose config we can use.
        for candidate in (path.parent, path.parent.parent):
            if (candidate / "config.yaml").is_file() and (candidate / "run.json").is_file():
                run_dir = candidate
                break
    else:
        raise DpoError(
            f"{path}: neither a run directory (config.yaml + final/) nor a LoRA adapter (adapter_config.json)",
            exit_code=EXIT_USAGE,
        )

    adapter_config = _read_json(adapter_dir / "adapter_config.json")
    _check_adapter_weights(adapter_dir)
    if run_dir is not None:
        _check_finished(adapter_dir, run_dir)
    recorded = adapter_config.get("base_model_name_or_path")
    settings = read_run_settings(run_dir) if run_dir else RunSettings()
    run_model = settings.model
    run_base = run_model.name_or_path
    chosen = base or recorded or run_base
    if not chosen:
        raise DpoError(
            f"{adapter_dir}/adapter_config.json records no base model",
            exit_code=EXIT_USAGE,
            details=["name it with --base"],
        )
    # The run's loading settings apply only when merging into the run's own base.
    same_base = run_base is not None and _same_model(chosen, run_base)
    run_dtype = run_model.dtype if same_base else None
    return MergeSource(
        adapter_dir=adapter_dir,
        base=chosen,
        recorded_base=recorded or run_base,
        revision=(run_model.revision if same_base else None) or adapter_config.get("revision"),
        trust_remote_code=run_model.trust_remote_code
        if trust_remote_code is None and same_base
        else bool(trust_remote_code),
        run_dtype=run_dtype if run_dtype in MERGE_DTYPES else None,
        run_dir=run_dir,
        quantized_run=bool(settings.quantization),
    )


def _check_adapter_weights(adapter_dir: Path) -> None:
    from dpo_cli.checkpoints import pickle_problem, safetensors_problem

    found = [adapter_dir / name for name in ADAPTER_WEIGHTS if (adapter_dir / name).is_file()]
    if found:
        weights = found[0]
        problem = safetensors_problem(weights) if weights.suffix == ".safetensors" else pickle_problem(weights)
        if problem:
            raise DpoError(
                f"{adapter_dir}: the adapter weights are damaged: {problem}",
                details=["merge an earlier checkpoint (RUN/checkpoints/checkpoint-N), or train the run again"],
            )
        return
    details = []
    if (adapter_dir / "latest").is_file() or any(adapter_dir.glob("global_step*")):
        # Trainer.save_model under ZeRO-3 without 16-bit gathering writes only DeepSpeed's
        # partitioned checkpoint, no adapter weights.
        details = [
            (
                "this is a DeepSpeed ZeRO-3 partitioned checkpoint; train with "
                "`launch.deepspeed.zero3_save_16bit_model: true`, or rebuild the weights with the "
                "zero_to_fp32.py script saved beside it"
            )
        ]
    raise DpoError(f"{adapter_dir}: no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})", details=details)


def _check_finished(adapter_dir: Path, run_dir: Path) -> None:
    """Refuse a run's `final/` or checkpoint whose save did not finish, or whose files changed since.

    `final/` and every checkpoint get a `.complete` marker once their files are on disk. A
    `final/` from before dpo wrote that marker is accepted when the run's `run.json` says
    `completed` (it was written only after `final/`) and its files pass the same checks.
    """
    from dpo_cli.checkpoints import folder_problems
    from dpo_cli.fsio import read_json
    from dpo_cli.rundir import is_complete

    if adapter_dir.parent.name == "checkpoints":
        if not is_complete(adapter_dir):
            raise DpoError(
                f"{adapter_dir}: this checkpoint's save did not finish (no {COMPLETE_MARKER} marker)",
                exit_code=EXIT_USAGE,
                details=["merge a complete one (ls the checkpoints folder for those with a .complete file)"],
            )
    elif not is_complete(adapter_dir):
        try:
            status = read_json(run_dir / "run.json").get("status")
        except (OSError, ValueError, AttributeError):
            status = None
        if status != "completed":
            raise DpoError(
                f"{adapter_dir}: incomplete: the run ended {status or 'without a record'!r} before final/ was "
                f"finished (no {COMPLETE_MARKER} marker)",
                exit_code=EXIT_USAGE,
                details=[
                    (
                        f"resume the run (dpo train ... --resume), or merge a complete checkpoint: "
                        f"dpo merge-adapter {run_dir / 'checkpoints'}/checkpoint-N ..."
                    )
                ],
            )
    problems = folder_problems(adapter_dir)
    if problems:
        raise DpoError(f"{adapter_dir}: damaged since it was saved", details=problems[:5])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DpoError(f"{path}: unreadable: {exc}") from None


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


# --------------------------------------------------------------------------- output


def check_output_dir(output: Path, source: MergeSource, *, overwrite: bool) -> None:
    """Refuse an output that holds something (unless `overwrite`) or would destroy an input.

    Raises:
        DpoError: The output is a file, a non-empty directory without `overwrite`, or the
            adapter, its run, the base model, or a directory containing one of them.
    """
    output = Path(output)
    protected = [source.adapter_dir, *([source.run_dir] if source.run_dir else [])]
    if Path(source.base).exists():
        protected.append(Path(source.base))
    resolved = output.expanduser().resolve()
    for item in protected:
        item_resolved = item.resolve()
        if resolved == item_resolved or resolved in item_resolved.parents:
            raise DpoError(
                f"{output}: the output would replace {item}, an input of this merge",
                exit_code=EXIT_USAGE,
                details=["choose another --output (a new directory)"],
            )
    if output.exists() and not output.is_dir():
        raise DpoError(f"{output}: exists and is not a directory", exit_code=EXIT_USAGE)
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise DpoError(
            f"{output}: output directory is not empty",
            exit_code=EXIT_USAGE,
            details=["pass --overwrite to replace it, or choose another --output"],
        )


# --------------------------------------------------------------------------- base check


def base_mismatches(source: MergeSource) -> tuple[list[str], list[str]]:
    """Compare the base with what the adapter was trained on, without loading any weights.

    Returns:
        `(fatal, forceable)`: problems no flag can get past (adapter tensors whose shapes do
        not fit the base: PEFT cannot load them), and mismatches `--force` accepts (another
        name, another config, a different vocabulary, adapter modules the base lacks or base
        modules the adapter does not cover).
    """
    forceable: list[str] = []
    if source.recorded_base and not _same_model(source.base, source.recorded_base):
        forceable.append(
            f"base model: the adapter was trained on {source.recorded_base!r}, merging into {source.base!r}"
        )
    config = _load_base_config(source)
    if getattr(config, "quantization_config", None):
        return [
            (
                f"{source.base}: the checkpoint itself is quantized ({_quant_method(config)}); merging into quantized "
                "weights loses the update. Merge into the unquantized original with --base"
            )
        ], forceable
    forceable += _config_differences(source, config)
    forceable += _vocab_problems(source, config)
    fatal, coverage = _shape_problems(source, config)
    return fatal, forceable + coverage


def _load_base_config(source: MergeSource) -> Any:
    from transformers import AutoConfig

    from dpo_cli.models import needs_remote_code, remote_code_error

    try:
        return AutoConfig.from_pretrained(
            source.base, revision=source.revision, trust_remote_code=source.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        if needs_remote_code(exc):
            raise remote_code_error(
                source.base, "pass --trust-remote-code (or set `model.trust_remote_code: true` in the run's config)"
            ) from None
        raise DpoError(
            f"{source.base}: could not load the base model's config: {str(exc).splitlines()[0]}",
            details=["check the path, or the Hub id and your network / HF_HUB_OFFLINE setting; --base names another"],
        ) from None


def _quant_method(config: Any) -> str:
    quant = config.quantization_config
    method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    return str(getattr(method, "value", method) or "quantized")


# Config fields that, when they differ, make an adapter trained on one model wrong for another.
COMPARED_CONFIG_FIELDS = (
    "model_type",
    "architectures",
    "hidden_size",
    "n_embd",
    "num_hidden_layers",
    "n_layer",
    "intermediate_size",
    "n_inner",
    "num_attention_heads",
    "n_head",
    "num_key_value_heads",
    "vocab_size",
)


def _config_differences(source: MergeSource, config: Any) -> list[str]:
    """The recorded base's config against the chosen base's, when the recorded one is readable."""
    from transformers import AutoConfig

    recorded = source.recorded_base
    if not recorded or _same_model(source.base, recorded):
        return []
    try:
        original = AutoConfig.from_pretrained(recorded, trust_remote_code=source.trust_remote_code)
    except (OSError, ValueError):
        return []  # the original is no longer reachable; the shape checks below still apply
    problems = []
    for key in COMPARED_CONFIG_FIELDS:
        was, now = getattr(original, key, None), getattr(config, key, None)
        if was is not None and was != now:
            problems.append(f"config.{key}: {was!r} in {recorded}, {now!r} in {source.base}")
    return problems


def _vocab_problems(source: MergeSource, config: Any) -> list[str]:
    vocab = getattr(config, "vocab_size", None) or getattr(getattr(config, "text_config", None), "vocab_size", None)
    if not vocab or not _has_tokenizer(source.adapter_dir):
        return []
    from transformers import AutoTokenizer

    size = len(AutoTokenizer.from_pretrained(str(source.adapter_dir), trust_remote_code=source.trust_remote_code))
    if size > vocab:
        return [f"vocabulary: the adapter's tokenizer has {size} tokens, the base model only {vocab} embeddings"]
    return []


def _has_tokenizer(directory: Path) -> bool:
    return (directory / "tokenizer_config.json").is_file()


def _shape_problems(source: MergeSource, config: Any) -> tuple[list[str], list[str]]:
    """Adapter tensors against the ones PEFT creates for this base, built on the meta device."""
    import torch
    from peft import PeftConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    peft_config = PeftConfig.from_pretrained(str(source.adapter_dir))
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=source.trust_remote_code)
    try:
        expected = {
            k: tuple(v.shape) for k, v in get_peft_model_state_dict(get_peft_model(skeleton, peft_config)).items()
        }
    except ValueError as exc:  # e.g. "Target modules {...} not found in the base model"
        return [f"the adapter does not fit {source.base}: {str(exc).splitlines()[0]}"], []
    found = _adapter_shapes(source.adapter_dir)
    fatal = []
    for key in sorted(set(found) & set(expected)):
        if found[key] != expected[key]:
            if 0 in found[key]:
                fatal.append(
                    f"{key}: empty tensor {found[key]} in the adapter (a partitioned ZeRO-3 save); "
                    "train with `launch.deepspeed.zero3_save_16bit_model: true`"
                )
            else:
                fatal.append(f"{key}: shape {found[key]} in the adapter, {expected[key]} for this base")
    forceable = []
    for label, keys in (
        ("adapter tensors with no matching module in the base", set(found) - set(expected)),
        ("base modules the adapter has no weights for", set(expected) - set(found)),
    ):
        if keys:
            example = min(keys).removeprefix("base_model.model.")
            forceable.append(f"{len(keys)} {label} (e.g. {example}): another architecture or layer count")
    if fatal:
        fatal = [*fatal[:5], *([f"... and {len(fatal) - 5} more"] if len(fatal) > 5 else [])]
    return fatal, forceable


def _adapter_shapes(adapter_dir: Path) -> dict[str, tuple[int, ...]]:
    safetensors_path = adapter_dir / "adapter_model.safetensors"
    if safetensors_path.is_file():
        from safetensors import safe_open

        with safe_open(str(safetensors_path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    import torch

    state = torch.load(adapter_dir / "adapter_model.bin", map_location="meta", weights_only=True)
    return {key: tuple(value.shape) for key, value in state.items()}


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
    tokenizer_source = str(source.adapter_dir) if _has_tokenizer(source.adapter_dir) else source.base
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
