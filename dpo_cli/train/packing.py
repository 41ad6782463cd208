"""Padding-free pairs: a DPO batch's chosen and rejected sequences run packed, without padding.

TRL 1.16's `DPOTrainer` pads the batch's 2 x B sequences to the longest one and, having dropped
its own `padding_free` in a refactor, pads even when asked not to. Here the model's forward is
wrapped so that it receives TRL's padded batch and runs it without the padding:

- the real tokens of every sequence are concatenated into packed rows, with `position_ids` that
  restart at 0 for each sequence and no attention mask. transformers reads that as packed rows:
  SDPA, eager and flex attention get a block-diagonal causal mask (`masking_utils`), FlashAttention
  2/3 its variable-length kernels (`cu_seqlens` from the same `position_ids`);
- with FlashAttention everything goes into one row (its kernels skip the masked-out blocks). SDPA
  and eager compute the whole mask, so one row of N tokens would cost N^2 in attention: there the
  sequences are placed first-fit into rows as wide as the batch's longest sequence, which keeps
  attention at or below the padded batch's cost while the linear layers see almost no padding;
- the next-token labels are shifted inside each sequence before packing (`shift_labels`), so no
  sequence is scored on the first token of the next one;
- TRL's fused LM head scores the packed row, and its per-token outputs (log-probs, entropy,
  mean logits, top-1 hits, WPO's log-sum of squared probs) are scattered back to the padded
  `(2B, T - 1)` layout TRL's loss expects, zero at padding exactly as the padded forward leaves them.

TRL's loss code is untouched and sees the same tensors as with padding; only the transformer
computes fewer tokens. The wrapper is installed on the model instance whose `forward` TRL
patched with its fused head, so the policy, the reference (adapters disabled, or a reference
model), the reference precompute and evaluation all run packed.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

# Attention implementations for which transformers turns packed `position_ids` into per-sequence attention.
PACKED_ATTENTION = ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")
# Of those, the ones whose kernels skip the masked-out blocks (cost grows with the sum of squared
# sequence lengths instead of the square of the packed row's length).
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")
_MARK = "_dpo_packed"  # set on the wrapper, which lives and dies with the instance's `forward`
# The only inputs TRL's text DPO passes to the model; anything else (images, token types) runs padded.
_PACKABLE_KWARGS = {"input_ids", "attention_mask", "labels", "fused_lm_head", "use_cache", "output_router_logits"}


def unsupported_reason(model: Any) -> str | None:
    """Why `model` cannot run packed rows, or None when it can.

    Args:
        model: The transformers model (PEFT's base model when wrapped).
    """
    config = getattr(model, "config", None)
    attn = getattr(config, "_attn_implementation", None) if config is not None else None
    if attn is None or not (attn in PACKED_ATTENTION or "flash" in str(attn)):
        return f"attention implementation {attn!r} does not read packed position_ids"
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder models are not packed"
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), None) or getattr(model, "base_model", None)
    forward = getattr(type(backbone), "forward", None) if backbone is not None else None
    if forward is None or "position_ids" not in inspect.signature(forward).parameters:
        return f"{type(model).__name__} takes no position_ids"
    module = inspect.getmodule(type(backbone))
    if not any(hasattr(module, name) for name in ("create_causal_mask", "create_sliding_window_causal_mask")):
        # Older modeling code builds its own masks and would let sequences attend to each other.
        return f"{type(model).__name__} does not build its attention mask with transformers' masking utils"
    if getattr(model, "peft_config", None) and any(
        getattr(c, "is_prompt_learning", False) for c in model.peft_config.values()
    ):
        return "prompt-learning adapters prepend virtual tokens to each sequence"
    return None


def install(model: Any) -> None:
    """Wrap `model.forward` (already patched with TRL's fused LM head) to run padded batches packed.

    Idempotent. A sweep that removes TRL's patch (`del model.forward`) removes this wrapper too,
    and the next trainer installs both afresh.
    """
    if getattr(model.__dict__.get("forward"), _MARK, False):
        return
    fused_forward = model.forward

    @functools.wraps(fused_forward)
    def forward(*args: Any, **kwargs: Any) -> Any:
        if args or not kwargs.get("fused_lm_head") or set(kwargs) - _PACKABLE_KWARGS:
            return fused_forward(*args, **kwargs)
        attention_mask = kwargs.get("attention_mask")
        if attention_mask is None or kwargs.get("labels") is None:
            return fused_forward(*args, **kwargs)
        return packed_forward(fused_forward, width=row_width(model, attention_mask), **kwargs)

    setattr(forward, _MARK, True)
    model.forward = forward


def bins(lengths: list[int], width: int | None) -> list[list[int]]:
    """Sequences (by index) placed into rows of at most `width` tokens, first-fit by decreasing length.

    `width` None puts every sequence in one row.
    """
    if width is None:
        return [list(range(len(lengths)))]
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, left in enumerate(room):
            if lengths[i] <= left:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(width - lengths[i])
    return rows


def pack(input_ids: Any, attention_mask: Any, labels: Any, width: int | None = None) -> tuple[Any, Any, Any, Any]:
    """The real tokens of a right-padded batch as packed rows.

    Args:
        width: Tokens per packed row; None packs everything into one row. A row's unused tail is
            a block of its own (positions from 0, labels -100), attended by nothing else.

    Returns:
        `(input_ids, position_ids, shift_labels, index)`: the first three of shape (rows, width);
        `index` gives, for every real token in the padded batch's row-major order, its flat
        position in the packed rows.
    """
    import torch

    lengths = attention_mask.sum(dim=1).tolist()
    rows = bins(lengths, width)
    width = sum(lengths) if width is None else width
    start: dict[int, int] = {}  # sequence -> its first flat position in the packed rows
    tails: list[tuple[int, int]] = []
    for r, row in enumerate(rows):
        offset = 0
        for i in row:
            start[i] = r * width + offset
            offset += lengths[i]
        if offset < width:
            tails.append((r * width + offset, width - offset))
    device = input_ids.device
    index = torch.cat([torch.arange(start[i], start[i] + lengths[i]) for i in range(len(lengths))]).to(device)
    keep = attention_mask.bool()
    total = len(rows) * width
    # Row tails hold a real token of the batch, not the pad token: transformers warns about padding
    # without an attention mask when a row ends in the pad id, and tails attend only to themselves.
    ids = input_ids[0, 0].expand(total).clone()
    pos = torch.zeros(total, dtype=torch.long, device=device)
    lab = labels.new_full((total,), -100)
    # Labels of the next token within the same sequence; a sequence's last token predicts nothing.
    shifted = torch.cat([labels[:, 1:], labels.new_full((labels.size(0), 1), -100)], dim=1)
    ids[index] = input_ids[keep]
    pos[index] = (attention_mask.long().cumsum(dim=1) - 1)[keep]
    lab[index] = shifted[keep]
    for first, size in tails:
        pos[first : first + size] = torch.arange(size, device=device)
    shape = (len(rows), width)
    return ids.view(shape), pos.view(shape), lab.view(shape), index


def row_width(model: Any, attention_mask: Any) -> int | None:
    """One packed row for kernels that skip masked blocks; otherwise rows as wide as the longest
    sequence, so a dense-mask kernel (SDPA, eager) attends over no more than a padded batch would."""
    attn = getattr(model.config, "_attn_implementation", None)
    if attn in VARLEN_ATTENTION or "flash" in str(attn):
        return None
    return int(attention_mask.sum(dim=1).max())


def packed_forward(
    fused_forward: Any, *, input_ids: Any, attention_mask: Any, labels: Any, width: int | None = None, **kwargs: Any
) -> Any:
    """Run TRL's fused-head forward on the packed batch and return its outputs in the padded layout."""
    import torch

    if not bool((attention_mask[:, :-1] >= attention_mask[:, 1:]).all()):
        # Not right-padded (a custom collator): packing would reorder tokens, so run it as it is.
        return fused_forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
    packed_ids, position_ids, shift_labels, index = pack(input_ids, attention_mask, labels, width)
    out = fused_forward(
        input_ids=packed_ids, position_ids=position_ids, attention_mask=None, shift_labels=shift_labels, **kwargs
    )
    keep = attention_mask.bool()
    rows, cols = keep.shape
    packed_shape = packed_ids.shape

    def unpack(value: Any) -> Any:
        if value is None or not torch.is_tensor(value) or value.shape != packed_shape:
            return value
        # masked_scatter keeps the autograd graph to the packed values; the last column predicts nothing.
        padded = value.new_zeros(rows, cols).masked_scatter(keep, value.reshape(-1)[index])
        return padded[:, :-1]

    for name in ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1", "label_mask"):
        if hasattr(out, name):
            setattr(out, name, unpack(getattr(out, name)))
    return out
