"""Padding-free pairs against length-grouped padded batches, step by step, in one process.

    python scripts/bench_padding_free.py [--pairs 400] [--batches 6] [--batch-sizes 4 8 16] [--attn sdpa] [--threads 1]
    python scripts/bench_padding_free.py --memory [--runs 3] [--batch-sizes 4 8 16]

Builds the `DPOTrainer` that `dpo train` builds, twice (`training.padding_free` true and false),
on the CPU tiny Llama and real-length pairs of bench_train_speed.py. Then, for the same batches in
the same length-grouped order (and, for reference, in random order), it times one forward and
backward of the DPO loss (policy forward + backward, reference forward) with each trainer,
alternating which goes first, and prints the median seconds per step, real tokens per second and
the ratio padded / padding-free. This is the measurement behind `padding_free`'s default.

With `--memory` it measures memory instead: for each batch size and side, a fresh process builds
the trainer, then runs the DPO step on the longest length-grouped batch (the one a run starts
with) twice; it prints the growth of the process's peak RSS (VmHWM, reset after the build) over
that step, the median over `--runs` processes per side, sides alternating, and the ratio.
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


def peak_rss_mib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) // 1024
    raise SystemExit("no VmHWM in /proc/self/status: --memory needs Linux")


def memory_child(work: Path, model: Path, packed: bool, batch_size: int, attn: str) -> None:
    """One side of `--memory`, in its own process: prints the peak RSS growth over the longest step."""
    from dpo_cli.train.batching import length_grouped_order, pair_lengths

    trainer = build(work, model, packed, batch_size, attn)
    data = trainer.train_dataset
    order = length_grouped_order(pair_lengths(data, 1024), batch_size, seed=0)
    inputs = trainer.data_collator([data[i] for i in order[:batch_size]])  # the longest batch comes first
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    before = peak_rss_mib()
    for _ in range(2):
        step_seconds(trainer, inputs)
    print(f"MEMORY {peak_rss_mib() - before}")


def measure_memory(work: Path, model: Path, args) -> None:
    import subprocess

    print(
        f"{'batch':>5} {'padded MiB':>11} {'packed MiB':>11} {'packed/padded':>14}   (peak RSS growth over the longest step)"
    )
    for batch_size in args.batch_sizes:
        grown: dict[bool, list[int]] = {False: [], True: []}
        for run in range(args.runs):
            for packed in [False, True] if run % 2 == 0 else [True, False]:
                argv = [
                    sys.executable,
                    __file__,
                    "--memory-child",
                    str(work),
                    str(model),
                    str(packed),
                    str(batch_size),
                    "--attn",
                    args.attn,
                    "--threads",
                    str(args.threads),
                ]
                log = work / f"memory-{batch_size}-{packed}-{run}.log"
                with log.open("w") as out:
                    code = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT)
                lines = [line for line in log.read_text().splitlines() if line.startswith("MEMORY ")]
                if code != 0 or not lines:
                    raise SystemExit(f"memory run failed (exit {code}):\n{log.read_text()[-3000:]}")
                grown[packed].append(int(lines[-1].split()[1]))
        padded, packed_mib = statistics.median(grown[False]), statistics.median(grown[True])
        print(f"{batch_size:>5} {padded:11.0f} {packed_mib:11.0f} {packed_mib / padded:14.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--batches", type=int, default=6, help="batches timed per batch size and order")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--memory", action="store_true", help="peak memory of the longest step instead of time")
    parser.add_argument("--runs", type=int, default=3, help="--memory: processes per side and batch size")
    parser.add_argument("--memory-child", nargs=4, metavar=("WORK", "MODEL", "PACKED", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from bench_train_speed import dpo_config, prepare

    from dpo_cli.train.batching import length_grouped_order, pair_lengths

    if args.memory_child:
        work, model, packed, batch_size = args.memory_child
        memory_child(Path(work), Path(model), packed == "True", int(batch_size), args.attn)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = prepare(work, args.pairs)
        dpo_config(work, model)
        if args.memory:
            print(f"attention: {args.attn}; torch threads: {args.threads}; {time.strftime('%Y-%m-%d %H:%M')}")
            measure_memory(work, model, args)
            return
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
