"""Time `dpo validate-data` on N synthetic pairs, against a plain per-pair difflib validator.

    python scripts/bench_validate_data.py                 # 100k pairs, 3 runs each
    python scripts/bench_validate_data.py --rows 20000 --runs 5 --tokenizer PATH

Three timings on the same JSONL file, each the median of `--runs` runs:
  1. `validate_data` without a tokenizer (every check except the token ones);
  2. `validate_data` with a fast tokenizer (adds TRL-style tokenization, truncation and
     template checks). The tokenizer is `--tokenizer`, else SmolLM2's at
     .cache/models/smollm2-135m-instruct, else the tiny test model's built by
     scripts/build_tiny_model.py;
  3. the validator blog tutorials show: json.loads per line, field checks, chosen == rejected,
     and `difflib.SequenceMatcher(None, chosen, rejected).ratio()` for near-identical pairs.
The synthetic data carries a few planted problems of each kind, and the script checks that
both validators find the ones they look for.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SMOLLM2 = ROOT / ".cache" / "models" / "smollm2-135m-instruct"


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """Pairs with prompt ~25 words, responses ~40-90 words; every 200th row holds a planted problem."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ren", "to", "sha", "vi", "dor", "pe", "qua", "zu", "nel", "fa", "gri"]
    vocab = ["".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(3000)]
    rows = []
    for i in range(n):
        prompt = f"Question {i}: " + " ".join(rng.choices(vocab, k=rng.randint(15, 35))) + "?"
        chosen = " ".join(rng.choices(vocab, k=rng.randint(50, 90))) + "."
        rejected = " ".join(rng.choices(vocab, k=rng.randint(40, 80))) + "."
        kind = i % 200
        if kind == 1:
            rejected = chosen  # identical
        elif kind == 2:
            rejected = chosen[:-1] + "!"  # near-identical
        elif kind == 3:
            chosen = ""  # empty
        elif kind == 4:
            prompt, chosen, rejected = rows[-4]["prompt"], rows[-4]["chosen"], rows[-4]["rejected"]  # duplicate
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def difflib_validator(path: str, threshold: float = 0.9) -> dict[str, int]:
    """The straightforward validator: one pass, per-pair difflib similarity."""
    counts = {"malformed": 0, "missing_or_empty": 0, "identical": 0, "near_identical": 0}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                counts["malformed"] += 1
                continue
            if any(not isinstance(row.get(k), str) or not row[k].strip() for k in ("prompt", "chosen", "rejected")):
                counts["missing_or_empty"] += 1
                continue
            if row["chosen"] == row["rejected"]:
                counts["identical"] += 1
            elif difflib.SequenceMatcher(None, row["chosen"], row["rejected"]).ratio() >= threshold:
                counts["near_identical"] += 1
    return counts


def timed(fn, runs: int) -> tuple[float, list[float], object]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def find_tokenizer(arg: str | None, workdir: Path) -> str | None:
    if arg:
        return arg
    if (SMOLLM2 / "tokenizer_config.json").is_file():
        return str(SMOLLM2)
    builder = ROOT / "scripts" / "build_tiny_model.py"
    if builder.is_file():
        import importlib.util

        spec = importlib.util.spec_from_file_location("build_tiny_model", builder)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out = workdir / "tiny-gpt2"
        module.build_tiny_model(out, seed=0)
        return str(out)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokenizer", help="tokenizer directory or Hub id (default: SmolLM2, else the tiny model)")
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from dpo_cli.validation import data_section, token_checker_from_name, validate_data

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in make_rows(args.rows))
        size_mb = path.stat().st_size / 1e6
        print(
            f"data       {args.rows} synthetic pairs, {size_mb:.1f} MB JSONL; medians of {args.runs} runs; "
            f"{os.cpu_count()} CPUs"
        )
        section = data_section(str(path))

        ours, ours_all, report = timed(lambda: validate_data(section), args.runs)
        found = {f.check.id: f.count for s in report.splits for f in s.findings}
        print(f"dpo        no tokenizer   {ours:7.2f} s  ({args.rows / ours:,.0f} pairs/s)  runs {_fmt(ours_all)}")
        print(f"           found {found}")

        tok_name = find_tokenizer(args.tokenizer, Path(tmp))
        with_tok = None
        if tok_name is None:
            print("dpo        with tokenizer skipped: no tokenizer found (pass --tokenizer)")
        else:
            checker = token_checker_from_name(tok_name, args.max_length)
            fast = getattr(checker.tokenizer, "is_fast", False)
            with_tok, tok_all, report = timed(
                lambda: validate_data(section, token_checker=checker, tokenizer_name=tok_name), args.runs
            )
            prompt = report.splits[0].tokens["sequence"].summary()
            print(
                f"dpo        with tokenizer {with_tok:7.2f} s  ({args.rows / with_tok:,.0f} pairs/s)  "
                f"runs {_fmt(tok_all)}  [{tok_name}, fast={fast}, sequence tokens p50 {prompt.get('p50')}]"
            )

        base, base_all, counts = timed(lambda: difflib_validator(str(path)), args.runs)
        print(f"difflib    per pair       {base:7.2f} s  ({args.rows / base:,.0f} pairs/s)  runs {_fmt(base_all)}")
        print(f"           found {counts}")
        print(
            f"speed-up   {base / ours:.1f}x without tokenizer"
            + (f", {base / with_tok:.1f}x with tokenizer" if with_tok else "")
            + " (difflib time / dpo time)"
        )
        print(f"peak RSS   {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (whole process)")


def _fmt(times: list[float]) -> str:
    return "[" + ", ".join(f"{t:.2f}" for t in times) + "]"


if __name__ == "__main__":
    main()
