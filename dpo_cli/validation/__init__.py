"""Data validation: every problem in the preference data, found before a GPU hour is spent.

`validate_data` reads the rows the way `dpo train` does (same source resolution, column
mapping and format rules as `dpo_cli.data`) and reports per check a count and example rows.
With a tokenizer it also replays TRL's tokenization, truncation and chat templating.

Modules: `formats` (reading rows, recognising layouts), `checks` (the checks and their
severities), `tokens` (tokenizer checks), `report` (table, JSON, `--write-clean`), `runner`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.validation.checks import ERROR, NEAR_IDENTICAL, WARNING
from dpo_cli.validation.runner import SplitReport, ValidationReport, validate_data

if TYPE_CHECKING:
    from dpo_cli.config.schema import DataSection, RunConfig
    from dpo_cli.validation.report import CleanWriter
    from dpo_cli.validation.tokens import TokenChecker

__all__ = [
    "SplitReport",
    "ValidationReport",
    "check_before_training",
    "data_section",
    "token_checker_for",
    "token_checker_from_name",
    "validate_config",
    "validate_data",
]


def token_checker_for(cfg: RunConfig) -> TokenChecker:
    """The run's tokenizer (as `dpo train` loads it) with its `max_length` and truncation mode."""
    from dpo_cli.build import load_tokenizer
    from dpo_cli.validation.tokens import TokenChecker

    mode = getattr(cfg.training, "truncation_mode", None) or "keep_start"
    if mode not in ("keep_start", "keep_end"):
        raise DpoError(f"training.truncation_mode: {mode!r} is not keep_start or keep_end", exit_code=EXIT_USAGE)
    return TokenChecker(load_tokenizer(cfg), cfg.training.max_length, mode)


def data_section(
    train: str, eval: str | None = None, *, prompt: str = "prompt", chosen: str = "chosen", rejected: str = "rejected"
) -> DataSection:
    """A `data:` section for `--data PATH` without a config (nothing held out: eval is `eval` or none)."""
    from dpo_cli.config.schema import DataColumns, DataSection

    columns = {"chosen": chosen, "rejected": rejected}
    if prompt != "prompt":  # only an explicit choice makes a missing prompt column an error
        columns["prompt"] = prompt
    return DataSection(train=train, eval=eval, eval_fraction=None, columns=DataColumns(**columns))


def token_checker_from_name(name: str, max_length: int | None, truncation_mode: str = "keep_start") -> TokenChecker:
    """A tokenizer by path or Hub id, set up exactly as `dpo train` would set up that model's."""
    from dpo_cli.build import load_tokenizer
    from dpo_cli.config.schema import ModelSection, RunConfig
    from dpo_cli.validation.tokens import TokenChecker

    run = RunConfig(output_dir=".", model=ModelSection(name_or_path=name), data={"train": "unused"})
    return TokenChecker(load_tokenizer(run), max_length, truncation_mode)


def validate_config(
    cfg: RunConfig,
    *,
    tokens: bool = True,
    writer: CleanWriter | None = None,
    near_identical: float = NEAR_IDENTICAL,
) -> ValidationReport:
    """Validate the data of a run config, with its tokenizer unless `tokens` is False."""
    checker = token_checker_for(cfg) if tokens else None
    name = cfg.model.tokenizer_name_or_path or cfg.model.name_or_path
    kto = (cfg.training.desirable_weight, cfg.training.undesirable_weight) if cfg.algorithm == "kto" else None
    return validate_data(
        cfg.data, token_checker=checker, tokenizer_name=name if tokens else None, writer=writer,
        near_identical=near_identical, kto_weights=kto,
    )


def check_before_training(cfg: RunConfig, config_path: str | None = None) -> ValidationReport:
    """What `dpo train` runs first: warnings are printed, errors stop the run.

    Raises:
        DpoError: The data has errors (rows train cannot use), listed one check per line.
    """
    from dpo_cli.validation.report import problems_summary

    report = validate_config(cfg)
    rows = sum(s.rows for s in report.splits)
    warnings = problems_summary(report, WARNING)
    print(
        f"data: {rows} rows checked in {report.seconds:.1f} s, {report.errors} error(s), {report.warnings} warning(s)",
        file=sys.stderr,
    )
    for line in warnings:
        print(f"  warning: {line}", file=sys.stderr)
    if report.errors:
        command = f"dpo validate-data {config_path or 'CONFIG'}"
        raise DpoError(
            f"the data has {report.errors} error(s); nothing was trained",
            exit_code=EXIT_USAGE,
            details=[
                *problems_summary(report, ERROR),
                f"full report: {command}; drop the bad rows with: {command} --write-clean DIR",
                "or pass --skip-validation to train anyway",
            ],
        )
    return report
