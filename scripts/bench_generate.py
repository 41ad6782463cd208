"""Batched sampling of `dpo generate-pairs` against the naive loop, side by side on the same model.

Both sides sample `--samples` answers to each of `--prompts` prompts from the same model with the
same settings: ours is `LocalSampler` (left-padded batches of `--batch-size` prompts, every
prompt's samples drawn by one `generate` call with `num_return_sequences`); the naive way calls
`generate` once per prompt and sample. Sides alternate which goes first; prints the median wall
time of each over `--runs` and the ratio ours / naive (lower is better), plus tokens per second.

    python scripts/bench_generate.py [--model .cache/models/smollm2-135m-instruct] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / ".cache" / "models" / "smollm2-135m-instruct")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    import torch
    from transformers import set_seed

    from dpo_cli.config.schema import RunConfig
    from dpo_cli.generation import render
    from dpo_cli.pairs.prompts import load_prompts
    from dpo_cli.pairs.sampling import LocalSampler, Sampling

    cfg = RunConfig.model_validate(
        {
            "output_dir": "unused",
            "model": {"name_or_path": str(args.model), "dtype": "float32"},
            "data": {"train": str(ROOT / "data" / "sample" / "train_chat.jsonl")},
        }
    )
    sampler = LocalSampler(cfg)
    prompts = load_prompts(
        str(ROOT / "data" / "sample" / "train_chat.jsonl"), "prompt", limit=args.prompts, key="bench"
    )
    sampling = Sampling(args.samples, args.max_new_tokens, 1.0, 0.95, 0, args.batch_size)
    tokenizer, model = sampler.tokenizer, sampler.model

    def ours() -> int:
        batches = [prompts[i : i + args.batch_size] for i in range(0, len(prompts), args.batch_size)]
        return sum(s["new_tokens"] for b in batches for row in sampler.sample(b, sampling) for s in row)

    def naive() -> int:
        tokens = 0
        for prompt in prompts:
            inputs = tokenizer([render(tokenizer, prompt)], return_tensors="pt", add_special_tokens=False)
            for k in range(args.samples):
                set_seed(k)
                with torch.no_grad():
                    out = model.generate(
                        **inputs,
                        do_sample=True,
                        temperature=1.0,
                        top_p=0.95,
                        max_new_tokens=args.max_new_tokens,
                        pad_token_id=tokenizer.pad_token_id,
                    )
                tokens += out.shape[1] - inputs["input_ids"].shape[1]
        return tokens

    times: dict[str, list[float]] = {"ours": [], "naive": []}
    tokens: dict[str, int] = {}
    ours()  # warm-up: first-call allocations are no one's cost
    for run in range(args.runs):
        for name, fn in (("ours", ours), ("naive", naive)) if run % 2 == 0 else (("naive", naive), ("ours", ours)):
            start = time.perf_counter()
            tokens[name] = fn()
            times[name].append(time.perf_counter() - start)
            print(f"run {run + 1} {name}: {times[name][-1]:.1f} s", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{args.prompts} prompts x {args.samples} samples, {args.max_new_tokens} new tokens at most, "
        f"{args.runs} runs, {torch.get_num_threads()} threads, model {args.model.name}"
    )
    for name in ("ours", "naive"):
        print(f"  {name:5s}: median {med[name]:.1f} s, {tokens[name] / med[name]:.0f} generated tokens/s")
    print(f"  ratio ours / naive: {med['ours'] / med['naive']:.2f}")


if __name__ == "__main__":
    main()
