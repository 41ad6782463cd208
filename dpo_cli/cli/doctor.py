"""`dpo doctor`: library versions, devices, tested ranges and known-bad combinations."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from dpo_cli.errors import EXIT_FAILURE


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check the installed stack; exit 1 on a known-bad combination."""
    from dpo_cli.doctor import collect, render

    report = collect()
    print(json.dumps(report.to_dict(), indent=2) if as_json else render(report))
    if not report.ok:
        raise typer.Exit(EXIT_FAILURE)
