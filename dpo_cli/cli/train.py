"""`dpo train CONFIG`: validate, train, and leave a complete run directory."""

from __future__ import annotations

from typing import Annotated

import typer

from dpo_cli.cli.common import ConfigArg, SetOption, user_errors


def train(
    config: ConfigArg,
    set_: SetOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier run in output_dir.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue the run in output_dir from its last complete checkpoint.")] = False,
) -> None:
    """Train with DPO as CONFIG says (full fine-tuning, LoRA or QLoRA)."""
    from dpo_cli.config.loader import load_config
    from dpo_cli.report import print_run_summary
    from dpo_cli.training import train as run_training

    with user_errors():
        cfg = load_config(config, set_)
        result = run_training(cfg, overwrite=overwrite, resume=resume, config_path=str(config), overrides=set_ or [])
        print_run_summary(result)
