"""One epoch of real-length pairs: `dpo train` against a plain TRL script, whole process against whole process.

    python scripts/bench_train_speed.py [--runs 3] [--pairs 160] [--batch-sizes 4 8 16]
        [--variant NAME=KEY=VALUE[,KEY=VALUE...]] [--json OUT.json]

Both sides train the same tiny Llama (built from a config, SmolLM2's tokenizer; see
scripts/bench/tiny_llama.py) with the same LoRA (r 16, all linear layers), batch size,
`max_length` 1024 and learning rate, for one epoch of pairs whose lengths follow HH-RLHF's
(p50 ~150, p90 ~370, max ~1000 tokens; scripts/bench/real_length_pairs.py), then evaluate the
same 48 held-out pairs and save the adapter. `dpo train` runs as a user runs it: data checks,
final evaluation, metrics, plots. The plain TRL script (scripts/bench/plain_trl_train.py) is TRL
on its defaults: random batches, padded. Every run starts with an empty `datasets` cache, so both
sides tokenize.

Runs alternate (ours first on even runs, plain first on odd ones) so that drift in machine load
hits both alike; the figures are medians over the runs. Printed per batch size: whole-process
seconds, the ratio plain TRL / dpo, seconds inside `train()`, and peak resident memory of the
process. `--variant` adds more dpo configurations, e.g. `--variant padded=training.padding_free=false`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

PY = sys.executable
EVAL_PAIRS = 48
MAX_LENGTH = 1024
LEARNING_RATE = 2e-4


def dpo_config(work: Path, model: Path) -> Path:
    text = f"""# python -m dpo_cli train {work / "dpo.yaml"}   (written by scripts/bench_train_speed.py)
output_dir: {work / "dpo-run"}
model:
  name_or_path: {model}
  dtype: float32
lora:
  r: 16
  lora_alpha: 32
  lora_dropout: 0.0
  target_modules: all-linear
data:
  train: {work / "train.jsonl"}
  eval: {work / "eval.jsonl"}
training:
  num_train_epochs: 1
  per_device_train_batch_size: 8
  per_device_eval_batch_size: 8
  max_length: {MAX_LENGTH}
  learning_rate: {LEARNING_RATE}
  logging_steps: 1
  bf16: false
