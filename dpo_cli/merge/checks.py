"""Checks before a merge writes anything: the output directory, and whether the base matches the adapter.

The base is compared by its recorded name, its recorded config where it can still be read, the
tokenizer's vocabulary and the shape of every adapter tensor against the modules PEFT would adapt
in this base (built on the `meta` device, so this costs no memory even for a 70B model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.merge.source import MergeSource, same_model

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
    if source.recorded_base and not same_model(source.base, source.recorded_base):
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
    if not recorded or same_model(source.base, recorded):
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
    if not vocab or not has_tokenizer(source.adapter_dir):
        return []
    from transformers import AutoTokenizer

    size = len(AutoTokenizer.from_pretrained(str(source.adapter_dir), trust_remote_code=source.trust_remote_code))
    if size > vocab:
        return [f"vocabulary: the adapter's tokenizer has {size} tokens, the base model only {vocab} embeddings"]
    return []


def has_tokenizer(directory: Path) -> bool:
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
