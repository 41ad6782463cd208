"""Experiment trackers named by `training.report_to`, checked before any model loads.

`report_to` is TRL's field, passed on unchanged; transformers builds one callback per tracker.
A tracker whose package is missing would otherwise end the run in a transformers traceback
after the model has loaded, so every named tracker is looked up here first with
`importlib.util.find_spec` (nothing is imported). The table below is the one place that knows
which package each tracker needs and what installs it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpo_cli.errors import EXIT_USAGE, DpoError

# Where the TensorBoard event files of a run go, inside its run directory.
TENSORBOARD_DIR = "tensorboard"


@dataclass(frozen=True)
class Tracker:
    """One `report_to` value and what it needs installed."""

    name: str
    modules: tuple[str, ...]  # importable modules; any one of them is enough (transformers' own test)
    pip: str  # what `pip install` takes
    extra: str | None = None  # the dpo-cli extra that installs it


# The integrations transformers 5 knows (`transformers.integrations.INTEGRATION_TO_CALLBACK`;
# a test keeps the two in step). `tracking` is dpo-cli's own extra.
TRACKERS: dict[str, Tracker] = {
    t.name: t
    for t in (
        Tracker("tensorboard", ("tensorboard", "tensorboardX"), "tensorboard", "tracking"),
        Tracker("trackio", ("trackio",), "trackio", "tracking"),
        Tracker("wandb", ("wandb",), "wandb"),
        Tracker("mlflow", ("mlflow",), "mlflow"),
        Tracker("comet_ml", ("comet_ml",), "comet_ml"),
        Tracker("neptune", ("neptune",), "neptune"),
        Tracker("clearml", ("clearml",), "clearml"),
        Tracker("azure_ml", ("azureml.core.run",), "azureml-core"),
        Tracker("codecarbon", ("codecarbon",), "codecarbon"),
        Tracker("dagshub", ("dagshub",), "dagshub mlflow"),
        Tracker("dvclive", ("dvclive",), "dvclive"),
        Tracker("swanlab", ("swanlab",), "swanlab"),
        Tracker("flyte", ("flytekit",), "flytekit"),
        Tracker("kubeflow", ("kubeflow",), "kubeflow"),
    )
}


def requested_trackers(report_to: str | list[str] | None) -> list[str]:
    """The tracker names `report_to` asks for; `none` and `all` name no particular one.

    `all` means "whatever is installed" to transformers, so it needs no check.
    """
    if report_to is None:
        return []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    return [n for n in names if n not in ("none", "all")]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or a broken install
        return False


def check_trackers(report_to: str | list[str] | None) -> None:
    """Stop before any model loads when a tracker in `report_to` is unknown or not installed.

    Raises:
        DpoError: One line per problem: the tracker, the package it needs and what installs it.
    """
    problems = []
    for name in requested_trackers(report_to):
        tracker = TRACKERS.get(name)
        if tracker is None:
            from rapidfuzz import process

            close = process.extractOne(name, list(TRACKERS), score_cutoff=60)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            problems.append(f"`{name}` is not a tracker transformers knows{hint} (known: {', '.join(TRACKERS)})")
            continue
        if not any(_importable(m) for m in tracker.modules):
            how = (
                f"pip install 'dpo-cli[{tracker.extra}]' (or pip install {tracker.pip})"
                if tracker.extra
                else (f"pip install {tracker.pip}")
            )
            problems.append(f"`{name}` needs the `{tracker.modules[0]}` package, which is not installed: {how}")
    if len(problems) == 1:
        raise DpoError(f"training.report_to: {problems[0]}", exit_code=EXIT_USAGE)
    if problems:
        raise DpoError("training.report_to: trackers that cannot run", exit_code=EXIT_USAGE, details=problems)


def route_logs(trainer: Any, run_dir: Path) -> None:
    """Send TensorBoard's event files to `RUN/tensorboard/` instead of `RUN/checkpoints/runs/<date>/`.

    transformers 5 writes them under the Trainer's `output_dir`, which is `checkpoints/` here;
    `TENSORBOARD_LOGGING_DIR`, when set, still wins (the callback reads it when it is built).
    """
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = str(run_dir / TENSORBOARD_DIR)
