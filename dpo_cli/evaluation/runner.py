"""`dpo eval` as a library function: runs (or a config plus weights) in, reports out."""

from __future__ import annotations

import gc
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpo_cli.errors import EXIT_USAGE, DpoError


@dataclass(frozen=True)
class EvalTarget:
    """What one evaluation looks at, and where its report goes."""

    label: str
    cfg: Any  # RunConfig
    config_path: Path
    weights: Path
    out_dir: Path


def resolve_target(
    path: Path,
    *,
    model: Path | None,
    overrides: list[str] | None = None,
    updates: Mapping[str, Any] | None = None,
) -> EvalTarget:
    """A finished run directory, or a config file plus `model` (an adapter or a full model).

    Args:
        path: A run directory (its `config.yaml` and `final/`) or a config file.
        model: The weights to evaluate (required with a config file).
        overrides: `--set KEY=VALUE` strings from the command line.
        updates: Typed dotted-key updates from an internal caller (a sweep), applied after `overrides`.

    Raises:
        DpoError: Neither form, a run without final weights, or a config without `model`.
    """
    from dpo_cli.config.loader import load_config, with_updates

    def load(config_path: Path) -> Any:
        cfg = load_config(config_path, overrides)
        return with_updates(cfg, updates, source=str(config_path)) if updates else cfg

    if path.is_dir():
        config_path = path / "config.yaml"
        if not config_path.is_file():
            raise DpoError(
                f"{path}: not a run directory (no config.yaml); pass a run directory or a config file",
                exit_code=EXIT_USAGE,
            )
        cfg = load(config_path)
        weights = model or path / "final"
        if not weights.is_dir():
            raise DpoError(
                f"{path}: the run has no final weights ({weights} is missing); did training finish?",
                exit_code=EXIT_USAGE,
                details=["pass --model PATH to evaluate a checkpoint instead"],
            )
        return EvalTarget(path.name, cfg, config_path, weights, path / "eval")
    if path.is_file():
        cfg = load(path)
        if model is None:
            raise DpoError(
                f"{path}: a config needs --model PATH (a LoRA adapter or a model directory)", exit_code=EXIT_USAGE
            )
        if not model.is_dir():
            raise DpoError(f"--model {model}: directory not found", exit_code=EXIT_USAGE)
        return EvalTarget(
            model.name if model.name != "final" else model.parent.name, cfg, path, model, Path(cfg.output_dir) / "eval"
        )
    raise DpoError(f"{path}: no such run directory or config file", exit_code=EXIT_USAGE)


def check_writable(out_dir: Path, name: str, overwrite: bool) -> None:
    if (out_dir / name).exists() and not overwrite:
        raise DpoError(
            f"{out_dir / name}: an earlier eval report is there",
            exit_code=EXIT_USAGE,
            details=["pass --overwrite to replace it (cached generations with the same settings are reused)"],
        )


def run_eval(
    targets: list[EvalTarget],
    *,
    overwrite: bool = False,
    compare_dir: Path | None = None,
    progress: bool = True,
    echo: Any = print,
) -> list[dict[str, Any]]:
    """Evaluate every target; write each report, and a side-by-side one for several.

    The judge comes from the first target's `eval.judge` and is checked (one call to an
    endpoint) before anything is generated, so a dead endpoint fails in seconds.
    """
    from dpo_cli.evaluation.report import console_text, write_comparison, write_report
    from dpo_cli.publish import refresh_if_finished

    for target in targets:
        check_writable(target.out_dir, "report.json", overwrite)
    if len(targets) > 1:
        compare_dir = compare_dir or Path("eval-compare")
        check_writable(compare_dir, "compare.json", overwrite)
    judge_section = targets[0].cfg.eval.judge
    judge = None
    if judge_section is not None and any(t.cfg.eval.generate for t in targets):
        from dpo_cli.evaluation.judges import make_judge

        judge = make_judge(judge_section)
        judge.check()
    reports = []
    for target in targets:
        report = evaluate_target(target, judge, judge_section, progress=progress)
        write_report(target.out_dir, report)
        echo(console_text(report))
        # The run's model card and report.html now include this evaluation.
        for path in refresh_if_finished(target.out_dir.parent):
            echo(f"{'card' if path.name == 'README.md' else 'page':<10} {path}")
        reports.append(report)
    if len(targets) > 1:
        assert compare_dir is not None
        paths = write_comparison(compare_dir, reports)
        echo(f"\nside by side: {paths[1]}")
    return reports


