"""Same quality as plain TRL: held-out reward accuracy and DPO loss after one epoch, over seeds.

    python scripts/bench_quality_parity.py [--seeds 0 1 2] [--batch-size 8] [--train-pairs N] [--json OUT.json]

SmolLM2-135M-Instruct (`.cache/models/smollm2-135m-instruct`, see scripts/build_smollm2.py) with
configs/demo.yaml's LoRA and settings, one epoch of data/sample/train_chat.jsonl (or of its first
`--train-pairs` rows: each side is one process per seed, and on a CPU TRL's fused LM head makes a
plain TRL epoch of all 400 pairs take about 45 minutes on one core), evaluated on all
of data/sample/eval_chat.jsonl, once with `dpo train` (its defaults: length-grouped batches,
padding-free pairs where they are the default) and once with the plain TRL script
(scripts/bench/plain_trl_train.py: random, padded batches), for each seed. Sides alternate.

Prints, per side, the mean and the seed-to-seed range of the held-out reward accuracy and DPO loss,
and the first training loss (which must be ln 2 = 0.6931 on both: policy == reference at step 1).
Parity holds when the difference of the means is within the larger of the two sides' ranges.
Slow on a CPU (SmolLM2 is 135M parameters): `--train-pairs 128` takes about an hour on two cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / ".cache" / "models" / "smollm2-135m-instruct"
TRAIN = ROOT / "data" / "sample" / "train_chat.jsonl"
EVAL = ROOT / "data" / "sample" / "eval_chat.jsonl"
# configs/demo.yaml's settings, shared by both sides.
LR, MAX_LENGTH, LORA_R, LORA_ALPHA, EVAL_BATCH = 2e-4, 160, 16, 32, 16


def env(work: Path, tag: str) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_DATASETS_CACHE": str(work / f"cache-{tag}"),
        "PYTHONPATH": str(ROOT),
    }


def run(argv: list[str], work: Path, tag: str) -> float:
    start = time.perf_counter()
    with (work / f"{tag}.log").open("w") as log:
        code = subprocess.call(argv, cwd=ROOT, env=env(work, tag), stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"{tag} failed (exit {code}):\n{(work / f'{tag}.log').read_text()[-3000:]}")
    return time.perf_counter() - start


def ours(work: Path, seed: int, batch: int, train: Path) -> dict:
    out = work / f"dpo-{seed}"
    sets = [
        f"output_dir={out}",
        f"training.seed={seed}",
        "training.max_steps=-1",
        "training.num_train_epochs=1",
        f"training.per_device_train_batch_size={batch}",
        "training.logging_steps=1",
        "training.save_strategy=no",
        "data.max_eval_samples=null",
        f"data.train={train}",
        f"data.eval={EVAL}",
    ]
    argv = [
        sys.executable,
        "-m",
        "dpo_cli",
        "train",
        str(ROOT / "configs" / "demo.yaml"),
        *[a for s in sets for a in ("--set", s)],
    ]
    seconds = run(argv, work, f"dpo-{seed}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = next(r["loss"] for r in records if "loss" in r and "train_runtime" not in r)
    final = [r for r in records if "eval_loss" in r][-1]
    return {
        "first_loss": first,
        "eval_loss": final["eval_loss"],
        "eval_accuracy": final["eval_rewards/accuracies"],
        "seconds": seconds,
    }


def plain(work: Path, seed: int, batch: int, train: Path) -> dict:
    out = work / f"plain-{seed}.json"
    argv = [
        sys.executable,
        str(ROOT / "scripts" / "bench" / "plain_trl_train.py"),
        "--model",
        str(MODEL),
        "--train",
        str(train),
        "--eval",
        str(EVAL),
        "--out",
        str(out),
        "--output-dir",
        str(work / f"plain-{seed}"),
        "--batch-size",
        str(batch),
        "--eval-batch-size",
        str(EVAL_BATCH),
        "--max-length",
        str(MAX_LENGTH),
        "--learning-rate",
        str(LR),
        "--lora-r",
        str(LORA_R),
        "--lora-alpha",
        str(LORA_ALPHA),
        "--seed",
        str(seed),
        "--gradient-checkpointing",
        "off",
    ]
    seconds = run(argv, work, f"plain-{seed}")
    result = json.loads(out.read_text())
    first = next(r["loss"] for r in result["records"] if "loss" in r)
    return {
        "first_loss": first,
        "eval_loss": result["eval"]["eval_loss"],
        "eval_accuracy": result["eval"]["eval_rewards/accuracies"],
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-pairs", type=int, help="train on the first N pairs of the file (default: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not (MODEL / "config.json").is_file():
        raise SystemExit(f"{MODEL}: missing; run python scripts/build_smollm2.py --output {MODEL}")
    results: dict[str, list[dict]] = {"dpo": [], "plain TRL": []}
    rows = TRAIN.read_text().splitlines()[: args.train_pairs]
    print(
        f"SmolLM2-135M-Instruct + LoRA r {LORA_R}, one epoch of {len(rows)} pairs of {TRAIN.name} at batch size "
        f"{args.batch_size}, "
        f"held-out {EVAL.name}; {time.strftime('%Y-%m-%d %H:%M')}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train = work / "train.jsonl"
        train.write_text("\n".join(rows) + "\n")
        for i, seed in enumerate(args.seeds):
            order = [("dpo", ours), ("plain TRL", plain)]
            for name, fn in order if i % 2 == 0 else order[::-1]:
                got = fn(work, seed, args.batch_size, train)
                results[name].append({"seed": seed, **got})
                print(
                    f"seed {seed} {name:<9} first loss {got['first_loss']:.4f}  held-out accuracy "
                    f"{got['eval_accuracy']:.3f}  loss {got['eval_loss']:.4f}  ({got['seconds']:.0f} s)",
                    flush=True,
                )
    print()
    parity = True
    for metric in ("eval_accuracy", "eval_loss"):
        stats = {}
        for name, rows in results.items():
            values = [r[metric] for r in rows]
            stats[name] = (statistics.mean(values), max(values) - min(values))
            print(f"{metric:<14} {name:<9} mean {stats[name][0]:.4f}  seed range {stats[name][1]:.4f}")
        gap = abs(stats["dpo"][0] - stats["plain TRL"][0])
        spread = max(s[1] for s in stats.values())
        ok = gap <= spread
        parity &= ok
        print(f"{metric:<14} difference of means {gap:.4f} {'<=' if ok else '>'} seed range {spread:.4f}")
    first = [r["first_loss"] for rows in results.values() for r in rows]
    ln2_ok = all(abs(f - math.log(2)) < 1e-3 for f in first)
    print(f"first loss: {', '.join(f'{f:.4f}' for f in first)} ({'all ln 2' if ln2_ok else 'NOT all ln 2'})")
    print(f"parity: {'yes' if parity and ln2_ok else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
