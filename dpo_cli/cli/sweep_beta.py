"""`dpo sweep-beta CONFIG`: train a grid of betas (and learning rates), compare on held-out pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dpo_cli.cli.common import ConfigArg, SetOption, user_errors
from dpo_cli.errors import EXIT_USAGE, DpoError


def _floats(text: str | None, option: str) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DpoError(f"{option}: expected comma-separated numbers, found {text!r}", exit_code=EXIT_USAGE) from None


def sweep_beta(
    config: ConfigArg,
    set_: SetOption = None,
    betas: Annotated[
        str | None, typer.Option(help="Comma-separated betas, e.g. 0.01,0.1,0.5 (default: sweep.betas).")
    ] = None,
    learning_rates: Annotated[
        str | None, typer.Option(help="Comma-separated learning rates to cross with the betas.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Sweep directory (default: sweep.output_dir or <output_dir>-sweep).")
    ] = None,
    devices: Annotated[
        str | None,
        typer.Option(
            help="Run points in parallel as separate processes, one per device group: '0,1;2,3' = two groups of two GPUs."
        ),
    ] = None,
    print_commands: Annotated[
        bool, typer.Option(help="Print one `dpo train` command per point (for a scheduler) and exit.")
    ] = False,
    skip_validation: Annotated[
        bool, typer.Option(help="Do not check the data first (it is checked once for all points).")
    ] = False,
) -> None:
    """Train one run per beta (and learning rate) and pick the best on held-out pairs."""
    from dpo_cli.sweep.report import print_sweep_summary
    from dpo_cli.sweep.runner import (
        expand,
        point_configs,
        resolve_grid,
        run_parallel,
        run_sweep,
        sweep_dir_of,
        train_commands,
    )

    with user_errors():
        beta_list, rate_list = _floats(betas, "--betas"), _floats(learning_rates, "--learning-rates")
        if print_commands:
            from dpo_cli.config.loader import load_config

            cfg = load_config(config, set_)
            out = sweep_dir_of(cfg, output)
            beta_list, rate_list = resolve_grid(cfg.sweep, out, beta_list, rate_list)
            points = expand(cfg.sweep, beta_list, rate_list, cfg.algorithm)
            point_configs(cfg, points, out, str(config))
            import shlex

            for argv in train_commands(config, set_ or [], points, out):
                print(shlex.join(argv))
            return
        if devices:
            groups = [g.strip() for g in devices.split(";") if g.strip()]
            result = run_parallel(
                config,
                set_ or [],
                device_groups=groups,
                betas=beta_list,
                learning_rates=rate_list,
                sweep_dir=output,
                validate=not skip_validation,
            )
        else:
            result = run_sweep(
                config,
                set_ or [],
                betas=beta_list,
                learning_rates=rate_list,
                sweep_dir=output,
                validate=not skip_validation,
            )
        print_sweep_summary(result)
