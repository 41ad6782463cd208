"""Generations for the held-out prompts, from the trained policy and from its reference.

Prompts are rendered with the tokenizer's chat template (the same one training used),
generated in batches with left padding, and seeded per batch (`seed + first prompt index`),
so a rerun with the same settings reproduces the same text. Every finished batch is appended
to `generations/<label>.jsonl` at once; a rerun skips batches already there whose settings
and model files match, so an interrupted eval resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.fsio import append_jsonl
from dpo_cli.generation import Prompt, fingerprint, generate_batch, generated_length, read_cache

if TYPE_CHECKING:
    from dpo_cli.config.schema import EvalSection, RunConfig


def eval_prompts(dataset: Any, limit: int) -> list[Prompt]:
    """The first `limit` prompts of the eval split, in either TRL format.

    Raises:
        DpoError: The split has no prompts to generate for.
    """
    prompts = []
    for index in range(min(limit, len(dataset))):
        row = dataset[index]
        prompt = row.get("prompt")
        if prompt is None and isinstance(row.get("chosen"), list):
            prompt = row["chosen"][:-1]  # implicit prompt: the dialogue before the last answer
        if isinstance(prompt, list) and prompt:
            users = [m["content"] for m in prompt if m.get("role") == "user"]
            prompts.append(Prompt(index, list(prompt), users[-1] if users else prompt[-1]["content"]))
        elif isinstance(prompt, str) and prompt.strip():
            prompts.append(Prompt(index, [{"role": "user", "content": prompt}], prompt))
    if not prompts:
        raise DpoError(
            "eval: the held-out split has no prompts to generate for",
            exit_code=EXIT_USAGE,
            details=["set `data.columns.prompt`, or `eval.generate: false` to skip generation"],
        )
    return prompts


def settings_key(settings: EvalSection, model_id: str, prompt: Prompt) -> str:
    fields = [
        model_id,
        settings.max_new_tokens,
        settings.temperature,
        settings.top_p,
        settings.seed,
        settings.batch_size,
        json.dumps(prompt.messages, sort_keys=True),
    ]
    return hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()[:16]


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[Prompt],
    settings: EvalSection,
    *,
    label: str,
    model_id: str,
    out_path: Path,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Generate a response per prompt (or reuse cached ones) and return rows in prompt order.

    Args:
        model: Causal LM in eval mode, with its adapters set as wanted.
        tokenizer: Tokenizer with a pad token.
        prompts: From `eval_prompts`.
        settings: The `eval:` section (lengths, sampling, seed, batch size).
        label: `policy` or `reference`, recorded in each row.
        model_id: Identifies the weights (see `fingerprint`), part of the cache key.
        out_path: JSONL file the rows are appended to.
        progress: Show a progress bar on stderr.
    """
    from tqdm.auto import tqdm

    cached = read_cache(out_path)
    keys = {p.index: settings_key(settings, model_id, p) for p in prompts}
    rows = {i: r for i, r in cached.items() if i in keys and r.get("key") == keys[i]}
    tokenizer.padding_side = "left"  # generation appends on the right; prompts must end there
    batches = [prompts[i : i + settings.batch_size] for i in range(0, len(prompts), settings.batch_size)]
    bar = tqdm(total=len(prompts), desc=f"generate {label}", unit="prompt", file=sys.stderr, disable=not progress)
    with bar:
        for batch in batches:
            # A batch is reused only whole: sampling depends on the batch, so a partly cached
            # batch is generated again to give the same text a fresh run would.
            if all(p.index in rows for p in batch):
                bar.update(len(batch))
                continue
            new, eos_ids = generate_batch(
                model,
                tokenizer,
                batch,
                max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
                seed=settings.seed,
            )
            fresh = []
            for prompt, tokens in zip(batch, new):
                fresh.append(
                    {
                        "index": prompt.index,
                        "label": label,
                        "prompt": prompt.text,
                        "response": tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                        "finished": any(t in eos_ids for t in tokens),
                        "new_tokens": generated_length(tokens, eos_ids, tokenizer.pad_token_id),
                        "key": keys[prompt.index],
                    }
                )
            append_jsonl(out_path, fresh)
            rows.update({r["index"]: r for r in fresh})
            bar.update(len(batch))
    return [rows[p.index] for p in prompts]


@dataclass
class GenerationModels:
    """The loaded models, and how to switch between the policy and the reference."""

    tokenizer: Any
    policy: Any
    reference: Any
    reference_context: Any  # a callable returning a context manager for reference generation
    policy_id: str
    reference_id: str


def load_generation_models(cfg: RunConfig, weights: Path) -> GenerationModels:
    """Load policy and reference for generation, sharing the base weights where LoRA allows.

    With a LoRA adapter, one base model carries the trained adapter: the reference is the same
    model with the adapter disabled (or switched to the starting adapter of `model.adapter`),
    as in training. A full model or `reference.kind: model` loads a second model.
    """
    from dpo_cli.models import inference_device, load_causal_lm, load_tokenizer, with_adapter

    tokenizer = load_tokenizer(cfg)
    device = inference_device()
    ref_path = cfg.reference.name_or_path if cfg.reference.kind == "model" else cfg.model.name_or_path
    reference_id = fingerprint(ref_path) + (f"+{fingerprint(cfg.model.adapter)}" if cfg.model.adapter else "")
    if (weights / "adapter_config.json").is_file():
        policy = with_adapter(load_causal_lm(cfg), weights, adapter_name="default")
        reference, context = policy, policy.disable_adapter
        if cfg.model.adapter:
            policy.load_adapter(cfg.model.adapter, adapter_name="start")
            context = _adapter_switch(policy, "start")
    else:
        policy = load_causal_lm(cfg, str(weights))
        reference, context = None, nullcontext
    if cfg.reference.kind == "model" or reference is None:
        reference = load_causal_lm(cfg, ref_path, revision=cfg.reference.revision)
        context = nullcontext
    for model in {id(policy): policy, id(reference): reference}.values():
        model.eval()
        if cfg.quantization is None:
            model.to(device)
    return GenerationModels(tokenizer, policy, reference, context, fingerprint(weights), reference_id)


def _adapter_switch(model: Any, name: str) -> Any:
    from contextlib import contextmanager

    @contextmanager
    def switch() -> Any:
        model.set_adapter(name)
        try:
            yield
        finally:
            model.set_adapter("default")

    return switch
