"""Data validation: every problem in the preference data, found before a GPU hour is spent.

`validate_data` reads the rows the way `dpo train` does (same source resolution, column
mapping and format rules as `dpo_cli.data`) and reports per check a count and example rows.
With a tokenizer it also replays TRL's tokenization, truncation and chat templating.

Reading and converting rows is the shared data core's (`dpo_cli.data`); here: `checks` (the
checks and their severities), `tokens` (tokenizer checks), `unpaired` (KTO rows), `report`
(table, JSON, `--write-clean`), `runner`.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.validation.checks import ERROR, NEAR_IDENTICAL, WARNING
from dpo_cli.validation.results import SplitReport, ValidationReport
from dpo_cli.validation.runner import validate_data

if TYPE_CHECKING:
    from dpo_cli.config.schema import DataSection, RunConfig
    from dpo_cli.validation.report import CleanWriter
    from dpo_cli.validation.tokens import TokenChecker

__all__ = [
    "DataCheck",
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
    from dpo_cli.models import load_tokenizer
    from dpo_cli.validation.tokens import TokenChecker

    mode = getattr(cfg.training, "truncation_mode", None) or "keep_start"
    if mode not in ("keep_start", "keep_end"):
        raise DpoError(f"training.truncation_mode: {mode!r} is not keep_start or keep_end", exit_code=EXIT_USAGE)
    return TokenChecker(load_tokenizer(cfg), cfg.training.max_length, mode)


def data_section(
    train: str,
    eval: str | None = None,
    *,
    prompt: str = "prompt",
    chosen: str = "chosen",
    rejected: str = "rejected",
    system: str | None = None,
    history: str | None = None,
    format: str = "auto",
    max_row_bytes: int | None = None,
) -> DataSection:
    """A `data:` section for `--data PATH` without a config (nothing held out: eval is `eval` or none)."""
    from dpo_cli.config.schema import DataColumns, DataSection

    columns = {"chosen": chosen, "rejected": rejected}
    if prompt != "prompt":  # only an explicit choice makes a missing prompt column an error
        columns["prompt"] = prompt
    for name, value in (("system", system), ("history", history)):
        if value is not None:
            columns[name] = value
    from pydantic import ValidationError

    from dpo_cli.data import LAYOUT_NAMES

    extra = {"max_row_bytes": max_row_bytes} if max_row_bytes else {}
    try:
        return DataSection(
            train=train, eval=eval, eval_fraction=None, columns=DataColumns(**columns), format=format, **extra
        )
    except ValidationError:
        choices = ", ".join(("auto", "standard", "conversational", *LAYOUT_NAMES))
        raise DpoError(f"--format {format}: not a layout; choose from {choices}", exit_code=EXIT_USAGE) from None


def token_checker_from_name(name: str, max_length: int | None, truncation_mode: str = "keep_start") -> TokenChecker:
    """A tokenizer by path or Hub id, set up exactly as `dpo train` would set up that model's."""
    from dpo_cli.config.schema import ModelSection, RunConfig
    from dpo_cli.models import load_tokenizer
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
        cfg.data,
        token_checker=checker,
        tokenizer_name=name if tokens else None,
        writer=writer,
        near_identical=near_identical,
        kto_weights=kto,
    )


@dataclass
class DataCheck:
    """What `dpo train`'s data check found, and what the run must leave out.

    Attributes:
        data: The `data:` section it was found for.
        excluded: Rows to leave out beyond what the converters drop (see `dpo_cli.data.loader`).
        rejects: `rejects.jsonl` (every dropped row with its reasons).
        summary: Per split: rows seen, kept, dropped (by reason) and the sources.
        report: The full validation report (None when loaded from a saved check).
    """

    data: DataSection
    excluded: dict[str, dict[int, frozenset[tuple[int, int]]]]
    rejects: Path
    summary: dict[str, Any]
    report: ValidationReport | None = None
    _tmp: Any = field(repr=False, default=None)  # keeps the temporary folder of `rejects` alive

    def save(self, run_dir: Path) -> None:
        """`data/rejects.jsonl`, `data/excluded.json` and `data/check.json` into a run (or sweep) directory."""
        from dpo_cli.data import EXCLUDED_FILE, save_exclusions
        from dpo_cli.fsio import atomic_save, atomic_write_json

        target = Path(run_dir) / EXCLUDED_FILE.parent
        target.mkdir(parents=True, exist_ok=True)
        if Path(self.rejects).resolve() != (target / "rejects.jsonl").resolve():
            atomic_save(target / "rejects.jsonl", lambda tmp: shutil.copyfile(self.rejects, tmp))
        save_exclusions(run_dir, self.data, self.excluded)
        atomic_write_json(target / "check.json", self.summary)

    @classmethod
    def load(cls, folder: Path, data: DataSection) -> DataCheck:
        """A check saved by `save` (a sweep saves one for all its points).

        Raises:
            DpoError: Nothing usable there, or it was made for other data.
        """
        from dpo_cli.data import read_exclusions
        from dpo_cli.fsio import read_json

        excluded = read_exclusions(folder, data)
        target = Path(folder) / "data"
        if excluded is None or not (target / "check.json").is_file():
            raise DpoError(
                f"{folder}: no data check for this data there (data/excluded.json, data/check.json)",
                exit_code=EXIT_USAGE,
                details=["run without --data-check to check the data again"],
            )
        return cls(data, excluded, target / "rejects.jsonl", read_json(target / "check.json"))


