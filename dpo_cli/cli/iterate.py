"""`dpo iterate CONFIG --rounds K`: iterative (online-style) DPO, one round of fresh pairs at a time."""

from __future__ import annotations

from typing import Annotated

import typer

from dpo_cli.cli.common import ConfigArg, PromptsOption, ScorerOption, SetOption, generate_overrides, user_errors


def iterate(
    config: ConfigArg,
    rounds: Annotated[int | None, typer.Option(min=1, help="Rounds to run in all (default: iterate.rounds).")] = None,
    prompts: PromptsOption = None,
    scorer: ScorerOption = None,
    set_: SetOption = None,
    overwrite: Annotated[bool, typer.Option(help="Start the loop in output_dir over, deleting its rounds.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Each round: sample pairs from the current policy, validate them, train, score the held-out prompts.

    Re-running the same command resumes at the first unfinished round (and stage); a larger
    --rounds continues a finished loop.
    """
    from dpo_cli.iterate.runner import run_iterate

    with user_errors():
        overrides = [*(set_ or []), *generate_overrides(prompts, scorer)]
        result = run_iterate(config, overrides, rounds=rounds, overwrite=overwrite, progress=progress)
        first, last = result.rounds[0].get(result.metric), result.rounds[-1].get(result.metric)
        print(f"{result.metric}: {first:.4f} -> {last:.4f} over {len(result.rounds) - 1} round(s)")
        for path in result.files:
            print(f"  {path}")
