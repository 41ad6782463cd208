"""`dpo config show|schema`: the resolved config, and the JSON Schema editors use to check YAML."""

from __future__ import annotations

import json

import typer

from dpo_cli.cli.common import ConfigArg, SetOption, user_errors

app = typer.Typer(help="Inspect configs: the resolved values, or the JSON Schema.", no_args_is_help=True)


@app.command("show")
def show(config: ConfigArg, set_: SetOption = None) -> None:
    """Validate CONFIG (with overrides) and print it with every default filled in."""
    from dpo_cli.config.loader import config_to_yaml, load_config

    with user_errors():
        cfg = load_config(config, set_)
        print(config_to_yaml(cfg), end="")


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of run configs (for editor completion and checking)."""
    from dpo_cli.config.schema import RunConfig

    print(json.dumps(RunConfig.model_json_schema(), indent=2))
