"""`dpo eval RUN_DIR_OR_CONFIG [RUN_DIR ...]`: preference metrics, win rate and pathology checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dpo_cli.cli.common import SetOption, user_errors
from dpo_cli.errors import EXIT_USAGE, DpoError

JUDGE_KINDS = ("endpoint", "reward_model", "llm")


def judge_overrides(judge: str | None, judge_model: str | None) -> list[str]:
    """`--judge KIND:TARGET` (and `--judge-model`) as `eval.judge.*` overrides."""
    if judge is None:
        return [f"eval.judge.model={judge_model}"] if judge_model else []
    kind, sep, target = judge.partition(":")
    if not sep or kind not in JUDGE_KINDS or not target:
        raise DpoError(
            f"--judge {judge}: expected KIND:TARGET with KIND one of {', '.join(JUDGE_KINDS)}",
            exit_code=EXIT_USAGE,
            details=["e.g. --judge endpoint:http://127.0.0.1:8000/v1 --judge-model NAME, --judge reward_model:./rm"],
        )
    found = [f"eval.judge.kind={kind}", f"eval.judge.{'base_url' if kind == 'endpoint' else 'path'}={target}"]
    return found + ([f"eval.judge.model={judge_model}"] if judge_model else [])


def eval_(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Finished run directories, or one config file with --model.",
            show_default=False,
            metavar="RUN_DIR_OR_CONFIG",
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(help="Adapter or model directory to evaluate (with a config, or instead of RUN/final)."),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(
            help="Judge for the win rate: endpoint:URL, reward_model:DIR or llm:DIR (overrides eval.judge).",
            metavar="KIND:TARGET",
        ),
    ] = None,
    judge_model: Annotated[str | None, typer.Option(help="Model name sent to an endpoint judge.")] = None,
    set_: SetOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace earlier eval reports.")] = False,
    compare_dir: Annotated[Path, typer.Option(help="Where the side-by-side report of several runs goes.")] = Path(
        "eval-compare"
    ),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Evaluate trained runs: held-out preference metrics, judged win rate, pathology checks."""
    from dpo_cli.evaluation.runner import resolve_target, run_eval

    with user_errors():
        if model is not None and len(runs) > 1:
            raise DpoError(
                "--model applies to one run or config; give one RUN_DIR_OR_CONFIG with it", exit_code=EXIT_USAGE
            )
        overrides = [*(set_ or []), *judge_overrides(judge, judge_model)]
        targets = [resolve_target(path, model=model, overrides=overrides) for path in runs]
        run_eval(targets, overwrite=overwrite, compare_dir=compare_dir, progress=progress)
