"""`dpo train CONFIG`: validate, train, and leave a complete run directory."""

from __future__ import annotations

from typing import Annotated

import typer

from dpo_cli.cli.common import ConfigArg, SetOption, user_errors


def train(
    config: ConfigArg,
    set_: SetOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier run in output_dir.")] = False,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in output_dir from its last complete checkpoint.")
    ] = False,
    skip_validation: Annotated[
        bool, typer.Option(help="Train without checking the data first (`dpo validate-data` runs those checks).")
    ] = False,
    strict: Annotated[
        bool, typer.Option(help="Stop on any row with an error instead of dropping it (see data.max_drop_fraction).")
    ] = False,
    data_check: Annotated[
        str | None,
        typer.Option(
            help="Use the data check saved in this folder (by sweep-beta or iterate) instead of checking again."
        ),
    ] = None,
    num_processes: Annotated[
        int | None,
        typer.Option(min=1, help="Processes (GPUs) over all machines; above 1 re-runs under `accelerate launch`."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Print the launch command and generated accelerate/DeepSpeed files; run nothing.")
    ] = False,
) -> None:
    """Train with DPO (or the `algorithm:` CONFIG names) as CONFIG says (full fine-tuning, LoRA or QLoRA)."""
    from dpo_cli.config.loader import load_config
    from dpo_cli.train import launch
    from dpo_cli.train.launch import is_main_process
    from dpo_cli.train.run import train_or_launch
    from dpo_cli.train.summary import print_run_summary
    from dpo_cli.train.tracking import check_trackers

    if num_processes is not None:
        set_ = [*(set_ or []), f"launch.num_processes={num_processes}"]
    with user_errors():
        cfg = load_config(config, set_)
        check_trackers(cfg.training.report_to)  # before the data check, the launch and any model
        if dry_run:
            args = launch.train_args(
                str(config),
                set_,
                overwrite=overwrite,
                resume=resume,
                skip_validation=skip_validation,
                strict=strict,
                data_check=data_check,
            )
            print(launch.dry_run(cfg, args))
            return
        result = train_or_launch(
            cfg,
            config_path=str(config),
            overrides=set_,
            overwrite=overwrite,
            resume=resume,
            validate=not skip_validation,
            strict=strict,
            data_check=data_check,
        )
        if result is not None and is_main_process():  # one summary, not one per rank
            print_run_summary(result)
    launch.exit_worker_rank()  # a launched run's other ranks end here, past finalization
