"""What validation leaves behind: the summary table, the JSON report, and `--write-clean` files."""

from __future__ import annotations

import json
import os
from array import array
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from dpo_cli.data.mixture import mixture_order, take_rows
from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.validation.checks import CHECKS, DROPPED, ERROR, WARNING, Lengths

if TYPE_CHECKING:
    from dpo_cli.data import RawRow
    from dpo_cli.validation.results import SplitReport, ValidationReport

CLEAN_FILES = ("train.jsonl", "eval.jsonl", "rejects.jsonl")
_SEVERITY_ORDER = {ERROR: 0, DROPPED: 1, WARNING: 2}


def format_report(report: ValidationReport, strict: bool = False) -> str:
    """The human-readable summary: per split, sources and layouts, lengths, and one line per check that fired."""
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
    dropped = sum(s.dropped for s in report.splits)
    if dropped:
        share = ", ".join(
            f"{s.name} {s.dropped} of {s.rows} ({s.dropped / s.rows:.1%})" for s in report.splits if s.rows
        )
        lines.append(
            f"dropped    {share}: `dpo train` leaves these rows out (and stops past "
            "data.max_drop_fraction of errors, or on any with --strict)"
        )
    if report.clean_dir is not None:
        kept = ", ".join(f"{_taken(s)} {s.name}" for s in report.splits)
        lines.append(f"clean      {report.clean_dir}: kept {kept}; {dropped} row(s) in rejects.jsonl with reasons")
    return "\n".join(lines)


def _taken(split: SplitReport) -> int:
    return sum(s.kept if s.taken is None else s.taken for s in split.sources)


