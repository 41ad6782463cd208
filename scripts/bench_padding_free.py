"""Padding-free pairs against length-grouped padded batches, step by step, in one process.

    python scripts/bench_padding_free.py [--pairs 400] [--batches 6] [--batch-sizes 4 8 16] [--attn sdpa] [--threads 1]

Builds the `DPOTrainer` that `dpo train` builds, twice (`training.padding_free` true and false),
on the CPU tiny Llama and real-length pairs of bench_train_speed.py. Then, for the same batches in
the same length-grouped order (and, for reference, in random order), it times one forward and
backward of the DPO loss (policy forward + backward, reference forward) with each trainer,
alternating which goes first, and prints the median seconds per step, real tokens per second and
the ratio padded / padding-free. This is the measurement behind `padding_free`'s default.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))


def build(work: Path, model: Path, packed: bool, batch: int, attn: str):
    from dpo_cli.config.loader import load_config
    from dpo_cli.train.trainer import build_trainer

    out = work / f"run-{packed}-{batch}"
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(
        work / "dpo.yaml",
        [
            f"output_dir={out}",
            f"training.per_device_train_batch_size={batch}",
            f"training.padding_free={str(packed).lower()}",
            f"model.attn_implementation={attn}",
        ],
    )
    return build_trainer(cfg, work / "unused.jsonl").trainer


def step_seconds(trainer, batch) -> float:
    start = time.perf_counter()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    trainer.model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--batches", type=int, default=6, help="batches timed per batch size and order")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from bench_train_speed import dpo_config, prepare

    from dpo_cli.train.batching import length_grouped_order, pair_lengths

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = prepare(work, args.pairs)
        dpo_config(work, model)
        print(f"attention: {args.attn}; torch threads: {torch.get_num_threads()}; {time.strftime('%Y-%m-%d %H:%M')}")
        print(
            f"{'batch':>5} {'order':<8} {'padded s':>9} {'packed s':>9} {'padded/packed':>14} {'tokens/s packed':>16}"
        )
        for batch_size in args.batch_sizes:
            trainers = {packed: build(work, model, packed, batch_size, args.attn) for packed in (False, True)}
            data = trainers[True].train_dataset
            lengths = pair_lengths(data, 1024)
            orders = {
                "grouped": length_grouped_order(lengths, batch_size, seed=0),
                "random": [int(i) for i in np.random.default_rng(0).permutation(len(data))],
            }
            for name, order in orders.items():
                times: dict[bool, list[float]] = {False: [], True: []}
                tokens = 0
                for b in range(1, args.batches + 1):  # batch 0 is the longest one: skip the warm-up outlier
                    rows = [data[i] for i in order[b * batch_size : (b + 1) * batch_size]]
                    inputs = trainers[True].data_collator(rows)
                    tokens += int(inputs["attention_mask"].sum())
                    sides = [False, True] if b % 2 else [True, False]
                    for packed in sides:
                        times[packed].append(step_seconds(trainers[packed], inputs))
                padded, packed = statistics.median(times[False]), statistics.median(times[True])
                per_step_tokens = tokens / args.batches
                print(
                    f"{batch_size:>5} {name:<8} {padded:9.2f} {packed:9.2f} {padded / packed:14.2f} "
                    f"{per_step_tokens / packed:16.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
