"""What every subcommand shares: config loading with `--set`, and turning errors into exit codes."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from dpo_cli.errors import DpoError

ConfigArg = Annotated[Path, typer.Argument(help="Run config (YAML).", show_default=False, metavar="CONFIG")]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a config key, e.g. --set training.beta=0.2 (repeatable).",
        show_default=False,
    ),
]

PromptsOption = Annotated[
    str | None,
    typer.Option(help="Prompt file, folder or Hub id (default: generate.prompts).", show_default=False),
]
ScorerOption = Annotated[
    str | None,
    typer.Option(
        help="Scoring function module:function or file.py:function (overrides generate.scorer).", show_default=False
    ),
]


def generate_overrides(prompts: str | None, scorer: str | None) -> list[str]:
    """`--prompts` and `--scorer` as `generate.*` overrides."""
    return [*([f"generate.prompts={prompts}"] if prompts else []), *([f"generate.scorer={scorer}"] if scorer else [])]


def err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print expected failures as `error: ...` lines and exit with their code, no traceback."""
    from dpo_cli.errors import EXIT_INTERRUPTED
    from dpo_cli.interrupts import RunInterrupted

    try:
        yield
    except DpoError as exc:
        err(f"error: {exc.message}")
        for line in exc.details:
            err(f"  {line}")
        raise typer.Exit(exc.exit_code) from None
    except (KeyboardInterrupt, RunInterrupted):
        # A Ctrl-C outside a run's own signal handling (config checks, data validation, other verbs).
        err("error: interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