def _split_lines(split: SplitReport) -> list[str]:
    shape = split.format + (" (unpaired rows, KTO)" if split.kind == "unpaired" else "")
    lines = [f"{split.name:<10} {split.source}: {split.rows} rows, {shape if split.recognised else 'not readable'}"]
    for source in split.sources:
        head = f"source {source.name}: " if len(split.sources) > 1 else "layout "
        lines.append(f"{'':<10} {head}{source.described}")
        if len(split.sources) > 1 or source.rows != source.pairs or source.taken is not None:
            counts = f"{source.rows} input rows -> {source.pairs} pairs, {source.dropped} dropped, {source.kept} kept"
            if source.taken is not None:
                counts += f", {source.taken} taken"
            lines.append(f"{'':<12}{counts}")
        if source.ignored_columns:
            lines.append(f"{'':<12}ignored columns: {', '.join(source.ignored_columns)}")
    tables = [("characters", split.chars)]
    if split.tokens is not None:
        tables.append(("tokens", split.tokens))
    for unit, lengths in tables:
        if not lengths["chosen"].n:
            continue
        lines.append(
            f"{'':<10} {'length (' + unit + ')':<22}{'min':>8}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'mean':>10}"
        )
        for name, dist in lengths.items():
            s = dist.summary()
            if not s:
                continue
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
    findings = sorted(split.findings, key=lambda f: (_SEVERITY_ORDER[f.check.severity], f.check.id))
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
        "format": split.format if split.recognised else None,
        "kind": split.kind,
        "layouts": [s.layout for s in split.sources],
        "sources": [s.to_json() for s in split.sources],
        "rows": split.rows,
        "error_rows": split.error_rows,
        "kept": split.kept,
        "dropped": split.dropped,
        "dropped_by": split.dropped_by,
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
    """`--write-clean DIR`: the kept rows per split in TRL's format, and every dropped row with its reasons.

    Kept rows are written exactly as `dpo train` hands them to TRL (`prompt`/`chosen`/`rejected`
    or `prompt`/`completion`/`label`): a mixture's rows are taken and shuffled by the same
    seeded rule (`dpo_cli.data.mixture`). Files are written under temporary names and renamed
    only when validation finishes, so a failed or interrupted run never leaves a half-written
    clean set behind.

    Args:
        directory: Output folder; it must be empty or absent unless `overwrite`.
        overwrite: Replace the clean files of an earlier run.
        keep_rows: Write the kept rows too (False: only `rejects.jsonl`, as `dpo train` needs).

    Raises:
        DpoError: The folder holds files and `overwrite` is off.
    """

    def __init__(self, directory: Path, overwrite: bool = False, keep_rows: bool = True):
        self.directory = Path(directory)
        if self.directory.exists() and any(self.directory.iterdir()) and not overwrite:
            raise DpoError(
                f"{self.directory}: folder is not empty",
                exit_code=EXIT_USAGE,
                details=["pass --overwrite to replace the clean files there, or pick another folder"],
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep_rows = keep_rows
        self._handles: dict[str, IO[bytes]] = {}
        self._offsets: dict[tuple[str, int], array] = {}

    def _handle(self, name: str) -> IO[bytes]:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = open(self.directory / f".{name}.tmp", "wb")  # noqa: SIM115
        return handle

    def keep(self, split: str, position: int, row: dict[str, Any]) -> None:
        if not self.keep_rows:
            return
        handle = self._handle(f"{split}.{position}.part")
        offsets = self._offsets.setdefault((split, position), array("Q"))
        offsets.append(handle.tell())
        handle.write(json.dumps(row, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n")

    def reject(
        self, split: str, source: str, raw: RawRow, k: int, row: dict[str, Any] | None, problems: list[tuple[str, str]]
    ) -> None:
        record: dict[str, Any] = {
            "split": split,
            "source": source,
            "where": raw.where if k == 0 else f"{raw.where} (pair {k + 1})",
            "key": [raw.index, k],
            "reasons": [
                {"check": c, "severity": CHECKS[c].severity, "note": note}
                for c, note in problems
                if CHECKS[c].severity in (ERROR, DROPPED) or c in ("duplicate_pair", "leakage")
            ],
        }
        if k == 0:
            record["row"] = raw.data
        if row is not None:
            record["pair"] = row
        if raw.data is None and raw.text is not None:
            record["line"] = raw.text
        self._handle("rejects.jsonl").write(
            json.dumps(record, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass") + b"\n"
        )

    def commit(self, splits: list[SplitReport], seed: int) -> None:
        """Write each split's kept rows in training order, then move every file into place.

        Clean files of an earlier run that this one lacks are removed.
        """
        self._handle("rejects.jsonl")  # always present, even when empty
        for handle in self._handles.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        written = {"rejects.jsonl"}
        if self.keep_rows:
            for split in splits:
                self._write_split(split, seed)
                written.add(f"{split.name}.jsonl")
        for name in CLEAN_FILES:
            tmp, final = self.directory / f".{name}.tmp", self.directory / name
            if name in written:
                os.replace(tmp, final)
            elif self.keep_rows:
                final.unlink(missing_ok=True)
        self._remove_parts()

    def _write_split(self, split: SplitReport, seed: int) -> None:
        """Take and order the kept rows as `dpo train` does (`take_rows`, then `mixture_order`)."""
        chosen: list[tuple[int, int]] = []  # (source position, row number among its kept rows)
        for position, source in enumerate(split.sources):
            n = len(self._offsets.get((split.name, position), ()))
            rows = take_rows(n, source.fraction, source.max_samples, f"{seed}:{split.name}:{position}")
            source.taken = len(rows) if rows is not None else None
            chosen += [(position, i) for i in (rows if rows is not None else range(n))]
        if len(split.sources) > 1:
            chosen = [chosen[i] for i in mixture_order(len(chosen), f"{seed}:{split.name}")]
        part_path = self.directory / f".{split.name}.0.part.tmp"
        if len(split.sources) == 1 and split.sources[0].taken is None:
            if part_path.exists():  # every kept row, in file order: the part is the file
                os.replace(part_path, self.directory / f".{split.name}.jsonl.tmp")
            else:
                (self.directory / f".{split.name}.jsonl.tmp").write_bytes(b"")
            return
        files: dict[int, IO[bytes]] = {}
        try:
            with open(self.directory / f".{split.name}.jsonl.tmp", "wb") as out:
                for position, i in chosen:
                    part = files.get(position)
                    if part is None:
                        part = files[position] = open(self.directory / f".{split.name}.{position}.part.tmp", "rb")  # noqa: SIM115
                    part.seek(self._offsets[(split.name, position)][i])
                    out.write(part.readline())
                out.flush()
                os.fsync(out.fileno())
        finally:
            for part in files.values():
                part.close()

    def _remove_parts(self) -> None:
        for tmp in self.directory.glob(".*.part.tmp"):
            tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        for name, handle in self._handles.items():
            handle.close()
            (self.directory / f".{name}.tmp").unlink(missing_ok=True)
        self._handles.clear()
        self._remove_parts()
