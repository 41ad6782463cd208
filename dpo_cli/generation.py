"""The generation core shared by `dpo eval` and pair sampling (`generate-pairs`, `iterate`).

Prompts are rendered with the tokenizer's chat template (the same one training used),
generated in batches with left padding and seeded per batch (`seed + first prompt index`), so
a rerun with the same settings reproduces the same text. Results are appended to JSONL
caches batch by batch (`dpo_cli.fsio.append_jsonl`), read back here with `read_cache`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Prompt:
    """One prompt: as messages for the chat template, and as text for a judge or a scorer."""

    index: int
    messages: list[dict[str, str]] | None
    text: str


def fingerprint(path: str | Path) -> str:
    """Sizes and modification times of a model's files: changes when the weights change."""
    root = Path(path)
    if not root.is_dir():
        return str(path)  # a Hub id: its name is all we know without the network
    parts = [
        f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
        for p in sorted(root.iterdir())
        if p.is_file() and p.suffix in {".safetensors", ".bin", ".json", ".jinja"}
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def read_cache(path: Path) -> dict[int, dict[str, Any]]:
    """Rows already generated, by prompt index; a torn last line (killed mid-write) is ignored."""
    rows: dict[int, dict[str, Any]] = {}
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[row["index"]] = row
    return rows


def render(tokenizer: Any, prompt: Prompt) -> str:
    """The text the model continues: the chat template with a generation prompt, or the plain text."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(prompt.messages, tokenize=False, add_generation_prompt=True)
    return prompt.text


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token id that ends a generation: the model's generation config's and the tokenizer's."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return found


def generated_length(tokens: list[int], eos: set[int], pad_id: int | None) -> int:
    """New tokens up to and including the first EOS (padding after it does not count)."""
    for n, token in enumerate(tokens):
        if token in eos:
            return n + 1
    return len([t for t in tokens if t != pad_id]) if pad_id not in eos else len(tokens)


def generate_batch(
    model: Any,
    tokenizer: Any,
    batch: list[Prompt],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    num_return_sequences: int | None = None,
) -> tuple[list[list[int]], set[int]]:
    """Generate for one batch of prompts: the new tokens of each sequence, and the EOS ids.

    Sequences come in prompt order, `num_return_sequences` per prompt when sampling with it.
    Temperature 0 decodes greedily. The batch is seeded with `seed + first prompt index`.
    """
    import torch
    from transformers import set_seed

    tokenizer.padding_side = "left"  # generation appends on the right; prompts must end there
    eos = eos_ids(model, tokenizer)
    device = next(model.parameters()).device
    set_seed(seed + batch[0].index)
    texts = [render(tokenizer, p) for p in batch]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    if temperature > 0:
        mode: dict[str, Any] = {"do_sample": True, "temperature": temperature, "top_p": top_p}
        if num_return_sequences is not None:
            mode["num_return_sequences"] = num_return_sequences
    else:
        mode = {"do_sample": False}
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **mode)
    return out[:, inputs["input_ids"].shape[1] :].tolist(), eos
