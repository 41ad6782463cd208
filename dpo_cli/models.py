"""Small builders from the validated config to the libraries' own objects.

`to_*_config` functions are pure: config in, library object out. The `load_*` functions load
weights with `from_pretrained`. Heavy imports stay inside the functions so that config checks
never import torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_cli.errors import EXIT_USAGE, DpoError

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase
    from trl import DPOConfig

    from dpo_cli.config.schema import LoraSection, ModelSection, QuantizationSection, RunConfig

# Defaults where dpo deliberately differs from TRL; every other DPOConfig default is TRL's own.
DPO_DEFAULTS: dict[str, Any] = {
    # Step 1's loss is computed before any update, so it is the closed-form check of the setup.
    "logging_first_step": True,
    # Trackers are opt-in: a run must not try to reach wandb from an offline cluster node.
    "report_to": "none",
}


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


def dpo_config_kwargs(cfg: RunConfig, output_dir: Path) -> dict[str, Any]:
    """Keyword arguments for `DPOConfig`: dpo's defaults, then every key the user set."""
    kwargs: dict[str, Any] = {**DPO_DEFAULTS, **cfg.training_overrides()}
    kwargs["output_dir"] = str(output_dir)
    if kwargs.get("push_to_hub") and not kwargs.get("hub_model_id"):
        from dpo_cli.publish.hub import default_repo_name

        kwargs["hub_model_id"] = default_repo_name(Path(cfg.output_dir))
    _rename_deprecated_checkpointing(kwargs)
    if cfg.model.trust_remote_code:
        kwargs["trust_remote_code"] = True
    if not kwargs.get("use_cpu") and launched_without_gpu():
        kwargs["use_cpu"] = True
    return kwargs


def launched_without_gpu() -> bool:
    """True in a rank of a multi-process launch on a machine where no GPU is visible.

    Such a run trains on the CPU whatever `training.use_cpu` says: without it transformers sizes
    the batch for one process while DeepSpeed counts every rank, and ZeRO refuses to start
    ("train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size").
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch

    return not torch.cuda.is_available()


def _rename_deprecated_checkpointing(kwargs: dict[str, Any]) -> None:
    """`gradient_checkpointing*` -> `activation_checkpointing*` where transformers has the new names.

    transformers 5.24 renamed them, keeping the old ones as deprecated aliases that warn on every
    run; older 5.x releases only know the old names. TRL's trainers read either (they mirror).
    """
    from dataclasses import fields

    from transformers import TrainingArguments

    if "activation_checkpointing" not in {f.name for f in fields(TrainingArguments)}:
        return
    for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                     ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
        if old in kwargs and new not in kwargs:
            kwargs[new] = kwargs.pop(old)


def to_dpo_config(cfg: RunConfig, output_dir: Path) -> DPOConfig:
    """Build TRL's `DPOConfig`; TRL's own checks of values become config errors.

    Raises:
        DpoError: TRL or transformers rejected a `training:` value.
    """
    from trl import DPOConfig

    try:
        return DPOConfig(**dpo_config_kwargs(cfg, output_dir))
    except (TypeError, ValueError) as exc:
        raise DpoError(f"training: DPOConfig rejected the settings: {exc}", exit_code=EXIT_USAGE) from None


def model_load_kwargs(model: ModelSection, cfg: RunConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dtype": torch_dtype(model.dtype), "trust_remote_code": model.trust_remote_code}
    if model.revision:
        kwargs["revision"] = model.revision
    if model.attn_implementation:
        kwargs["attn_implementation"] = model.attn_implementation
    if cfg.quantization is not None:
        kwargs["quantization_config"] = to_bnb_config(cfg.quantization)
        device_map = _quantized_device_map()
        if device_map is not None:
            kwargs["device_map"] = device_map
    return kwargs


def _quantized_device_map() -> dict[str, int] | None:
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
        _TOKENIZERS[key] = _from_pretrained(
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


def load_policy(cfg: RunConfig) -> PreTrainedModel:
    """The model to train: full weights, a base for a new LoRA, or base + an existing adapter."""
    from transformers import AutoModelForCausalLM

    model = _from_pretrained(AutoModelForCausalLM, cfg.model.name_or_path, **model_load_kwargs(cfg.model, cfg))
    if cfg.quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(cfg.training.gradient_checkpointing)
        )
    if cfg.model.adapter:
        from peft import PeftModel

        adapter = Path(cfg.model.adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise DpoError(f"model.adapter: {adapter}: no adapter_config.json there", exit_code=EXIT_USAGE)
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    return model


def load_reference(cfg: RunConfig) -> PreTrainedModel | None:
    """The frozen reference model, or None where TRL needs none.

    With LoRA, TRL computes the reference with the adapters disabled (or, when continuing an
    adapter, with a frozen copy of it). With precomputed reference log-probs, the starting
    policy itself provides them before training. Only full fine-tuning without precompute, or
    an explicit separate reference, loads a second model.
    """
    from transformers import AutoModelForCausalLM

    from dpo_cli.train.speed import precompute_choice

    ref = cfg.reference
    if ref.kind == "model":
        section = cfg.model.model_copy(update={"name_or_path": ref.name_or_path, "revision": ref.revision})
        model = _from_pretrained(AutoModelForCausalLM, section.name_or_path, **model_load_kwargs(section, cfg))
    elif cfg.lora is not None or cfg.model.adapter or precompute_choice(cfg)[0]:
        return None
    else:
        model = _from_pretrained(AutoModelForCausalLM, cfg.model.name_or_path, **model_load_kwargs(cfg.model, cfg))
    model.eval()
    model.requires_grad_(False)
    return model


def _from_pretrained(cls: Any, source: str, **kwargs: Any) -> Any:
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
