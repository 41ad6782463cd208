"""Entry point of the `dpo` console script."""

from __future__ import annotations

import typer

from dpo_cli import __version__
from dpo_cli.cli import (
    config_cmd,
    doctor,
    generate_pairs,
    iterate,
    merge_adapter,
    plan,
    sweep_beta,
    train,
    validate_data,
)
from dpo_cli.cli import eval as eval_cmd

app = typer.Typer(
    name="dpo",
    help="One YAML file to a preference-optimization run (DPO and variants) on Hugging Face TRL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("train")(train.train)
app.command("eval")(eval_cmd.eval_)
app.command("validate-data")(validate_data.validate_data)
app.command("plan")(plan.plan)
app.command("doctor")(doctor.doctor)
app.command("merge-adapter")(merge_adapter.merge_adapter)
app.command("sweep-beta")(sweep_beta.sweep_beta)
app.command("generate-pairs")(generate_pairs.generate_pairs)
app.command("iterate")(iterate.iterate)
app.add_typer(config_cmd.app, name="config")


def _version(value: bool) -> None:
    if value:
        print(f"dpo {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """One YAML file to a preference-optimization run (DPO and variants) on Hugging Face TRL."""


def main() -> None:
    app()