"""
    path = work / "dpo.yaml"
    path.write_text(text)
    return path


def run_process(argv: list[str], env: dict[str, str], log: Path) -> tuple[float, int, float]:
    """Wall seconds, peak resident bytes and CPU seconds of one whole process (its own rusage, from wait4).

    CPU seconds (user + system) are what a busy shared machine distorts least.
    """
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(
            f"{argv[:4]}... failed with exit code {proc.returncode}; see {log}:\n{log.read_text()[-3000:]}"
        )
    return wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


THREADS = {"n": 1}


def env_for(work: Path, tag: str) -> dict[str, str]:
    cache = work / f"cache-{tag}"
    threads = str(THREADS["n"])
    return {
        **os.environ,
        # On a machine shared with other jobs, a process whose OpenMP threads wait for each other at every
        # barrier slows down many times over when one core is taken; one thread per side degrades evenly.
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_DATASETS_CACHE": str(cache),
        "PYTHONPATH": str(ROOT),
    }


def train_runtime(metrics: Path) -> float | None:
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if "train_runtime" in record:
            return float(record["train_runtime"])
    return None


def run_ours(work: Path, config: Path, batch: int, tag: str, overrides: list[str]) -> dict:
    out = work / f"dpo-{tag}"
    argv = [
        PY,
        "-m",
        "dpo_cli",
        "train",
        str(config),
        "--set",
        f"output_dir={out}",
        "--set",
        f"training.per_device_train_batch_size={batch}",
    ]
    for override in overrides:
        argv += ["--set", override]
    wall, peak, cpu = run_process(argv, env_for(work, tag), work / f"dpo-{tag}.log")
    return {"wall": wall, "peak": peak, "cpu": cpu, "train": train_runtime(out / "metrics.jsonl")}


def run_plain(work: Path, model: Path, batch: int, tag: str) -> dict:
    out = work / f"plain-{tag}.json"
    argv = [
        PY,
        str(ROOT / "scripts" / "bench" / "plain_trl_train.py"),
        "--model",
        str(model),
        "--train",
        str(work / "train.jsonl"),
        "--eval",
        str(work / "eval.jsonl"),
        "--out",
        str(out),
        "--output-dir",
        str(work / f"plain-{tag}"),
        "--batch-size",
        str(batch),
        "--max-length",
        str(MAX_LENGTH),
        "--learning-rate",
        str(LEARNING_RATE),
    ]
    wall, peak, cpu = run_process(argv, env_for(work, tag), work / f"plain-{tag}.log")
    return {"wall": wall, "peak": peak, "cpu": cpu, "train": json.loads(out.read_text())["train_runtime"]}


def prepare(work: Path, pairs: int) -> Path:
    from real_length_pairs import load_tokenizer, make_pairs, measured_lengths, percentile, write_jsonl
    from tiny_llama import CPU_VOCAB, build_tiny_llama, parameter_count

    tokenizer = load_tokenizer()
    train = make_pairs(pairs, tokenizer, seed=0, max_id=CPU_VOCAB)
    write_jsonl(train, work / "train.jsonl")
    write_jsonl(make_pairs(EVAL_PAIRS, tokenizer, seed=1, max_id=CPU_VOCAB), work / "eval.jsonl")
    lengths = measured_lengths(train, tokenizer)
    print(
        f"data: {pairs} train pairs, {EVAL_PAIRS} held out; prompt + longer response tokens "
        f"p50 {percentile(lengths, 0.5):.0f}, p90 {percentile(lengths, 0.9):.0f}, max {max(lengths)}"
    )
    model = build_tiny_llama(work / "model", "cpu")
    print(
        f"model: Llama from a config, {parameter_count('cpu') / 1e6:.1f}M parameters, SmolLM2 tokenizer "
        f"(first {CPU_VOCAB} ids); LoRA r 16 on all linear layers; max_length {MAX_LENGTH}"
    )
    return model


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, sets = text.partition("=")
    if not sep or not sets:
        raise SystemExit(f"--variant {text!r}: expected NAME=KEY=VALUE[,KEY=VALUE...]")
    return name, sets.split(",")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=160)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--variant", action="append", default=[], type=parse_variant)
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads of each side (default 1)")
    parser.add_argument("--no-plain", action="store_true", help="only dpo and its variants (ratios against dpo)")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (logs, runs)")
    args = parser.parse_args()
    THREADS["n"] = args.threads

    sides = [("dpo", [])] + list(args.variant)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"{time.strftime('%Y-%m-%d %H:%M')}; {args.runs} runs per side, alternated; {args.threads} thread(s) each"
    )
    results: dict[str, dict[int, list[dict]]] = {name: {b: [] for b in args.batch_sizes} for name, _ in sides}
    baseline = "dpo" if args.no_plain else "plain TRL"
    if not args.no_plain:
        results["plain TRL"] = {b: [] for b in args.batch_sizes}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = prepare(work, args.pairs)
        config = dpo_config(work, model)
        for i in range(args.runs):
            for batch in args.batch_sizes:
                order = [*sides] + ([] if args.no_plain else [("plain TRL", None)])
                if i % 2:
                    order.reverse()
                for name, overrides in order:
                    tag = f"{name.replace(' ', '_')}-b{batch}-r{i}"
                    if overrides is None:
                        got = run_plain(work, model, batch, tag)
                    else:
                        got = run_ours(work, config, batch, tag, overrides)
                    results[name][batch].append(got)
                    print(
                        f"run {i + 1}/{args.runs} batch {batch:>2} {name:<10} whole {got['wall']:6.1f} s  "
                        f"cpu {got['cpu']:6.1f} s  train {got['train']:6.1f} s  peak {got['peak'] / 2**20:6.0f} MiB",
                        flush=True,
                    )
    print()
    print(f"medians over {args.runs} runs (whole process: start to exit)")
    short = "plain" if baseline == "plain TRL" else "dpo"
    header = (
        f"{'batch':>5} {'side':<10} {'whole s':>8} {'cpu s':>8} {'train s':>8} {'peak MiB':>9} "
        f"{short + '/this':>11} {'(cpu)':>6}"
    )
    print(header)
    summary: dict[str, dict[int, dict[str, float]]] = {}
    for batch in args.batch_sizes:
        base = {k: statistics.median(r[k] for r in results[baseline][batch]) for k in ("wall", "cpu")}
        for name in results:
            rows = results[name][batch]
            med = {k: statistics.median(r[k] for r in rows) for k in ("wall", "cpu", "train", "peak")}
            med["ratio"] = base["wall"] / med["wall"]
            med["cpu_ratio"] = base["cpu"] / med["cpu"]
            summary.setdefault(name, {})[batch] = med
            print(
                f"{batch:>5} {name:<10} {med['wall']:8.1f} {med['cpu']:8.1f} {med['train']:8.1f} "
                f"{med['peak'] / 2**20:9.0f} {med['ratio']:11.2f} {med['cpu_ratio']:6.2f}"
            )
    if 8 in args.batch_sizes and not args.no_plain:
        print(f"\nplain TRL / dpo at batch size 8: {summary['dpo'][8]['ratio']:.2f} (goal >= 1.5)")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
