"""Calibrate `dpo plan`'s memory estimate against measured CPU training peaks.

Each case trains a few real DPO steps on the CPU in a fresh process, through the same
`build_trainer` that `dpo train` uses, on synthetic pairs padded to exactly `max_length`
(`pad_to_multiple_of = max_length`), so the estimate's worst-case padding is the real shape.

What is compared: the process's resident set high-water mark during `trainer.train()` minus
its resident set just before it (imports, weights - read once so memory-mapped files are resident -, LoRA
adapters, tokenized data and the built trainer are all in that baseline; /proc/self/clear_refs resets the high-water mark
there), against the estimate's training-time rows: gradients + optimizer states +
activations + fused-LM-head working set (CPU code paths). Weights and the reference model
are loaded before training, so they sit in the baseline on both sides.

    python scripts/calibrate_plan.py                 # tiny model (+ SmolLM2-135M if built)
    python scripts/calibrate_plan.py --model DIR --batch 2 --max-length 256 [--full] [--checkpointing]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SMOLLM2 = ROOT / ".cache" / "models" / "smollm2-135m-instruct"
TRAINING_ROWS = ("gradients", "optimizer states", "activations", "logits (fused LM head)")
WORDS = [
    "the",
    "of",
    "model",
    "answer",
    "question",
    "because",
    "data",
    "train",
    "value",
    "reason",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
]


@dataclass(frozen=True)
class Case:
    """One calibration run."""

    name: str
    model: Path
    batch: int
    max_length: int
    lora: bool = True
    checkpointing: bool = False
    steps: int = 3

    def overrides(self, work: Path) -> list[str]:
        data = work / "pairs.jsonl"
        write_pairs(data, rows=max(4 * self.batch, 16), words=self.max_length)
        sets = [
            f"model.name_or_path={self.model}",
            f"output_dir={work / 'run'}",
            f"data.train={data}",
            "data.eval=null",
            "data.eval_fraction=null",
            f"training.max_steps={self.steps}",
            f"training.per_device_train_batch_size={self.batch}",
            f"training.max_length={self.max_length}",
            # Every batch padded to exactly max_length: the estimate's worst case becomes the real shape.
            f"training.pad_to_multiple_of={self.max_length}",
            f"training.gradient_checkpointing={str(self.checkpointing).lower()}",
            "training.save_strategy='no'",
            "training.eval_strategy='no'",
            "training.logging_steps=1",
            "training.use_cpu=true",
            "training.bf16=false",
        ]
        if self.lora:
            sets += ["lora.target_modules=all-linear", "lora.lora_dropout=0.0"]
        else:
            sets += ["lora=null"]
        return sets


def write_pairs(path: Path, rows: int, words: int) -> None:
    """Pairs long enough to be truncated at any max_length (one word is at least one token)."""
    with path.open("w", encoding="utf-8") as handle:
        for i in range(rows):
            text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(words))
            # A short prompt: TRL drops pairs whose completion is truncated away entirely.
            prompt = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(8))
            handle.write(json.dumps({"prompt": prompt, "chosen": " yes " + text, "rejected": " no " + text}) + "\n")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(config: str, overrides: list[str]) -> None:
    """Build the trainer, reset the RSS high-water mark, train, print the measurement as JSON."""
    import gc
    import logging

    from dpo_cli.config.loader import load_config
    from dpo_cli.train.trainer import build_trainer

    logging.disable(logging.WARNING)
    cfg = load_config(config, overrides)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    built = build_trainer(cfg, Path(cfg.output_dir) / "metrics.jsonl")
    # safetensors weights are memory-mapped and only become resident when first read; read
    # them all now so that they land in the baseline, not in the training peak.
    for model in (built.trainer.model, getattr(built.trainer, "ref_model", None)):
        for param in model.parameters() if model is not None else ():
            float(param.detach().float().sum())
    gc.collect()
    baseline = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    built.trainer.train()
    peak = _status_kib("VmHWM")
    print("CALIBRATION " + json.dumps({"baseline_bytes": baseline * 1024, "peak_bytes": peak * 1024}))


def measure(case: Case) -> dict[str, float]:
    """Run one case in a fresh process and return its baseline, peak and delta in bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        argv = [sys.executable, __file__, "--child", str(ROOT / "configs" / "smoke.yaml")]
        for override in case.overrides(work):
            argv += ["--set", override]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run(argv, capture_output=True, check=False, text=True, cwd=ROOT, env=env)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("CALIBRATION ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"{case.name}: measurement failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        result = json.loads(line.removeprefix("CALIBRATION "))
        result["delta_bytes"] = result["peak_bytes"] - result["baseline_bytes"]
        return result


def estimate(case: Case) -> dict[str, float]:
    """The estimate's training-time rows for the same config, CPU code paths, one process."""
    from dpo_cli.config.loader import load_config
    from dpo_cli.planning.arch import load_model_shape
    from dpo_cli.planning.memory import estimate_memory

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / "configs" / "smoke.yaml", case.overrides(Path(tmp)))
    shape = load_model_shape(cfg.model.name_or_path)
    plan = estimate_memory(cfg, shape, gpus=1, cpu_kernels=True)
    rows = {r.label: r.gpu_bytes for r in plan.rows}
    return {
        "estimate_bytes": sum(rows[label] for label in TRAINING_ROWS),
        **{label: rows[label] for label in TRAINING_ROWS},
    }