def evaluate_target(target: EvalTarget, judge: Any, judge_section: Any, *, progress: bool = True) -> dict[str, Any]:
    """Preference metrics, generations, pathology checks and win rate of one target."""
    from dpo_cli.evaluation.judges import describe
    from dpo_cli.fsio import atomic_write_text

    settings = target.cfg.eval
    report: dict[str, Any] = {
        "label": target.label,
        "weights": str(target.weights),
        "config": str(target.config_path),
        "settings": settings.model_dump(mode="json", exclude={"judge"}),
        "judge": describe(judge_section) if judge_section is not None else None,
    }
    if settings.preference:
        from dpo_cli.evaluation.preference import preference_metrics

        report["preference"] = preference_metrics(target.cfg, target.weights)
        gc.collect()
    if settings.alignment_tax is not None:
        from dpo_cli.evaluation.generate import load_generation_models
        from dpo_cli.evaluation.tax import alignment_tax, task_manager

        manager, names = task_manager(settings.alignment_tax)  # an unknown task fails before any model loads
        models = load_generation_models(target.cfg, target.weights)
        report["alignment_tax"] = alignment_tax(models, settings.alignment_tax, manager, names)
        del models
        gc.collect()
    if not settings.generate:
        report["judge_skipped"] = "skipped: `eval.generate` is false"
        return report
    policy_rows, reference_rows = _generations(target, progress)
    from dpo_cli.evaluation import pathology

    policy = pathology.summarize([r["response"] for r in policy_rows], [r["finished"] for r in policy_rows])
    reference = pathology.summarize([r["response"] for r in reference_rows], [r["finished"] for r in reference_rows])
    report["pathology"] = {
        "policy": policy,
        "reference": reference,
        "table": pathology.compare(policy, reference),
        "findings": pathology.findings(policy, reference),
    }
    if judge is None:
        report["judge_skipped"] = "skipped: no judge configured (set `eval.judge` or pass --judge)"
        return report
    from dpo_cli.evaluation.winrate import judge_pair, tally

    results = [
        judge_pair(judge, p["index"], p["prompt"], p["response"], r["response"])
        for p, r in _progress(list(zip(policy_rows, reference_rows)), "judge", progress)
    ]
    lines = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in results)
    atomic_write_text(target.out_dir / "judgements.jsonl", lines)
    report["winrate"] = tally(results)
    return report


def _generations(target: EvalTarget, progress: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from dpo_cli.config.algorithms import algorithm_of
    from dpo_cli.data import load_preference_data
    from dpo_cli.evaluation.generate import eval_prompts, generate, load_generation_models

    # KTO's held-out rows are unpaired; only their prompts are used here.
    data = load_preference_data(target.cfg.data, unpaired=not algorithm_of(target.cfg).paired)
    if data.eval is None:
        raise DpoError(
            "generation needs held-out prompts: set `data.eval` or `data.eval_fraction`", exit_code=EXIT_USAGE
        )
    prompts = eval_prompts(data.eval, target.cfg.eval.num_prompts)
    models = load_generation_models(target.cfg, target.weights)
    gen_dir = target.out_dir / "generations"
    policy_rows = generate(
        models.policy,
        models.tokenizer,
        prompts,
        target.cfg.eval,
        label="policy",
        model_id=models.policy_id,
        out_path=gen_dir / "policy.jsonl",
        progress=progress,
    )
    with models.reference_context():
        reference_rows = generate(
            models.reference,
            models.tokenizer,
            prompts,
            target.cfg.eval,
            label="reference",
            model_id=models.reference_id,
            out_path=gen_dir / "reference.jsonl",
            progress=progress,
        )
    del models
    gc.collect()
    return policy_rows, reference_rows


def _progress(items: list[Any], desc: str, enabled: bool) -> Any:
    import sys

    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="pair", file=sys.stderr, disable=not enabled)
