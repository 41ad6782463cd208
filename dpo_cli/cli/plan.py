"""`dpo plan CONFIG`: per-GPU memory, FLOPs and time for a run, from the model's config alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dpo_cli.cli.common import ConfigArg, SetOption, user_errors
from dpo_cli.errors import EXIT_DOES_NOT_FIT


def plan(
    config: ConfigArg,
    set_: SetOption = None,
    gpus: Annotated[
        int | None, typer.Option(min=1, help="GPUs the run spreads over [default: launch.num_processes].")
    ] = None,
    gpu_memory: Annotated[str, typer.Option(help="Memory of one GPU (80GiB, 40GB, 24576MiB).")] = "80GiB",
    peak_tflops: Annotated[
        float, typer.Option(help="Dense bf16 peak of one GPU in TFLOP/s (H100 SXM: 989; A100: 312).")
    ] = 989.0,
    utilization: Annotated[
        float, typer.Option(help="Fraction of the peak the run reaches, for the time estimate.")
    ] = 0.4,
    rows: Annotated[
        int | None, typer.Option(min=1, help="Training pairs per epoch [default: counted from local JSONL].")
    ] = None,
    model_config: Annotated[
        Path | None, typer.Option(help="The model's config.json, when the model is neither local nor shipped.")
    ] = None,
    json_: Annotated[
        bool, typer.Option("--json", help="Print the figures as one JSON object instead of the table.")
    ] = False,
) -> None:
    """Estimate per-GPU memory, FLOPs per step and time per epoch without loading weights.

    Exit codes: 0 the run fits, 3 it does not fit in --gpu-memory per GPU (with --json too), so
    a job script can gate on it; 2 bad config or arguments.
    """
    from dpo_cli.config.loader import load_config
    from dpo_cli.planning.plan import make_plan, parse_size, render, to_dict

    with user_errors():
        cfg = load_config(config, set_)
        result = make_plan(
            cfg,
            gpus=gpus,
            gpu_memory=parse_size(gpu_memory),
            peak_tflops=peak_tflops,
            utilization=utilization,
            model_config=model_config,
            rows=rows,
        )
    if json_:
        import json

        print(json.dumps(to_dict(result), indent=2))
    else:
        print(render(result))
    if not result.fits:
        raise typer.Exit(EXIT_DOES_NOT_FIT)