def compare(case: Case) -> dict[str, float]:
    """Estimate and measurement side by side, with the relative error of the estimate."""
    measured = measure(case)
    est = estimate(case)
    error = (est["estimate_bytes"] - measured["delta_bytes"]) / measured["delta_bytes"]
    return {"case": case.name, **measured, **est, "error": error}


def default_cases(tiny: Path) -> list[Case]:
    cases = [
        Case("tiny gpt2, LoRA, 16 pairs x 512", tiny, batch=16, max_length=512),
        Case("tiny gpt2, full FT, 16 pairs x 512", tiny, batch=16, max_length=512, lora=False),
        Case("tiny gpt2, LoRA + checkpointing, 16 pairs x 512", tiny, batch=16, max_length=512, checkpointing=True),
    ]
    if (SMOLLM2 / "config.json").is_file():
        cases += [
            Case("SmolLM2-135M, LoRA, 2 pairs x 256", SMOLLM2, batch=2, max_length=256, steps=2),
            Case(
                "SmolLM2-135M, LoRA + checkpointing, 2 pairs x 256",
                SMOLLM2,
                batch=2,
                max_length=256,
                steps=2,
                checkpointing=True,
            ),
        ]
    return cases


def build_tiny(out: Path) -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_tiny_model", ROOT / "scripts" / "build_tiny_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build_tiny_model(out, seed=0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help="Model directory for a single case.")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--full", action="store_true", help="Full fine-tuning instead of LoRA.")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.set)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            cases = [
                Case(
                    str(args.model),
                    args.model,
                    args.batch,
                    args.max_length,
                    not args.full,
                    args.checkpointing,
                    args.steps,
                )
            ]
        else:
            cases = default_cases(build_tiny(Path(tmp) / "tiny"))
        mib = 1024**2
        print(
            f"{'case':<52} {'baseline':>9} {'measured':>9} {'estimate':>9} {'error':>7}   (MiB; measured = peak - baseline)"
        )
        for case in cases:
            r = compare(case)
            print(
                f"{r['case']:<52} {r['baseline_bytes'] / mib:9.1f} {r['delta_bytes'] / mib:9.1f} "
                f"{r['estimate_bytes'] / mib:9.1f} {r['error']:+7.1%}"
            )
            parts = ", ".join(f"{label} {r[label] / mib:.1f}" for label in TRAINING_ROWS)
            print(f"    estimate: {parts}")


if __name__ == "__main__":
    main()
