"""What validation leaves behind: the summary table, the JSON report, and `--write-clean` files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.validation.checks import CHECKS, ERROR, Lengths

if TYPE_CHECKING:
    from dpo_cli.validation.formats import RawRow
    from dpo_cli.validation.runner import SplitReport, ValidationReport

CLEAN_FILES = ("train.jsonl", "eval.jsonl", "rejects.jsonl")


def format_report(report: ValidationReport, strict: bool = False) -> str:
    """The human-readable summary: per split, format, lengths, and one line per check that fired."""
    lines = []
    if report.tokenizer:
        limit = f"max_length {report.max_length} ({report.truncation_mode})" if report.max_length else "no max_length"
        lines.append(f"tokenizer  {report.tokenizer}, {limit}")
    else:
        lines.append("tokenizer  none (token-length and chat-template checks skipped; give a config or --tokenizer)")
    for split in report.splits:
        lines += ["", *_split_lines(split)]
    lines.append("")
    errors, warnings = report.errors, report.warnings
    code = report.exit_code(strict)
    verdict = "no problems" if not errors and not warnings else f"{errors} error(s), {warnings} warning(s)"
    lines.append(f"result     {verdict} in {report.seconds:.1f} s -> exit {code}")
    if report.clean_dir is not None:
        kept = ", ".join(f"{s.kept} {s.name}" for s in report.splits)
        dropped = sum(s.dropped for s in report.splits)
        lines.append(f"clean      {report.clean_dir}: kept {kept}; {dropped} row(s) in rejects.jsonl with reasons")
    return "\n".join(lines)


def _split_lines(split: SplitReport) -> list[str]:
    fmt = split.layout.describe() if split.layout else "layout not recognised"
    lines = [f"{split.name:<10} {split.source}: {split.rows} rows, {fmt}"]
    if split.ignored_columns:
        lines.append(f"{'':<10} ignored columns: {', '.join(split.ignored_columns)}")
    tables = [("characters", split.chars)]
    if split.tokens is not None:
        tables.append(("tokens", split.tokens))
    for unit, lengths in tables:
        if not lengths["chosen"].n:
            continue
        lines.append(f"{'':<10} {'length (' + unit + ')':<22}{'min':>8}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'mean':>10}")
        for name, dist in lengths.items():
            s = dist.summary()
            lines.append(
                f"{'':<12}{name:<20}{s['min']:>8}{s['p50']:>8}{s['p90']:>8}{s['p99']:>8}{s['max']:>8}{s['mean']:>10}"
            )
    pairs = split.token_pairs if split.token_pairs.pairs else split.char_pairs
    bias = pairs.length_bias()
    if bias:
        lines.append(
            f"{'':<10} length bias: chosen longer in {bias['chosen_longer_fraction']:.0%} of pairs, "
            f"mean ratio chosen/rejected {bias['mean_length_ratio']:.2f}"
        )
    margins = split.char_pairs.margin_summary()
    if margins:
        lines.append(
            f"{'':<10} score margin (chosen - rejected): mean {margins['mean']}, "
            f"min {margins['min']}, max {margins['max']} over {margins['pairs']} pairs"
        )
    findings = sorted(split.findings, key=lambda f: (f.check.severity != ERROR, f.check.id))
    if not findings:
        lines.append(f"{'':<10} no problems found")
        return lines
    lines.append(f"{'':<10} {'severity':<9}{'check':<28}{'count':>7}  examples")
    for finding in findings:
        examples = "; ".join(finding.examples[:3])
        lines.append(f"{'':<10} {finding.check.severity:<9}{finding.check.id:<28}{finding.count:>7}  {examples}")
        detail = finding.message or finding.check.hint
        if detail:
            lines.append(f"{'':<21}{finding.check.title}: {detail}")
    return lines


def report_json(report: ValidationReport, strict: bool = False) -> dict[str, Any]:
    """The `--report FILE.json` content."""
    return {
        "exit_code": report.exit_code(strict),
        "errors": report.errors,
        "warnings": report.warnings,
        "tokenizer": report.tokenizer,
        "max_length": report.max_length,
        "truncation_mode": report.truncation_mode,
        "seconds": round(report.seconds, 3),
        "clean_dir": str(report.clean_dir) if report.clean_dir else None,
        "splits": [_split_json(s) for s in report.splits],
        "checks": {c.id: {"severity": c.severity, "title": c.title} for c in CHECKS.values()},
    }


def _split_json(split: SplitReport) -> dict[str, Any]:
    def dists(lengths: dict[str, Lengths] | None) -> dict[str, Any] | None:
        return {k: v.summary() for k, v in lengths.items()} if lengths is not None else None

    return {
        "name": split.name,
        "source": split.source,
        "format": split.layout.format if split.layout else None,
        "implicit_prompt": split.layout.implicit if split.layout else None,
        "rows": split.rows,
        "error_rows": split.error_rows,
        "kept": split.kept,
        "dropped": split.dropped,
        "ignored_columns": split.ignored_columns,
        "char_lengths": dists(split.chars),
        "token_lengths": dists(split.tokens),
        "length_bias": (split.token_pairs if split.token_pairs.pairs else split.char_pairs).length_bias(),
        "score_margin": split.char_pairs.margin_summary(),
        "findings": [f.to_json() for f in split.findings],
    }


def problems_summary(report: ValidationReport, severity: str) -> list[str]:
    """One line per check of `severity` that fired, for `dpo train`'s short report."""
    lines = []
    for split in report.splits:
        for finding in split.findings:
            if finding.check.severity == severity:
                where = f": {'; '.join(finding.examples[:3])}" if finding.examples else ""
                extra = f" - {finding.message}" if finding.message else ""
                lines.append(f"{split.name} {finding.check.id} x{finding.count}{extra}{where}")
    return lines