# Whole-dataset errors: no share of dropped rows can make these train.
FATAL_CHECKS = ("layout", "format_mismatch", "no_rows")


def check_before_training(cfg: RunConfig, config_path: str | None = None, *, strict: bool = False) -> DataCheck:
    """What `dpo train` runs first: rows that cannot train are dropped, warnings printed.

    A row with an error (a prompt over `max_length`, an identical pair, an empty field, a
    malformed line, ...) is dropped, counted and listed; the run stops only when more than
    `data.max_drop_fraction` of a split would go (a share that large points to a mapping or
    `max_length` mistake), on any error under `strict`, or when the data cannot train at all.

    Raises:
        DpoError: The data cannot train, or too many rows (any, under `strict`) have errors.
    """
    import tempfile

    from dpo_cli.validation.report import CleanWriter, problems_summary

    tmp = tempfile.TemporaryDirectory(prefix="dpo-data-check-")
    report = validate_config(cfg, writer=CleanWriter(Path(tmp.name), keep_rows=False))
    rows = sum(s.rows for s in report.splits)
    print(
        f"data: {rows} rows checked in {report.seconds:.1f} s, {report.errors} error(s), {report.warnings} warning(s)",
        file=sys.stderr,
    )
    for line in problems_summary(report, WARNING):
        print(f"  warning: {line}", file=sys.stderr)
    command = f"dpo validate-data {config_path or 'CONFIG'}"
    limit = cfg.data.max_drop_fraction
    fatal = [
        f"{s.name} {f.check.id}: {f.message}" for s in report.splits for f in s.findings if f.check.id in FATAL_CHECKS
    ]
    over = [s for s in report.splits if s.error_share > limit]
    fatal += [
        f"{s.name}: all {s.rows} rows would be dropped"
        for s in report.splits
        if s.rows and not s.kept and not any(f.check.id in FATAL_CHECKS for f in s.findings)
    ]
    if fatal or over or (strict and report.errors):
        if fatal:
            reason = "the data cannot train"
        elif over:
            reason = "; ".join(
                f"{s.error_rows} of {s.rows} {s.name} rows ({s.error_share:.1%}) have errors, more than "
                f"data.max_drop_fraction {limit:.0%}"
                for s in over
            )
        else:
            reason = f"--strict: {report.errors} row error(s)"
        raise DpoError(
            f"{reason}; nothing was trained",
            exit_code=EXIT_USAGE,
            details=[
                *(fatal or problems_summary(report, ERROR)),
                f"full report: {command}; the rows that would be dropped: {command} --write-clean DIR",
                "or pass --skip-validation to train anyway",
            ],
        )
    for split in report.splits:
        if split.dropped:
            reasons = ", ".join(f"{c} x{n}" for c, n in split.dropped_by.items())
            print(
                f"  dropped: {split.dropped} of {split.rows} {split.name} rows ({reasons}), {split.kept} left; "
                f"each is listed in {cfg.output_dir}/data/rejects.jsonl",
                file=sys.stderr,
            )
    summary = {
        s.name: {
            "rows": s.rows,
            "kept": s.kept,
            "dropped": s.dropped,
            "dropped_by": s.dropped_by,
            "sources": [src.to_json() for src in s.sources],
        }
        for s in report.splits
    }
    return DataCheck(cfg.data, report.excluded(), Path(tmp.name) / "rejects.jsonl", summary, report, tmp)
