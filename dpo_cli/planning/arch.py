"""A model's shape from its `config.json` alone: sizes, linear layers, parameter counts.

`dpo plan` must never import torch (transformers' `AutoConfig` does), so the config is read as
plain JSON: from `--model-config`, a local model directory, a copy shipped in
`known_configs/` for a few popular Hub ids, or the Hub cache via `huggingface_hub` (config.json
only, never weights).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.fsio import read_json_object

KNOWN_CONFIGS = Path(__file__).parent / "known_configs"


@dataclass(frozen=True)
class Linear:
    """One linear layer inside a decoder block, by the leaf name LoRA targets use."""

    name: str
    fan_in: int
    fan_out: int
    bias: bool = False

    @property
    def params(self) -> int:
        return self.fan_in * self.fan_out + (self.fan_out if self.bias else 0)


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer that memory and FLOPs depend on."""

    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    gated_mlp: bool  # SwiGLU (gate, up, down) vs a plain two-layer MLP (GPT-2)
    rms_norm: bool  # RMSNorm (Llama family) vs LayerNorm with bias (GPT-2)
    positions: int  # learned position embeddings (GPT-2); 0 with rotary embeddings
    checkpoint_dtype: str | None  # `torch_dtype` / `dtype` in config.json
    source: str  # where the config came from, for the report

    def block_linears(self) -> list[Linear]:
        """The linear layers of one decoder block, in forward order."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        if self.model_type == "gpt2":
            # GPT-2's Conv1D layers; peft adapts them like linears (`c_proj` names two of them).
            return [
                Linear("c_attn", h, 3 * h, bias=True),
                Linear("c_proj", h, h, bias=True),
                Linear("c_fc", h, self.intermediate, bias=True),
                Linear("c_proj", self.intermediate, h, bias=True),
            ]
        qkv_bias = self.model_type == "qwen2"
        return [
            Linear("q_proj", h, q, bias=qkv_bias),
            Linear("k_proj", h, kv, bias=qkv_bias),
            Linear("v_proj", h, kv, bias=qkv_bias),
            Linear("o_proj", q, h),
            Linear("gate_proj", h, self.intermediate),
            Linear("up_proj", h, self.intermediate),
            Linear("down_proj", self.intermediate, h),
        ]

    @property
    def norm_params(self) -> int:
        """Normalisation weights (and LayerNorm biases): two per block plus the final one."""
        per_norm = self.hidden if self.rms_norm else 2 * self.hidden
        return (2 * self.layers + 1) * per_norm

    @property
    def linear_params(self) -> int:
        """Parameters in the blocks' linear layers: what 4-bit quantization packs."""
        return self.layers * sum(layer.params for layer in self.block_linears())

    @property
    def embedding_params(self) -> int:
        """Token (and learned position) embeddings plus an untied output head."""
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        return self.vocab * self.hidden + self.positions * self.hidden + head

    @property
    def params(self) -> int:
        return self.linear_params + self.embedding_params + self.norm_params


def shape_from_config(raw: dict[str, Any], source: str) -> ModelShape:
    """Normalise the key names of GPT-2 and Llama-style configs into one `ModelShape`.

    Raises:
        DpoError: The config lacks the sizes a decoder-only transformer needs.
    """
    text = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else raw
    model_type = str(raw.get("model_type", "unknown"))

    def pick(*names: str) -> Any:
        for name in names:
            if text.get(name) is not None:
                return text[name]
        return None

    hidden = pick("hidden_size", "n_embd", "d_model")
    layers = pick("num_hidden_layers", "n_layer", "num_layers")
    heads = pick("num_attention_heads", "n_head")
    vocab = pick("vocab_size")
    missing = [
        n
        for n, v in (("hidden size", hidden), ("layers", layers), ("heads", heads), ("vocab_size", vocab))
        if v is None
    ]
    if missing:
        raise DpoError(
            f"{source}: not a decoder-only transformer config dpo can plan (missing {', '.join(missing)})",
            exit_code=EXIT_USAGE,
        )
    gpt2 = model_type == "gpt2"
    intermediate = pick("intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
    kv_heads = pick("num_key_value_heads") or heads
    head_dim = pick("head_dim") or hidden // heads
    tied = raw.get("tie_word_embeddings", text.get("tie_word_embeddings", True))
    return ModelShape(
        model_type=model_type,
        hidden=int(hidden),
        layers=int(layers),
        heads=int(heads),
        kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        intermediate=int(intermediate),
        vocab=int(vocab),
        tied_embeddings=bool(tied),
        gated_mlp=not gpt2,
        rms_norm=not gpt2,
        positions=int(pick("n_positions") or 0) if gpt2 else 0,
        checkpoint_dtype=raw.get("torch_dtype") or raw.get("dtype"),
        source=source,
    )


def load_model_shape(
    name_or_path: str, model_config: str | Path | None = None, revision: str | None = None
) -> ModelShape:
    """Find and read the model's config.json without loading weights or importing torch.

    Args:
        name_or_path: `model.name_or_path` from the run config.
        model_config: An explicit config.json (`--model-config`), which wins over everything.
        revision: Hub revision, for the Hub cache look-up.

    Raises:
        DpoError: No config could be found (with what was tried).
    """
    if model_config is not None:
        return shape_from_config(read_json_object(Path(model_config), what="model config"), str(model_config))
    local = Path(name_or_path)
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise DpoError(f"{local}: no config.json in this model directory", exit_code=EXIT_USAGE)
        return shape_from_config(
            read_json_object(local / "config.json", what="model config"), str(local / "config.json")
        )
    known = known_config(name_or_path)
    if known is not None:
        return known
    path = _hub_config(name_or_path, revision)
    return shape_from_config(
        read_json_object(path, what="model config"), f"{name_or_path} (config.json from the Hub cache)"
    )


def known_config(name: str) -> ModelShape | None:
    """The shipped config of a popular Hub model, matched by its id (case-insensitive)."""
    for path in sorted(KNOWN_CONFIGS.glob("*.json")):
        raw = read_json_object(path, what="model config")
        if name.lower() in (alias.lower() for alias in raw.get("_dpo_aliases", [])):
            return shape_from_config(raw, f"{name} (shipped copy: {raw.get('_dpo_source', path.name)})")
    return None


def _hub_config(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import hf_hub_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        return Path(hf_hub_download(repo_id, "config.json", revision=revision, local_files_only=offline))
    except Exception as exc:  # noqa: BLE001  (huggingface_hub raises a dozen types for "not there"; all mean the same)
        shipped = ", ".join(sorted(p.stem.replace("--", "/") for p in KNOWN_CONFIGS.glob("*.json")))
        raise DpoError(
            f"{repo_id}: could not read its config.json ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            exit_code=EXIT_USAGE,
            details=[
                "pass the model's config.json with --model-config PATH (no weights are needed)",
                f"configs shipped for offline planning: {shipped}",
            ],
        ) from None
