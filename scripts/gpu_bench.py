"""`dpo train` against plain TRL on one GPU: LoRA bf16 and QLoRA NF4, padded and padding-free.

    python scripts/gpu_bench.py [--out DIR] [--steps 30] [--batch-size 8] [--budget-s 420]
    python scripts/gpu_bench.py --cpu-check        # the same pipeline on the CPU, tiny sizes

Run through scripts/gpu_bench.sh, which first installs the wheels the GPU machine lacks. A Llama
of ~0.5B parameters is built from a config (random weights, SmolLM2's vocabulary) and trained on
real-length pairs (scripts/bench/real_length_pairs.py: p50 ~150, p90 ~370, max ~1000 tokens) for
`--steps` steps at `--batch-size`, `max_length` 1024, LoRA r 16 on all linear layers, once per case:

- plain TRL (scripts/bench/plain_trl_train.py: TRL's defaults, random padded batches, SDPA);
- `dpo train`, length-grouped padded batches (`training.padding_free: false`, SDPA);
- `dpo train`, padding-free pairs with SDPA; and with FlashAttention 2 where `flash_attn` imports;

each with LoRA in bf16 and with QLoRA NF4 (where bitsandbytes imports). Every case is its own
process. Reported per case: median seconds per step after the first 3 steps, real (unpadded)
tokens per second, peak GPU memory (`torch.cuda.max_memory_allocated`, whole process) and whole
process seconds; and each dpo case's speed-up over plain TRL with the same weights. The table
goes to OUT/gpu_bench.md and OUT/gpu_bench.json. Cases are skipped once `--budget-s` is spent,
so that the whole command stays within 8 minutes on an H100/H200.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
WARMUP = 3


@dataclass(frozen=True)
class Case:
    name: str
    side: str  # "plain" | "dpo"
    weights: str  # "lora-bf16" | "qlora-nf4"
    attn: str = "sdpa"
    padding_free: bool = False


def cases(cuda: bool) -> list[Case]:
    flash = importlib.util.find_spec("flash_attn") is not None
    out = []
    for weights in ("lora-bf16", "qlora-nf4"):
        if weights == "qlora-nf4" and not (cuda and importlib.util.find_spec("bitsandbytes")):
            continue
        out += [
            Case(f"plain TRL {weights}", "plain", weights),
            Case(f"dpo grouped {weights}", "dpo", weights),
            Case(f"dpo padding-free {weights}", "dpo", weights, padding_free=True),
        ]
        if flash and cuda:
            out.append(Case(f"dpo padding-free flash {weights}", "dpo", weights, "flash_attention_2", True))
    return out


def tokenizer_dir() -> Path:
    for candidate in (ROOT / ".whl" / "tokenizer", ROOT / ".cache" / "models" / "smollm2-135m-instruct"):
        if (candidate / "tokenizer.json").is_file():
            return candidate
    return Path()


def prepare(work: Path, pairs: int, cuda: bool) -> tuple[Path, str]:
    from real_length_pairs import load_tokenizer, make_pairs, measured_lengths, percentile, write_jsonl
    from tiny_llama import CPU_VOCAB, build_tiny_llama, parameter_count

    source = tokenizer_dir()
    if source == Path():
        # No SmolLM2 tokenizer carried: the project's own offline BPE tokenizer stands in.
        sys.path.insert(0, str(ROOT / "scripts"))
        from build_tiny_model import train_tokenizer

        source = work / "tokenizer"
        train_tokenizer().save_pretrained(source)
    tokenizer = load_tokenizer(source)
    size = "gpu" if cuda else "cpu"
    max_id = None if cuda else CPU_VOCAB
    rows = make_pairs(pairs, tokenizer, seed=0, max_id=max_id)
    if not cuda:
        # A pipeline check, not a measurement: the shortest quarter keeps the CPU steps short.
        rows = sorted(rows, key=lambda r: len(r["prompt"]) + len(r["chosen"]) + len(r["rejected"]))[: len(rows) // 4]
    write_jsonl(rows, work / "train.jsonl")
    lengths = measured_lengths(rows, tokenizer)
    model = build_tiny_llama(
        work / "model", size, source, device="cuda" if cuda else "cpu", dtype="bfloat16" if cuda else "float32"
    )
    about = (
        f"Llama from a config, {parameter_count(size) / 1e6:.0f}M parameters, tokenizer {source.name}; "
        f"{len(rows)} pairs, prompt + longer response p50 {percentile(lengths, 0.5):.0f}, "
        f"p90 {percentile(lengths, 0.9):.0f}, max {max(lengths)} tokens"
    )
    return model, about


def env(work: Path, tag: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_DATASETS_CACHE": str(work / f"cache-{tag}"),
        "PYTHONPATH": path,
    }


def dpo_argv(case: Case, work: Path, model: Path, args: argparse.Namespace, cuda: bool, tag: str) -> list[str]:
    quantization = "quantization:\n  load_in_4bit: true\n" if case.weights == "qlora-nf4" else ""
    config = work / f"{tag}.yaml"
    config.write_text(f"""# written by scripts/gpu_bench.py
output_dir: {work / tag}
model:
  name_or_path: {model}
  dtype: {"bfloat16" if cuda else "float32"}
  attn_implementation: {case.attn}
{quantization}lora:
  r: 16
  lora_alpha: 32
  lora_dropout: 0.0
  target_modules: all-linear
data:
  train: {work / "train.jsonl"}
  eval_fraction: null
training:
  max_steps: {args.steps}
  per_device_train_batch_size: {args.batch_size}
  max_length: {args.max_length}
  learning_rate: 2.0e-4
  logging_steps: 1
  save_strategy: "no"
  bf16: {"true" if cuda else "false"}
  padding_free: {"true" if case.padding_free else "false"}
