"""When precomputing the reference log-probs beats computing them online, whole process against whole process.

    python scripts/bench_precompute.py [--runs 3] [--pairs 96] [--epochs 1 2 4] [--memory-steps 4]

Time: the CPU tiny Llama with LoRA of bench_train_speed.py (real-length pairs, batch size 8, one
thread per process), for each number of epochs, `training.precompute_ref_log_probs` false against true, alternated, medians
of whole-process and `train()` seconds. Precomputing runs the reference once over the data, sorted
by length, before training; online runs it in every step of every epoch.

Memory: full fine-tuning of SmolLM2-135M-Instruct (configs/demo.yaml with `lora=null`) for a few
steps, online (a second, frozen copy of the model stays loaded as the reference) against
precomputed (no second copy), peak resident memory of each process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_train_speed import dpo_config, env_for, prepare, run_ours, run_process

SMOLLM2 = ROOT / ".cache" / "models" / "smollm2-135m-instruct"


def timing(work: Path, runs: int, epoch_counts: list[int]) -> None:
    config = dpo_config(work, work / "model")
    cases = {
        f"{epochs} epoch{'s' * (epochs > 1)}, {mode}": [
            f"training.num_train_epochs={epochs}",
            f"training.precompute_ref_log_probs={flag}",
        ]
        for epochs in epoch_counts
        for mode, flag in (("online", "false"), ("precomputed", "true"))
    }
    got: dict[str, list[dict]] = {name: [] for name in cases}
    for i in range(runs):
        names = list(cases) if i % 2 == 0 else list(cases)[::-1]
        for name in names:
            tag = name.replace(" ", "_").replace(",", "") + f"-r{i}"
            result = run_ours(work, config, 8, tag, cases[name])
            got[name].append(result)
            print(
                f"run {i + 1}/{runs} {name:<24} whole {result['wall']:6.1f} s  train {result['train']:6.1f} s",
                flush=True,
            )
    print(f"\nmedians over {runs} runs, batch size 8 (whole process / inside train())")
    for name, rows in got.items():
        print(
            f"  {name:<24} {statistics.median(r['wall'] for r in rows):7.1f} s  "
            f"{statistics.median(r['train'] for r in rows):7.1f} s"
        )


def memory(work: Path, steps: int) -> None:
    if not (SMOLLM2 / "config.json").is_file():
        print(f"memory: skipped, {SMOLLM2} missing (python scripts/build_smollm2.py --output {SMOLLM2})")
        return
    print(f"\nfull fine-tuning, SmolLM2-135M-Instruct, {steps} steps at batch size 2 (peak resident memory)")
    for mode, flag in (("online", "false"), ("precomputed", "true")):
        out = work / f"full-{mode}"
        argv = [sys.executable, "-m", "dpo_cli", "train", str(ROOT / "configs" / "demo.yaml"), "--skip-validation"]
        for item in (
            f"output_dir={out}",
            "lora=null",
            f"training.max_steps={steps}",
            "data.max_train_samples=32",
            "data.max_eval_samples=8",
            "training.save_strategy=no",
            f"training.precompute_ref_log_probs={flag}",
        ):
            argv += ["--set", item]
        wall, peak, _ = run_process(argv, env_for(work, f"full-{mode}"), work / f"full-{mode}.log")
        print(f"  {mode:<12} peak {peak / 2**20:7.0f} MiB  whole {wall:6.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=96)
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--memory-steps", type=int, default=4, help="0 skips the memory measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work, args.pairs)
        timing(work, args.runs, args.epochs)
        if args.memory_steps:
            memory(work, args.memory_steps)


if __name__ == "__main__":
    main()
