"""The alignment tax: what preference training cost on ordinary benchmarks.

The same lm-evaluation-harness tasks run on the reference (the starting model) and on the
trained policy, with the same settings and seeds; the report gives each metric for both and
the difference with its standard error. lm-evaluation-harness is the tool users already
trust for these numbers (its task definitions, prompts and metrics are the published ones), so
it is used as a library rather than re-implemented; it is an optional dependency.

A task is a registered name (`arc_easy`) or a path to a task YAML file, which is how a task
over a local data file is defined (`dataset_path: json` with `dataset_kwargs.data_files`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_cli.errors import EXIT_USAGE, DpoError

if TYPE_CHECKING:
    from dpo_cli.config.schema import AlignmentTaxSection


def task_names(tasks: list[str]) -> tuple[list[str], list[str]]:
    """(task names for the harness, folders to add to its task search path) from names and YAML paths.

    Raises:
        DpoError: A YAML path is missing or names no `task:`.
    """
    import yaml

    names, folders = [], []
    for task in tasks:
        if task.endswith((".yaml", ".yml")):
            path = Path(task).expanduser()
            if not path.is_file():
                raise DpoError(f"eval.alignment_tax.tasks: {task}: file not found", exit_code=EXIT_USAGE)
            try:
                name = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("task")
            except yaml.YAMLError as exc:
                raise DpoError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}", exit_code=EXIT_USAGE) from None
            if not isinstance(name, str):
                raise DpoError(f"{path}: a task file needs a `task:` name", exit_code=EXIT_USAGE)
            names.append(name)
            folders.append(str(path.resolve().parent))
        else:
            names.append(task)
    return names, sorted(set(folders))


def task_manager(settings: AlignmentTaxSection) -> tuple[Any, list[str]]:
    """The harness's task index (built once: it reads every task file it ships) and the task names.

    Raises:
        DpoError: lm-evaluation-harness is not installed, or does not know a task.
    """
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise DpoError(
            "eval.alignment_tax needs lm-evaluation-harness: pip install 'dpo-cli[eval]' (or lm_eval)",
            exit_code=EXIT_USAGE,
        ) from None
    names, folders = task_names(settings.tasks)
    manager = TaskManager(include_path=folders or None, verbosity="ERROR")
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise DpoError(
            f"eval.alignment_tax.tasks: lm-evaluation-harness has no task {', '.join(unknown)}",
            exit_code=EXIT_USAGE,
            details=["list them with `lm_eval ls tasks`, or give a task YAML path"],
        )
    return manager, names


def run_tasks(
    model: Any, tokenizer: Any, settings: AlignmentTaxSection, manager: Any, names: list[str]
) -> dict[str, dict[str, float]]:
    """`{task: {metric: value}}` (stderr keys included) for one model."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its per-request logging drowns the report
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size)
    out = simple_evaluate(
        model=lm,
        tasks=names,
        num_fewshot=settings.num_fewshot,
        limit=settings.limit,
        task_manager=manager,
        log_samples=False,
        bootstrap_iters=1000,
    )
    return {
        task: {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for task, metrics in out["results"].items()
    }


def compare(reference: dict[str, dict[str, float]], policy: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per task and metric: both values, the difference and its standard error."""
    rows = []
    for task in sorted(policy):
        for key, value in sorted(policy[task].items()):
            # Metrics are `name,filter` keys; the rest (`alias`, `sample_len`) describe the task.
            if "," not in key or "_stderr" in key or key not in reference.get(task, {}):
                continue
            metric = key.split(",")[0]  # the harness names metrics `acc,none` (metric, filter)
            stderr_key = key.replace(metric, f"{metric}_stderr", 1)
            errors = [d[task].get(stderr_key) for d in (reference, policy)]
            stderr = (
                math.sqrt(sum(e * e for e in errors))
                if all(isinstance(e, (int, float)) and math.isfinite(e) for e in errors)
                else None
            )
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "reference": reference[task][key],
                    "policy": value,
                    "delta": value - reference[task][key],
                    "stderr": stderr,
                }
            )
    return rows


def alignment_tax(models: Any, settings: AlignmentTaxSection, manager: Any, names: list[str]) -> dict[str, Any]:
    """Run the tasks (from `task_manager`) on the reference, inside its context, and on the policy; compare."""
    with models.reference_context():
        reference = run_tasks(models.reference, models.tokenizer, settings, manager, names)
    policy = run_tasks(models.policy, models.tokenizer, settings, manager, names)
    return {
        "tasks": settings.tasks,
        "limit": settings.limit,
        "num_fewshot": settings.num_fewshot,
        "rows": compare(reference, policy),
    }


def lines(tax: dict[str, Any]) -> list[str]:
    """Markdown table rows of the comparison."""
    out = ["| task | metric | reference | policy | difference |", "| --- | --- | --- | --- | --- |"]
    for r in tax["rows"]:
        err = f" ± {r['stderr']:.3f}" if r["stderr"] is not None else ""
        out.append(
            f"| {r['task']} | {r['metric']} | {r['reference']:.3f} | {r['policy']:.3f} | {r['delta']:+.3f}{err} |"
        )
    return out
