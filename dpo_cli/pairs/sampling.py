"""Several sampled responses per prompt, from the local model (batched) or an OpenAI-compatible endpoint.

Generation is the slow part of making pairs, so every finished batch is appended to a JSONL
cache at once, keyed by the model's files, the sampling settings and the prompt. A rerun
reuses every batch whose key still matches and samples only the rest: a crash costs at most
one batch. Sampling is seeded per batch (`seed + first prompt index`), so a batch sampled
again gives the same text as the first time.
"""

from __future__ import annotations

import hashlib
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dpo_cli.fsio import append_jsonl
from dpo_cli.generation import Prompt, fingerprint, generate_batch, generated_length, read_cache

if TYPE_CHECKING:
    from dpo_cli.config.schema import EndpointSection, RunConfig


@dataclass(frozen=True)
class Sampling:
    """How responses are sampled: `n` per prompt; temperature 0 decodes greedily (then `n` is 1)."""

    n: int
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int
    batch_size: int


class Sampler(Protocol):
    model_id: str  # identifies the weights (or the endpoint and model) in caches and metadata
    chat: bool  # prompts go through a chat template (pairs are then written as conversations)

    def sample(self, batch: list[Prompt], sampling: Sampling) -> list[list[dict[str, Any]]]: ...


class LocalSampler:
    """The config's model (`model.name_or_path`, with `model.adapter` when set), on the GPU when there is one."""

    def __init__(self, cfg: RunConfig):
        from dpo_cli.models import inference_device, load_causal_lm, load_tokenizer, with_adapter

        self.tokenizer = load_tokenizer(cfg)
        model = load_causal_lm(cfg)
        self.model_id = fingerprint(cfg.model.name_or_path)
        if cfg.model.adapter:
            model = with_adapter(model, cfg.model.adapter)
            if cfg.quantization is None:
                model = model.merge_and_unload()  # one matmul per layer instead of two: faster sampling
            self.model_id += f"+{fingerprint(cfg.model.adapter)}"
        if cfg.quantization is None:
            model.to(inference_device())
        self.model = model.eval()
        self.chat = bool(self.tokenizer.chat_template)
        self.name = cfg.model.name_or_path + (f" + adapter {cfg.model.adapter}" if cfg.model.adapter else "")

    def sample(self, batch: list[Prompt], sampling: Sampling) -> list[list[dict[str, Any]]]:
        tokenizer = self.tokenizer
        new, eos_ids = generate_batch(
            self.model,
            tokenizer,
            batch,
            max_new_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            num_return_sequences=sampling.n,
        )
        per_prompt = len(new) // len(batch)
        return [
            [
                _sample(
                    tokenizer.decode(t, skip_special_tokens=True),
                    any(x in eos_ids for x in t),
                    generated_length(t, eos_ids, tokenizer.pad_token_id),
                )
                for t in new[i * per_prompt : (i + 1) * per_prompt]
            ]
            for i in range(len(batch))
        ]


class EndpointSampler:
    """An OpenAI-compatible chat endpoint; a batch's requests run concurrently, `batch_size` x `n` at a time."""

    def __init__(self, section: EndpointSection):
        from dpo_cli.evaluation.judges import ChatEndpoint

        self.endpoint = ChatEndpoint(section, key="generate.endpoint", role="generation")
        self.model_id = f"{section.base_url} {section.model}"
        self.name = f"endpoint {section.base_url} model {section.model}"
        self.chat = True

    def check(self) -> None:
        """One short call, so that a dead endpoint fails in seconds."""
        self.endpoint.complete([{"role": "user", "content": "Reply with the single word: ready"}], max_tokens=1)

    def sample(self, batch: list[Prompt], sampling: Sampling) -> list[list[dict[str, Any]]]:
        def one(job: tuple[Prompt, int]) -> dict[str, Any]:
            prompt, k = job
            params: dict[str, Any] = {"temperature": sampling.temperature}
            if sampling.temperature > 0:
                # `seed` is honoured by servers that support it (vLLM, OpenAI); the others ignore it.
                params |= {"top_p": sampling.top_p, "seed": sampling.seed + prompt.index * sampling.n + k}
            text, finished = self.endpoint.complete(prompt.messages, max_tokens=sampling.max_new_tokens, **params)
            return _sample(text, finished, None)

        jobs = [(p, k) for p in batch for k in range(sampling.n)]
        with ThreadPoolExecutor(max_workers=min(len(jobs), 32)) as pool:
            done = list(pool.map(one, jobs))
        return [done[i * sampling.n : (i + 1) * sampling.n] for i in range(len(batch))]


def make_sampler(cfg: RunConfig) -> LocalSampler | EndpointSampler:
    """The endpoint sampler when `generate.endpoint` is set (checked with one call), else the local model."""
    if cfg.generate.endpoint is not None:
        sampler = EndpointSampler(cfg.generate.endpoint)
        sampler.check()
        return sampler
    from dpo_cli.models import quiet_known_noise

    quiet_known_noise()
    return LocalSampler(cfg)


def _sample(text: str, finished: bool, new_tokens: int | None) -> dict[str, Any]:
    return {"text": text, "finished": finished, "new_tokens": new_tokens}


def cache_key(model_id: str, sampling: Sampling, prompt: Prompt) -> str:
    fields = [model_id, asdict(sampling), prompt.messages]
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sample_prompts(
    sampler: Sampler,
    prompts: list[Prompt],
    sampling: Sampling,
    cache: Path,
    *,
    progress: bool = True,
    desc: str = "sample",
) -> tuple[list[dict[str, Any]], int]:
    """Rows `{index, prompt, messages, samples, key}` in prompt order, and how many came from the cache.

    A batch is reused only whole: sampling depends on the batch, so a partly cached batch is
    sampled again to give the same text a fresh run would.
    """
    from tqdm.auto import tqdm

    keys = {p.index: cache_key(sampler.model_id, sampling, p) for p in prompts}
    rows = {i: r for i, r in read_cache(cache).items() if i in keys and r.get("key") == keys[i]}
    batches = [prompts[i : i + sampling.batch_size] for i in range(0, len(prompts), sampling.batch_size)]
    reused = 0
    with tqdm(total=len(prompts), desc=desc, unit="prompt", file=sys.stderr, disable=not progress) as bar:
        for batch in batches:
            if all(p.index in rows for p in batch):
                reused += len(batch)
                bar.update(len(batch))
                continue
            fresh = [
                {"index": p.index, "prompt": p.text, "messages": p.messages, "samples": samples, "key": keys[p.index]}
                for p, samples in zip(batch, sampler.sample(batch, sampling))
            ]
            append_jsonl(cache, fresh)
            rows.update({r["index"]: r for r in fresh})
            bar.update(len(batch))
    return [rows[p.index] for p in prompts], reused