class CleanWriter:
    """`--write-clean DIR`: kept rows per split, and every dropped row with its reasons.

    Files are written under temporary names and renamed only when validation finishes, so a
    failed or interrupted run never leaves a half-written clean set behind.

    Args:
        directory: Output folder; it must be empty or absent unless `overwrite`.
        overwrite: Replace the clean files of an earlier run.

    Raises:
        DpoError: The folder holds files and `overwrite` is off.
    """

    def __init__(self, directory: Path, overwrite: bool = False):
        self.directory = Path(directory)
        if self.directory.exists() and any(self.directory.iterdir()) and not overwrite:
            raise DpoError(
                f"{self.directory}: folder is not empty",
                exit_code=EXIT_USAGE,
                details=["pass --overwrite to replace the clean files there, or pick another folder"],
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self._handles: dict[str, IO[bytes]] = {}

    def _handle(self, name: str) -> IO[bytes]:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = open(self.directory / f".{name}.tmp", "wb")
        return handle

    def keep(self, split: str, raw: RawRow) -> None:
        self._handle(f"{split}.jsonl").write(_row_bytes(raw))

    def reject(self, split: str, raw: RawRow, problems: list[tuple[str, str]]) -> None:
        record = {
            "split": split,
            "where": raw.where,
            "reasons": [
                {"check": c, "severity": CHECKS[c].severity, "note": note}
                for c, note in problems
                if CHECKS[c].severity == ERROR or c in ("duplicate_pair", "leakage")
            ],
            "row": raw.data,
        }
        if raw.data is None and raw.line is not None:
            record["line"] = raw.line.decode("utf-8", "replace").rstrip("\n")
        self._handle("rejects.jsonl").write(json.dumps(record, ensure_ascii=False, default=str).encode() + b"\n")

    def commit(self) -> None:
        """Move the finished files into place; clean files of an earlier run that this one lacks go."""
        for handle in self._handles.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        self._handle("rejects.jsonl").close()  # always present, even when empty
        for name in CLEAN_FILES:
            tmp, final = self.directory / f".{name}.tmp", self.directory / name
            if tmp.exists():
                os.replace(tmp, final)
            else:
                final.unlink(missing_ok=True)

    def abort(self) -> None:
        for name, handle in self._handles.items():
            handle.close()
            (self.directory / f".{name}.tmp").unlink(missing_ok=True)
        self._handles.clear()


def _row_bytes(raw: RawRow) -> bytes:
    if raw.line is not None:
        return raw.line if raw.line.endswith(b"\n") else raw.line + b"\n"
    return json.dumps(raw.data, ensure_ascii=False, default=str).encode() + b"\n"
