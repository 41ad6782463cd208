"""Overhead of `dpo train` against the same run as a plain TRL script.

Both sides train the tiny offline GPT-2 with LoRA on the bundled data with identical settings
(configs/smoke.yaml + overrides vs scripts/bench/plain_trl_dpo.py), alternated run by run so
that machine noise hits both alike. Each side logs a timestamp per step; the steady-state step
time is the median step duration after the warm-up steps. Prints medians over the runs and the
ratio ours / plain TRL (target: within 5%), plus end-to-end wall time including startup.

    python scripts/bench_train_overhead.py [--runs 5] [--steps 40]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
DPO = [PY, "-m", "dpo_cli"]
WARMUP_STEPS = 5


def step_time(records: list[dict]) -> float:
    times = [(r["step"], r["time"]) for r in records if "time" in r and "loss" in r and "train_runtime" not in r]
    times = [t for t in times if t[0] > WARMUP_STEPS]
    deltas = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(times) if b[0] > a[0]]
    return statistics.median(deltas)


def run_ours(model: Path, work: Path, steps: int, index: int) -> tuple[float, float]:
    out = work / f"ours-{index}"
    argv = [*DPO, "train", str(ROOT / "configs" / "smoke.yaml"), "--skip-validation"]
    for override in (
        f"model.name_or_path={model}",
        f"output_dir={out}",
        f"data.train={ROOT / 'data' / 'sample' / 'train.jsonl'}",
        "data.eval=null",
        "data.eval_fraction=null",
        f"training.max_steps={steps}",
        "training.logging_steps=1",
        "training.save_strategy=no",
    ):
        argv += ["--set", override]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, cwd=ROOT)
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return step_time(records), wall


def run_plain(model: Path, work: Path, steps: int, index: int) -> tuple[float, float]:
    out_file = work / f"plain-{index}.json"
    argv = [
        PY,
        str(ROOT / "scripts" / "bench" / "plain_trl_dpo.py"),
        str(model),
        str(ROOT / "data" / "sample" / "train.jsonl"),
        str(out_file),
        str(steps),
        str(work / f"plain-{index}"),
    ]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, cwd=ROOT)
    wall = time.perf_counter() - start
    return step_time(json.loads(out_file.read_text())), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_tiny_model(work / "tiny", seed=0)
        ours, plain = [], []
        for i in range(args.runs):
            # Alternate which side goes first so drift in machine load does not favour one.
            order = [("ours", run_ours), ("plain", run_plain)]
            if i % 2:
                order.reverse()
            for name, fn in order:
                step, wall = fn(model, work, args.steps, i)
                (ours if name == "ours" else plain).append((step, wall))
                print(f"run {i + 1}/{args.runs} {name:<5} step {step * 1000:7.1f} ms  wall {wall:6.1f} s", flush=True)
    o_step = statistics.median(s for s, _ in ours)
    p_step = statistics.median(s for s, _ in plain)
    o_wall = statistics.median(w for _, w in ours)
    p_wall = statistics.median(w for _, w in plain)
    print()
    print(f"steady-state step time (median of {args.runs} runs, steps > {WARMUP_STEPS} of {args.steps}):")
    print(f"  dpo train     {o_step * 1000:7.1f} ms")
    print(f"  plain TRL     {p_step * 1000:7.1f} ms")
    print(f"  ratio ours/plain: {o_step / p_step:.3f}  (target <= 1.05)")
    print(
        f"end-to-end wall time incl. startup and data prep: ours {o_wall:.1f} s, plain {p_wall:.1f} s, "
        f"ratio {o_wall / p_wall:.3f}"
    )


if __name__ == "__main__":
    main()