""")
    return [
        sys.executable,
        str(ROOT / "scripts" / "bench" / "dpo_train_measured.py"),
        str(work / f"{tag}.json"),
        "train",
        str(config),
    ]


def plain_argv(case: Case, work: Path, model: Path, args: argparse.Namespace, cuda: bool, tag: str) -> list[str]:
    argv = [
        sys.executable,
        str(ROOT / "scripts" / "bench" / "plain_trl_train.py"),
        "--model",
        str(model),
        "--train",
        str(work / "train.jsonl"),
        "--out",
        str(work / f"{tag}.json"),
        "--output-dir",
        str(work / tag),
        "--batch-size",
        str(args.batch_size),
        "--max-length",
        str(args.max_length),
        "--learning-rate",
        "2e-4",
        "--max-steps",
        str(args.steps),
        "--attn",
        case.attn,
    ]
    if cuda:
        argv.append("--bf16")
    if case.weights == "qlora-nf4":
        argv.append("--qlora")
    return argv


def step_stats(records: list[dict]) -> tuple[float | None, float | None]:
    """Median seconds per step after the warm-up, and real tokens per second over those steps."""
    steps = [r for r in records if "loss" in r and "train_runtime" not in r and "num_tokens" in r]
    steps = [r for r in steps if r["step"] > WARMUP]
    if len(steps) < 2:
        return None, None
    pairs = list(itertools.pairwise(steps))
    per_step = statistics.median((b["time"] - a["time"]) / (b["step"] - a["step"]) for a, b in pairs)
    tokens = (steps[-1]["num_tokens"] - steps[0]["num_tokens"]) / (steps[-1]["time"] - steps[0]["time"])
    return per_step, tokens


def run_case(case: Case, work: Path, model: Path, args: argparse.Namespace, cuda: bool) -> dict:
    tag = case.name.replace(" ", "_")
    build = dpo_argv if case.side == "dpo" else plain_argv
    start = time.perf_counter()
    with (work / f"{tag}.log").open("w") as log:
        code = subprocess.call(
            build(case, work, model, args, cuda, tag),
            cwd=ROOT,
            env=env(work, tag),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    whole = time.perf_counter() - start
    if code != 0:
        tail = (work / f"{tag}.log").read_text(errors="replace")[-1500:]
        return {"case": case.name, "error": f"exit code {code}: {tail}"}
    result = json.loads((work / f"{tag}.json").read_text())
    if case.side == "dpo":
        records = [json.loads(line) for line in (work / tag / "metrics.jsonl").read_text().splitlines()]
    else:
        records = result["records"]
    per_step, tokens = step_stats(records)
    return {
        "case": case.name,
        "weights": case.weights,
        "side": case.side,
        "s_per_step": per_step,
        "tokens_per_s": tokens,
        "peak_gpu_bytes": result.get("peak_gpu_bytes"),
        "whole_s": whole,
    }


def table(rows: list[dict], header: str) -> str:
    plain = {r["weights"]: r for r in rows if r.get("side") == "plain" and r.get("s_per_step")}
    lines = [
        header,
        "",
        "| case | s/step | tokens/s | peak GPU memory | whole process | plain TRL / this (s/step) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | failed: {r['error'].splitlines()[-1][:80]} | | | | |")
            continue
        base = plain.get(r["weights"])
        ratio = f"{base['s_per_step'] / r['s_per_step']:.2f}" if base and r.get("s_per_step") else "n/a"
        mem = f"{r['peak_gpu_bytes'] / 2**30:.2f} GiB" if r.get("peak_gpu_bytes") else "n/a"
        sps = f"{r['s_per_step']:.3f}" if r.get("s_per_step") else "n/a"
        tps = f"{r['tokens_per_s']:.0f}" if r.get("tokens_per_s") else "n/a"
        lines.append(f"| {r['case']} | {sps} | {tps} | {mem} | {r['whole_s']:.0f} s | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-bench")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=480)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no case after this many seconds")
    parser.add_argument("--cpu-check", action="store_true", help="tiny model, 5 steps, on the CPU: checks the pipeline")
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_check:
        raise SystemExit(
            "gpu_bench: no CUDA GPU here; `--cpu-check` runs the same pipeline on the CPU with a tiny model"
        )
    if args.cpu_check:
        # Small enough for the test suite: TRL's fused LM head is slow off a GPU.
        cuda = False
        args.steps, args.batch_size, args.pairs = 5, 1, 48
    started = time.perf_counter()
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    model, about = prepare(work, args.pairs, cuda)
    device = torch.cuda.get_device_name() if cuda else f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    header = (
        f"{time.strftime('%Y-%m-%d')}, {device}, torch {torch.__version__}; {about}; batch {args.batch_size}, "
        f"{args.steps} steps, max_length {args.max_length}, LoRA r 16 all-linear"
    )
    print(header, flush=True)
    rows: list[dict] = []
    for case in cases(cuda):
        if time.perf_counter() - started > args.budget_s:
            rows.append({"case": case.name, "error": "skipped: time budget spent"})
            continue
        row = run_case(case, work, model, args, cuda)
        rows.append(row)
        print(json.dumps(row), flush=True)
    text = table(rows, header)
    (args.out / "gpu_bench.md").write_text(text)
    (args.out / "gpu_bench.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    print(text)
    print(f"total {time.perf_counter() - started:.0f} s; table in {args.out / 'gpu_bench.md'}")
    if any("error" in r and not r["error"].startswith("skipped") for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
