"""Loading models and tokenizers from the validated config: the one place that assembles them.

Training (policy, reference), evaluation (policy and reference for generation) and pair
sampling all load through here, so every load gets the same dtype, revision, attention
implementation, 4-bit settings, device placement and error messages. `to_bnb_config` is pure
(config in, `BitsAndBytesConfig` out). Heavy imports stay inside the functions so that config
checks never import torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_cli.errors import EXIT_USAGE, DpoError

if TYPE_CHECKING:
    from transformers import BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase

    from dpo_cli.config.schema import ModelSection, QuantizationSection, RunConfig


def torch_dtype(name: str) -> Any:
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def to_bnb_config(quant: QuantizationSection) -> BitsAndBytesConfig:
    """4-bit NF4 (QLoRA) settings as `transformers.BitsAndBytesConfig`."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=quant.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=torch_dtype(quant.bnb_4bit_compute_dtype),
        bnb_4bit_quant_storage=torch_dtype(quant.bnb_4bit_quant_storage),
    )


def model_load_kwargs(model: ModelSection, cfg: RunConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dtype": torch_dtype(model.dtype), "trust_remote_code": model.trust_remote_code}
    if model.revision:
        kwargs["revision"] = model.revision
    if model.attn_implementation:
        kwargs["attn_implementation"] = model.attn_implementation
    if cfg.quantization is not None:
        kwargs["quantization_config"] = to_bnb_config(cfg.quantization)
        device_map = quantized_device_map()
        if device_map is not None:
            kwargs["device_map"] = device_map
    return kwargs


def quantized_device_map() -> dict[str, int] | None:
    # 4-bit weights cannot be moved after loading, so each process loads onto its own GPU.
    import torch
    from transformers.integrations import is_deepspeed_zero3_enabled

    # Under ZeRO-3 DeepSpeed places the (sharded) weights; transformers refuses a device_map there.
    if not torch.cuda.is_available() or is_deepspeed_zero3_enabled():
        return None
    return {"": int(os.environ.get("LOCAL_RANK", "0"))}


# Tokenizers already loaded in this process, by where they came from. `dpo train` loads the same
# one for its data checks and for training; parsing a 50k-token vocabulary twice costs a second.
_TOKENIZERS: dict[tuple, Any] = {}


def load_tokenizer(cfg: RunConfig) -> PreTrainedTokenizerBase:
    """Load the tokenizer, give it a pad token if it has none, apply a custom chat template.

    Each call returns its own copy: callers (TRL) may change the tokenizer they get.
    """
    import copy

    from transformers import AutoTokenizer

    source = cfg.model.tokenizer_name_or_path or cfg.model.name_or_path
    key = (source, cfg.model.revision, cfg.model.trust_remote_code, _stamp(source))
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = from_pretrained(
            AutoTokenizer, source, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code
        )
    tokenizer = copy.deepcopy(_TOKENIZERS[key])
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise DpoError(f"{source}: tokenizer has neither a pad nor an EOS token", exit_code=EXIT_USAGE)
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.model.chat_template:
        path = Path(cfg.model.chat_template)
        if not path.is_file():
            raise DpoError(f"model.chat_template: {path}: file not found", exit_code=EXIT_USAGE)
        tokenizer.chat_template = path.read_text(encoding="utf-8")
    return tokenizer


def _stamp(source: str) -> tuple[float, ...]:
    """Modification times of a local tokenizer's files, so a rewritten tokenizer is loaded afresh."""
    path = Path(source)
    if not path.is_dir():
        return ()
    return tuple(p.stat().st_mtime for p in sorted(path.glob("tokenizer*")))


_SAME = object()


def load_causal_lm(cfg: RunConfig, source: str | None = None, *, revision: Any = _SAME) -> PreTrainedModel:
    """A causal LM loaded the way the config says (dtype, attention, 4-bit, device map).

    Args:
        cfg: The run config.
        source: Weights to load instead of `model.name_or_path` (trained weights, a reference).
        revision: The revision to load; unset: `model.revision`.
    """
    from transformers import AutoModelForCausalLM

    update = {} if source is None else {"name_or_path": source}
    if revision is not _SAME:
        update["revision"] = revision
    section = cfg.model.model_copy(update=update) if update else cfg.model
    return from_pretrained(AutoModelForCausalLM, section.name_or_path, **model_load_kwargs(section, cfg))


def with_adapter(model: Any, adapter: str | Path, **kwargs: Any) -> Any:
    """`model` with a saved PEFT adapter attached."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter), **kwargs)


def inference_device() -> str:
    """Where generation runs when the model is not placed by a device map: the GPU when there is one."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_policy(cfg: RunConfig) -> PreTrainedModel:
    """The model to train: full weights, a base for a new LoRA, or base + an existing adapter."""
    model = load_causal_lm(cfg)
    if cfg.quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(cfg.training.gradient_checkpointing)
        )
    if cfg.model.adapter:
        adapter = Path(cfg.model.adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise DpoError(f"model.adapter: {adapter}: no adapter_config.json there", exit_code=EXIT_USAGE)
        model = with_adapter(model, adapter, is_trainable=True)
    return model


def load_reference(cfg: RunConfig, *, precomputed: bool) -> PreTrainedModel | None:
    """The frozen reference model, or None where TRL needs none.

    With LoRA, TRL computes the reference with the adapters disabled (or, when continuing an
    adapter, with a frozen copy of it). With precomputed reference log-probs, the starting
    policy itself provides them before training. Only full fine-tuning without precompute, or
    an explicit separate reference, loads a second model.

    Args:
        cfg: The run config.
        precomputed: The reference log-probs are computed once before training.
    """
    ref = cfg.reference
    if ref.kind == "model":
        model = load_causal_lm(cfg, ref.name_or_path, revision=ref.revision)
    elif cfg.lora is not None or cfg.model.adapter or precomputed:
        return None
    else:
        model = load_causal_lm(cfg)
    model.eval()
    model.requires_grad_(False)
    return model


def from_pretrained(cls: Any, source: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained(source, ...)` with dpo's messages for a missing model or one that needs its own code."""
    try:
        return cls.from_pretrained(source, **kwargs)
    except OSError as exc:
        hint = "check the path, or the Hub id and your network / HF_HUB_OFFLINE setting"
        raise DpoError(f"{source}: could not load: {str(exc).splitlines()[0]}", details=[hint]) from None
    except ValueError as exc:
        if needs_remote_code(exc):
            raise remote_code_error(source, "set `model.trust_remote_code: true`") from None
        raise


def needs_remote_code(exc: BaseException) -> bool:
    """True when transformers refused to load a model because it ships its own code."""
    return isinstance(exc, ValueError) and "trust_remote_code" in str(exc)


def remote_code_error(source: str, how: str) -> DpoError:
    """The one message for a model that needs its own code; `how` says which setting allows it."""
    return DpoError(
        f"{source}: this model needs its own Python code (a custom architecture in the model repository), "
        f"which is not run unless allowed: {how}",
        exit_code=EXIT_USAGE,
        details=["allow it only for a model whose source you trust: the code runs with your permissions"],
    )


def quiet_known_noise() -> None:
    """Silence warnings that are harmless in this setup, so the ones that matter stay visible."""
    import logging
    import warnings

    # bitsandbytes' CPU backend looks for an optional kernels package on import and logs its absence.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    for pattern in (
        r".*is_gradient_checkpointing.*is deprecated",  # transformers 5 internal rename, not ours to fix
        r".*'pin_memory' argument is set as true but no accelerator",  # CPU runs
        r".*fan_in_fan_out is set to False but the target module is `Conv1D`",  # GPT-2 style layers, PEFT fixes it
    ):
        warnings.filterwarnings("ignore", message=pattern)
