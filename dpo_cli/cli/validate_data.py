"""`dpo validate-data CONFIG` (or `--data PATH`): check preference data before training on it.

Exit codes: 0 no problems (warnings allowed), 2 errors (rows train cannot use, unreadable
data), 1 warnings under `--strict`. Rows dropped by their format's own rule (ties, rows without
a label) are counted and listed but are not errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dpo_cli.cli.common import SetOption, user_errors
from dpo_cli.errors import EXIT_USAGE, DpoError

ConfigOpt = Annotated[
    Path | None,
    typer.Argument(help="Run config (YAML): its data, tokenizer and max_length are used.", show_default=False),
]


def validate_data(
    config: ConfigOpt = None,
    set_: SetOption = None,
    data: Annotated[str | None, typer.Option(help="Data without a config: file, folder, glob or Hub id.")] = None,
    eval_data: Annotated[
        str | None, typer.Option("--eval", help="Held-out data with --data (also checked for leaks from train).")
    ] = None,
    prompt_column: Annotated[
        str,
        typer.Option(
            help="Prompt column with --data; when absent, the prompt is chosen's and rejected's shared start."
        ),
    ] = "prompt",
    chosen_column: Annotated[str, typer.Option(help="Chosen column with --data.")] = "chosen",
    rejected_column: Annotated[str, typer.Option(help="Rejected column with --data.")] = "rejected",
    system_column: Annotated[
        str | None, typer.Option(help="System-prompt column with --data, kept as the system turn (default: `system`).")
    ] = None,
    history_column: Annotated[
        str | None,
        typer.Option(help="Earlier-turns column with --data ([[user, assistant], ...]; default: `history`)."),
    ] = None,
    format_: Annotated[
        str, typer.Option("--format", help="Layout with --data (`auto` detects; see the formats table).")
    ] = "auto",
    max_row_bytes: Annotated[
        int | None,
        typer.Option(
            min=1024, help="Longest row read with --data (default 4 MiB); longer ones are errors naming the line."
        ),
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="Tokenizer for token checks with --data (path or Hub id).")
    ] = None,
    max_length: Annotated[int, typer.Option(help="max_length for token checks with --data (TRL's default).")] = 1024,
    no_tokens: Annotated[
        bool, typer.Option("--no-tokens", help="Skip the tokenizer checks, even with a config.")
    ] = False,
    near_identical: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Similarity from which chosen and rejected are near-identical.")
    ] = 0.9,
    report: Annotated[Path | None, typer.Option(help="Also write the full report as JSON to this file.")] = None,
    write_clean: Annotated[
        Path | None,
        typer.Option(help="Folder for the kept rows and rejects.jsonl (each dropped row with its reasons)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --report file or --write-clean folder.")] = False,
    strict: Annotated[bool, typer.Option(help="Fail (exit 1) on warnings too.")] = False,
) -> None:
    """Check preference data the way `dpo train` reads it: format, fields, pairs, duplicates, leakage, tokens."""
    from dpo_cli.fsio import atomic_write_json
    from dpo_cli.validation import data_section, token_checker_from_name, validate_config
    from dpo_cli.validation import validate_data as run_validation
    from dpo_cli.validation.report import CleanWriter, format_report, report_json

    with user_errors():
        if (config is None) == (data is None):
            raise DpoError("give either CONFIG or --data PATH", exit_code=EXIT_USAGE)
        if report is not None and report.exists() and not overwrite:
            raise DpoError(f"{report}: file exists", exit_code=EXIT_USAGE, details=["pass --overwrite to replace it"])
        cfg = None
        if config is not None:
            from dpo_cli.config.loader import load_config

            cfg = load_config(config, set_)
        writer = CleanWriter(write_clean, overwrite=overwrite) if write_clean is not None else None
        if cfg is not None:
            result = validate_config(cfg, tokens=not no_tokens, writer=writer, near_identical=near_identical)
        else:
            section = data_section(
                data,
                eval_data,
                prompt=prompt_column,
                chosen=chosen_column,
                rejected=rejected_column,
                system=system_column,
                history=history_column,
                format=format_,
                max_row_bytes=max_row_bytes,
            )
            checker = token_checker_from_name(tokenizer, max_length) if tokenizer and not no_tokens else None
            result = run_validation(
                section,
                token_checker=checker,
                tokenizer_name=tokenizer if checker else None,
                writer=writer,
                near_identical=near_identical,
                detect_unpaired=True,
            )
        print(format_report(result, strict))
        if report is not None:
            atomic_write_json(report, report_json(result, strict))
    raise typer.Exit(result.exit_code(strict))
