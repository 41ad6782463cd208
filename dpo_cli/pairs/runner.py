"""`dpo generate-pairs` as a library function: prompts in, a preference data set and its summary out.

Output directory:
    generations.jsonl   every sampled response (the resumable cache)
    scores.jsonl        every score (cached too: judge calls cost money)
    pairs.jsonl         the pairs, in TRL's format, with their scores and provenance
    summary.json/.md    counts, why prompts produced no pair, settings; written last
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.fsio import append_jsonl, atomic_write_json, atomic_write_text
from dpo_cli.generation import Prompt, read_cache
from dpo_cli.pairs.pairing import REASONS, distinct, pair_up
from dpo_cli.pairs.sampling import Sampler, Sampling, sample_prompts

SUMMARY = "summary.json"
PAIRS = "pairs.jsonl"
# Chosen longer than rejected in more than this share of pairs: the scorer rewards length.
LENGTH_BIAS_SHARE = 0.75


def sampling_of(section: Any) -> Sampling:
    """`generate:` (n samples) or `eval:` (one response, greedy when temperature is 0) as `Sampling`."""
    n = getattr(section, "num_samples", 1)
    return Sampling(n, section.max_new_tokens, section.temperature, section.top_p, section.seed, section.batch_size)


def check_output(out_dir: Path, overwrite: bool) -> None:
    """Refuse to replace finished pairs without `--overwrite` (the caches are reused either way)."""
    if (out_dir / SUMMARY).exists() and not overwrite:
        raise DpoError(
            f"{out_dir}: finished pairs from an earlier run are there",
            exit_code=EXIT_USAGE,
            details=[
                (
                    "pass --overwrite to build them again (cached samples and scores with the same settings are "
                    "reused), or choose another --output"
                )
            ],
        )


def generate_pairs(
    cfg: Any,
    prompts: list[Prompt],
    out_dir: Path,
    *,
    sampler: Sampler,
    scorer: Any,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Sample `generate.num_samples` responses per prompt, score them, write pairs and a summary.

    Raises:
        DpoError: Finished output is there without `overwrite`, or sampling or scoring failed
            (what was sampled and scored so far stays cached for the rerun).
    """
    g = cfg.generate
    check_output(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    sampling = sampling_of(g)
    rows, reused = sample_prompts(
        sampler, prompts, sampling, out_dir / "generations.jsonl", progress=progress, desc="sample"
    )
    if reused:
        echo(f"reused {reused} of {len(prompts)} prompts' samples from {out_dir / 'generations.jsonl'}")
    scored = score_rows(rows, scorer, g.max_similarity, out_dir / "scores.jsonl", progress=progress)
    pairs, skipped = [], dict.fromkeys(REASONS, 0)
    for row, (kept, scores) in zip(rows, scored):
        texts = [row["samples"][i]["text"] for i in kept]
        if len(kept) < 2:
            skipped["empty" if not kept else "near_identical"] += 1
            continue
        chosen_rejected, reason = pair_up(scores, g.pairing, g.min_score_gap)
        if reason:
            skipped[reason] += 1
        for c, r in chosen_rejected:
            pairs.append(_pair_row(row, texts[c], texts[r], scores[c], scores[r], sampler, scorer, g.seed))
    atomic_write_text(out_dir / PAIRS, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    summary = _summary(rows, pairs, skipped, sampler, scorer, cfg, out_dir, reused)
    atomic_write_text(out_dir / "summary.md", summary_markdown(summary))
    atomic_write_json(out_dir / SUMMARY, summary)  # last: its presence marks the output finished
    return summary


def score_rows(
    rows: list[dict[str, Any]], scorer: Any, max_similarity: float, cache: Path, *, progress: bool = True
) -> list[tuple[list[int], list[float]]]:
    """For each prompt, the distinct responses kept (sample positions) and their scores, cached per prompt."""
    from tqdm.auto import tqdm

    cached = read_cache(cache)
    out = []
    for row in tqdm(rows, desc="score", unit="prompt", file=sys.stderr, disable=not progress):
        key = hashlib.sha256(json.dumps([row["key"], scorer.name, max_similarity]).encode()).hexdigest()[:16]
        hit = cached.get(row["index"])
        if hit is not None and hit.get("key") == key:
            out.append((hit["kept"], hit["scores"]))
            continue
        texts = [s["text"].strip() for s in row["samples"]]
        kept = distinct(texts, max_similarity)
        scores = (
            scorer.rank(row["prompt"], [texts[i] for i in kept], where=f" (prompt row {row['index'] + 1})")
            if len(kept) >= 2
            else []
        )
        append_jsonl(cache, [{"index": row["index"], "key": key, "kept": kept, "scores": scores}])
        out.append((kept, scores))
    return out


def _pair_row(
    row: dict[str, Any],
    chosen: str,
    rejected: str,
    chosen_score: float,
    rejected_score: float,
    sampler: Sampler,
    scorer: Any,
    seed: int,
) -> dict[str, Any]:
    if sampler.chat:  # sampled through the chat template: train on the same conversation
        prompt: Any = row["messages"]
        chosen_v: Any = [{"role": "assistant", "content": chosen.strip()}]
        rejected_v: Any = [{"role": "assistant", "content": rejected.strip()}]
    else:
        prompt, chosen_v, rejected_v = row["prompt"], chosen, rejected
    return {
        "prompt": prompt,
        "chosen": chosen_v,
        "rejected": rejected_v,
        "chosen_score": chosen_score,
        "rejected_score": rejected_score,
        "prompt_index": row["index"],
        "judge": scorer.name,
        "model": getattr(sampler, "name", sampler.model_id),
        "seed": seed,
    }


def _summary(
    rows: list[dict[str, Any]],
    pairs: list[dict[str, Any]],
    skipped: dict[str, int],
    sampler: Sampler,
    scorer: Any,
    cfg: Any,
    out_dir: Path,
    reused: int,
) -> dict[str, Any]:
    g = cfg.generate
    samples = [s for r in rows for s in r["samples"]]

    def words(value: Any) -> int:
        return len((value[-1]["content"] if isinstance(value, list) else value).split())

    chosen_words = [words(p["chosen"]) for p in pairs]
    rejected_words = [words(p["rejected"]) for p in pairs]
    longer = sum(c > r for c, r in zip(chosen_words, rejected_words))
    warnings = []
    if pairs and longer / len(pairs) > LENGTH_BIAS_SHARE:
        warnings.append(
            f"chosen is longer than rejected in {longer} of {len(pairs)} pairs: the scorer rewards length, and "
            "training on these pairs teaches verbosity"
        )
    unfinished = sum(not s["finished"] for s in samples)
    if samples and unfinished / len(samples) > 0.5:
        warnings.append(
            f"{unfinished} of {len(samples)} samples hit generate.max_new_tokens: scores compare cut-off answers"
        )
    with_pairs = len({p["prompt_index"] for p in pairs})
    return {
        "prompts": len(rows),
        "prompts_with_pairs": with_pairs,
        "pairs": len(pairs),
        "skipped": {REASONS[k]: v for k, v in skipped.items() if v},
        "samples": len(samples),
        "unfinished_samples": unfinished,
        "reused_prompts": reused,
        "mean_chosen_score": _mean([p["chosen_score"] for p in pairs]),
        "mean_rejected_score": _mean([p["rejected_score"] for p in pairs]),
        "mean_score_gap": _mean([p["chosen_score"] - p["rejected_score"] for p in pairs]),
        "mean_chosen_words": _mean(chosen_words),
        "mean_rejected_words": _mean(rejected_words),
        "warnings": warnings,
        "judge": scorer.name,
        "model": getattr(sampler, "name", sampler.model_id),
        "model_id": sampler.model_id,
        "settings": {
            k: getattr(g, k)
            for k in (
                "num_samples",
                "max_new_tokens",
                "temperature",
                "top_p",
                "seed",
                "batch_size",
                "pairing",
                "min_score_gap",
                "max_similarity",
            )
        },
        "pairs_file": str(out_dir / PAIRS),
    }


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summary_markdown(s: dict[str, Any]) -> str:
    def num(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = [
        "# Generated pairs",
        "",
        f"- model: {s['model']}",
        f"- scored by: {s['judge']}",
        f"- settings: {', '.join(f'{k}={v}' for k, v in s['settings'].items())}",
        "",
        "| | |",
        "| --- | --- |",
        f"| prompts | {s['prompts']} |",
        f"| prompts with pairs | {s['prompts_with_pairs']} |",
        f"| pairs | {s['pairs']} |",
        f"| samples (unfinished) | {s['samples']} ({s['unfinished_samples']}) |",
        f"| mean score chosen / rejected | {num(s['mean_chosen_score'])} / {num(s['mean_rejected_score'])} |",
        f"| mean words chosen / rejected | {num(s['mean_chosen_words'])} / {num(s['mean_rejected_words'])} |",
    ]
    if s["skipped"]:
        lines += ["", "Prompts without a pair:", ""] + [f"- {n}: {reason}" for reason, n in s["skipped"].items()]
    if s["warnings"]:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in s["warnings"]]
    return "\n".join(lines) + "\n"


def console_lines(s: dict[str, Any]) -> list[str]:
    lines = [
        (
            f"{s['pairs']} pairs from {s['prompts_with_pairs']} of {s['prompts']} prompts "
            f"({s['samples']} samples; scored by {s['judge']})"
        ),
    ]
    if s["pairs"]:
        lines.append(
            f"  mean score gap {s['mean_score_gap']:.3f}; words chosen/rejected "
            f"{s['mean_chosen_words']:.1f}/{s['mean_rejected_words']:.1f}"
        )
    lines += [f"  no pair for {n} prompt(s): {reason}" for reason, n in s["skipped"].items()]
    lines += [f"  warning: {w}" for w in s["warnings"]]
    lines.append(f"  pairs: {s['pairs_file']}")
    return lines
