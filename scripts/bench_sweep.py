"""A 3-point beta sweep against 3 separate `dpo train` runs, side by side on the same tiny setup.

Both sides train the same three points (beta 0.05, 0.1, 0.5; LoRA on the tiny offline GPT-2;
the bundled data; precomputed reference log-probs), as subprocesses, alternating which side goes
first. The sweep loads libraries, data, the base model and the reference log-probs once; the
separate runs pay for each three times. Prints the median wall time of each side over the runs
and the ratio sweep / separate (target: at most 0.6).

    python scripts/bench_sweep.py [--runs 3] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DPO = [sys.executable, "-m", "dpo_cli"]
BETAS = ["0.05", "0.1", "0.5"]


def common(model: Path, steps: int) -> list[str]:
    sets = [
        f"model.name_or_path={model}",
        f"training.max_steps={steps}",
        "training.save_strategy=no",
        "training.precompute_ref_log_probs=true",
        "data.max_eval_samples=64",
    ]
    return [a for s in sets for a in ("--set", s)]


def sweep(model: Path, work: Path, steps: int, i: int) -> float:
    argv = [
        *DPO,
        "sweep-beta",
        str(ROOT / "configs" / "smoke.yaml"),
        "--betas",
        ",".join(BETAS),
        "--output",
        str(work / f"sweep-{i}"),
        *common(model, steps),
    ]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def separate(model: Path, work: Path, steps: int, i: int) -> float:
    start = time.perf_counter()
    for beta in BETAS:
        argv = [
            *DPO,
            "train",
            str(ROOT / "configs" / "smoke.yaml"),
            *common(model, steps),
            "--set",
            f"training.beta={beta}",
            "--set",
            f"output_dir={work / f'sep-{i}' / beta}",
        ]
        subprocess.run(argv, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_tiny_model import build_tiny_model

    times: dict[str, list[float]] = {"sweep": [], "separate": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_tiny_model(work / "tiny", seed=0)
        for i in range(args.runs):
            order = [("sweep", sweep), ("separate", separate)]
            if i % 2:
                order.reverse()
            for name, fn in order:
                seconds = fn(model, work, args.steps, i)
                times[name].append(seconds)
                print(f"run {i + 1}/{args.runs} {name:<8} {seconds:6.1f} s", flush=True)
    s, p = statistics.median(times["sweep"]), statistics.median(times["separate"])
    print()
    print(f"3 points x {args.steps} steps, median of {args.runs} runs:")
    print(f"  dpo sweep-beta           {s:6.1f} s")
    print(f"  3 separate dpo train     {p:6.1f} s")
    print(f"  ratio sweep/separate: {s / p:.2f}  (target <= 0.6)")


if __name__ == "__main__":
    main()
