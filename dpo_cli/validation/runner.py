"""Validation as a library function: the rows `dpo train` would read, checked before training.

Rows stream through in batches; per row only numbers survive the batch (counts, length
histograms, and 8-byte hashes in the duplicate indexes), so memory does not grow with the
data except for those indexes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rapidfuzz.distance import Indel

from dpo_cli.data import DataSource, resolve_source
from dpo_cli.validation.checks import (
    CHECKS,
    ERROR,
    MIN_ROWS,
    NEAR_IDENTICAL,
    WARNING,
    Findings,
    Lengths,
    PairStats,
    conversation_problem,
    digest,
    field_problem,
    length_bias_message,
    normalized,
    split_implicit_prompt,
    text_of,
    text_problems,
)
from dpo_cli.validation.formats import SAMPLE_ROWS, Layout, LayoutError, RawRow, detect_layout, iter_batches, value_kind
from dpo_cli.validation.unpaired import UnpairedRows, detect_kto_layout

if TYPE_CHECKING:
    from dpo_cli.config.schema import DataSection
    from dpo_cli.validation.report import CleanWriter
    from dpo_cli.validation.tokens import TokenChecker

# Warnings that `--write-clean` also drops: the row adds nothing (a copy) or spoils eval (leak).
DROPPED_WARNINGS = {"duplicate_pair", "leakage"}
Problem = tuple[str, str]


@dataclass
class SplitReport:
    """Everything found in one split (train or eval)."""

    name: str
    source: str
    layout: Layout | None = None
    rows: int = 0
    error_rows: int = 0
    dropped: int = 0
    findings: Findings = field(default_factory=Findings)
    chars: dict[str, Lengths] = field(default_factory=lambda: {k: Lengths() for k in ("prompt", "chosen", "rejected")})
    tokens: dict[str, Lengths] | None = None
    char_pairs: PairStats = field(default_factory=PairStats)
    token_pairs: PairStats = field(default_factory=PairStats)
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return self.rows - self.dropped


@dataclass
class ValidationReport:
    """The result of `validate_data`: per-split findings and what the exit code should be."""

    splits: list[SplitReport]
    tokenizer: str | None = None
    max_length: int | None = None
    truncation_mode: str = "keep_start"
    clean_dir: Path | None = None
    seconds: float = 0.0

    def count(self, severity: str) -> int:
        return sum(s.findings.count(severity) for s in self.splits)

    @property
    def errors(self) -> int:
        return self.count(ERROR)

    @property
    def warnings(self) -> int:
        return self.count(WARNING)

    def exit_code(self, strict: bool = False) -> int:
        """0 clean, 2 with errors, 1 with warnings under `strict`."""
        if self.errors:
            return 2
        if strict and self.warnings:
            return 1
        return 0


def validate_data(
    data: DataSection,
    *,
    token_checker: TokenChecker | None = None,
    tokenizer_name: str | None = None,
    writer: CleanWriter | None = None,
    near_identical: float = NEAR_IDENTICAL,
    kto_weights: tuple[float, float] | None = None,
) -> ValidationReport:
    """Check the train (and eval) data of a `data:` section the way `dpo train` will read it.

    Args:
        data: The config's `data` section (for `--data PATH`, one built from the path).
        token_checker: Adds the token-length and chat-template checks; None skips them and
            keeps torch and transformers unimported.
        tokenizer_name: Shown in the report.
        writer: Receives every row, kept or rejected with its reasons (`--write-clean`).
        near_identical: Similarity (0-1) from which chosen and rejected count as near-identical.
        kto_weights: For `algorithm: kto`, its `(desirable_weight, undesirable_weight)`: rows are
            then read as KTO reads them (unpaired, or pairs under `data.unpair`) and the label
            balance is checked against the weights (see `dpo_cli.validation.unpaired`).

    Raises:
        DpoError: A data file is missing or cannot be read at all.
    """
    start = time.perf_counter()
    sources = [("train", resolve_source(data.train), data.train_split)]
    if data.eval is not None:
        sources.append(("eval", resolve_source(data.eval), data.eval_split or data.train_split))
    report = ValidationReport(
        splits=[],
        tokenizer=tokenizer_name,
        max_length=token_checker.max_length if token_checker else None,
        truncation_mode=token_checker.mode if token_checker else "keep_start",
        clean_dir=writer.directory if writer else None,
    )
    try:
        _run_splits(report, sources, data, token_checker, writer, near_identical, kto_weights)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        if any("layout" in s.findings.by_id for s in report.splits):
            writer.abort()  # rows of an unknown layout cannot be sorted into kept and rejected
            report.clean_dir = None
        else:
            writer.commit()
    report.seconds = time.perf_counter() - start
    return report


def _run_splits(
    report: ValidationReport,
    sources: list[tuple[str, DataSource, str]],
    data: DataSection,
    token_checker: TokenChecker | None,
    writer: CleanWriter | None,
    near_identical: float,
    kto_weights: tuple[float, float] | None = None,
) -> None:
    train: _SplitChecker | None = None
    train_format: str | None = None
    for name, source, split in sources:
        checker = _SplitChecker(name, source, data, token_checker, writer, near_identical, train, kto_weights)
        checker.run(split)
        split_report = checker.report
        report.splits.append(split_report)
        if split_report.layout is not None:
            if name == "train":
                train, train_format = checker, split_report.layout.format
                if data.format != "auto" and data.format != train_format:
                    split_report.findings.note(
                        "format_mismatch", f"`data.format` is {data.format} but the rows are {train_format}"
                    )
            elif train_format is not None and split_report.layout.format != train_format:
                split_report.findings.note(
                    "format_mismatch", f"train data is {train_format} but eval data is {split_report.layout.format}"
                )


class _SplitChecker:
    def __init__(
        self,
        name: str,
        source: DataSource,
        data: DataSection,
        tokens: TokenChecker | None,
        writer: CleanWriter | None,
        near_identical: float,
        train: _SplitChecker | None,
        kto_weights: tuple[float, float] | None = None,
    ):
        self.report = SplitReport(name=name, source=source.label)
        if tokens is not None:
            self.report.tokens = {k: Lengths() for k in ("prompt", "chosen", "rejected", "sequence")}
        self.source, self.data, self.tokens, self.writer = source, data, tokens, writer
        self.threshold = near_identical
        self.train = train  # for eval: its prompt index finds leaks
        # Duplicate indexes: hash -> packed (file number, line), for "same as file:line" notes.
        self.pair_index: dict[int, int] = {}
        self.prompt_index: dict[int, int] = {}
        self.files: list[RawRow] = []  # one location template per source file
        self.kinds: dict[str, str] = {}
        self.keys: dict[str, None] = {}
        self.layout: Layout | None = None
        self.kto_weights = kto_weights
        self.unpaired = UnpairedRows() if kto_weights is not None else None

    def run(self, split: str) -> None:
        pending: list[RawRow] = []
        for batch in iter_batches(self.source, split=split, subset=self.data.subset):
            if self.layout is None:
                pending.extend(batch)
                sample = [r.data for r in pending if r.data is not None][:SAMPLE_ROWS]
                if not sample:
                    continue
                for row in sample:
                    self.keys.update(dict.fromkeys(row))
                try:
                    if self.kto_weights is not None:
                        self.layout = detect_kto_layout(self.data.columns, list(self.keys), sample, self.data.unpair)
                    else:
                        self.layout = detect_layout(self.data.columns, list(self.keys), sample)
                except LayoutError as exc:
                    self.report.findings.note("layout", str(exc))
                    return
                self.report.layout = self.layout
                if self.layout.unpaired:
                    self.report.tokens = None  # token checks replay TRL's pair tokenization only
                batch, pending = pending, []
            self._batch(batch)
        if self.layout is None:
            self._batch(pending)  # nothing parsed: every line is malformed
        self._finish()

    # --- one batch ------------------------------------------------------------------------

    def _batch(self, rows: list[RawRow]) -> None:
        checked = [self._check_row(raw) for raw in rows]
        if self.tokens is not None and self.layout is not None and not self.layout.unpaired:
            todo = [i for i, (_, triple, problems) in enumerate(checked) if triple and not _has_error(problems)]
            results = self.tokens.check([checked[i][1] for i in todo], self.layout.conversational)
            lengths = self.report.tokens
            for i, result in zip(todo, results):
                checked[i][2].extend(result.problems)
                if result.chosen or result.rejected:  # tokenized: its lengths count, dropped or not
                    lengths["prompt"].add(result.prompt)
                    lengths["chosen"].add(result.chosen)
                    lengths["rejected"].add(result.rejected)
                    lengths["sequence"].add(result.prompt + max(result.chosen, result.rejected))
                    self.report.token_pairs.add(result.chosen, result.rejected)
        report = self.report
        for raw, _, problems in checked:
            report.rows += 1
            for check_id, note in problems:
                report.findings.add(check_id, raw.where, note)
            error = _has_error(problems)
            report.error_rows += error
            dropped = error or any(c in DROPPED_WARNINGS for c, _ in problems)
            report.dropped += dropped
            if self.writer is not None:
                if dropped:
                    self.writer.reject(report.name, raw, problems)
                else:
                    self.writer.keep(report.name, raw)

    def _check_row(self, raw: RawRow) -> tuple[RawRow, tuple | None, list[Problem]]:
        if raw.data is None:
            return raw, None, [("malformed_line", raw.error or "")]
        layout = self.layout
        if layout is None:
            return raw, None, []
        if layout.unpaired:
            return self.unpaired.check(self, raw)
        row = raw.data
        problems: list[Problem] = []
        roles = [(role, getattr(layout, role)) for role in ("prompt", "chosen", "rejected")]
        values = self.field_values(raw, [(r, c) for r, c in roles if c is not None], problems)
        if problems and _has_error(problems):
            return raw, None, problems
        chosen, rejected = values["chosen"], values["rejected"]
        if chosen == rejected:
            problems.append(("identical_pair", ""))
            return raw, None, problems
        if layout.implicit:
            prompt, chosen, rejected = split_implicit_prompt(chosen, rejected)
            if not prompt:
                if layout.conversational:
                    problems.append(("bad_conversation", "implicit prompt: the dialogues share no opening turn"))
                    return raw, None, problems
                problems.append(("no_shared_prompt", ""))
        else:
            prompt = values["prompt"]
        if layout.conversational:
            for label, response in (("chosen", chosen), ("rejected", rejected)):
                issue = conversation_problem(prompt, response)
                if issue:
                    problems.append(("bad_conversation", f"{label}: {issue}"))
                    return raw, None, problems
        self._row_warnings(raw, row, prompt, chosen, rejected, problems)
        return raw, (prompt, chosen, rejected), problems

    def _row_warnings(self, raw: RawRow, row: dict, prompt: Any, chosen: Any, rejected: Any, problems: list) -> None:
        prompt_text, chosen_text, rejected_text = text_of(prompt), text_of(chosen), text_of(rejected)
        for check_id in text_problems([prompt_text, chosen_text, rejected_text]):
            problems.append((check_id, ""))
        # Indel similarity is what difflib's ratio approximates, computed exactly and bit-parallel in C++;
        # the cutoff lets rapidfuzz stop early on the (usual) clearly different pairs.
        similarity = Indel.normalized_similarity(chosen_text, rejected_text, score_cutoff=self.threshold)
        if similarity:
            problems.append(("near_identical", f"similarity {similarity:.2f}"))
        ref = self._ref(raw)
        if isinstance(prompt, str):
            pair_key = "\x00".join((prompt, chosen, rejected))
        else:
            pair_key = json.dumps([prompt, chosen, rejected], sort_keys=True, ensure_ascii=False)
        first = self.pair_index.setdefault(digest(pair_key), ref)
        duplicate = first != ref
        if duplicate:
            problems.append(("duplicate_pair", f"same as {self._where(first)}"))
        if prompt_text:
            prompt_key = digest(normalized(prompt_text))
            first = self.prompt_index.setdefault(prompt_key, ref)
            if first != ref and not duplicate:  # a copied pair is reported once, as such
                problems.append(("duplicate_prompt", f"first at {self._where(first)}"))
            leaked = self.train.prompt_index.get(prompt_key) if self.train is not None else None
            if leaked is not None:
                problems.append(("leakage", f"prompt of {self.train._where(leaked)}"))
        scores = self.layout.scores
        if scores is not None:
            high, low = row.get(scores[0]), row.get(scores[1])
            if _is_number(high) and _is_number(low):
                self.report.char_pairs.add_margin(high - low)
                if high <= low:
                    problems.append(("score_margin", f"{scores[0]} {high} vs {scores[1]} {low}"))
        lengths = self.report.chars
        lengths["prompt"].add(len(prompt_text))
        lengths["chosen"].add(len(chosen_text))
        lengths["rejected"].add(len(rejected_text))
        self.report.char_pairs.add(len(chosen_text), len(rejected_text))

    def field_values(self, raw: RawRow, roles: list[tuple[str, str]], problems: list[Problem]) -> dict[str, Any]:
        """The usable value of each `(role, column)` of a row; a missing or bad field adds a problem instead."""
        row = raw.data
        if raw.line is not None:
            self._column_kinds(row, problems)
        values: dict[str, Any] = {}
        for role, column in roles:
            if column not in row:
                problems.append(("missing_field", f"`{column}`"))
                continue
            bad = field_problem(row[column], self.layout.conversational)
            if bad is not None:
                problems.append((bad[0], f"`{column}`: {bad[1]}" if bad[1] else f"`{column}`"))
            else:
                values[role] = row[column]
        return values

    def _column_kinds(self, row: dict, problems: list[Problem]) -> None:
        used = self.layout.columns()
        for key, value in row.items():
            if key not in self.keys:
                self.keys[key] = None
            if key in used:
                continue  # the field checks cover these
            kind = value_kind(value)
            if kind is None:
                continue
            first = self.kinds.setdefault(key, kind)
            if first != kind:
                problems.append(("inconsistent_column", f"`{key}` is {kind} here, {first} in earlier rows"))

    def _ref(self, raw: RawRow) -> int:
        if not self.files or self.files[-1].source != raw.source:
            self.files.append(RawRow(raw.source, 0, None, b"" if raw.line is not None else None))
        return (len(self.files) - 1) << 32 | raw.number

    def _where(self, ref: int) -> str:
        template = self.files[ref >> 32]
        return RawRow(template.source, ref & 0xFFFFFFFF, None, template.line).where

    # --- whole split ----------------------------------------------------------------------

    def _finish(self) -> None:
        report, findings = self.report, self.report.findings
        if self.layout is not None:
            report.ignored_columns = [k for k in self.keys if k not in self.layout.columns()]
        usable = report.rows - report.error_rows
        if report.name == "train":
            if usable == 0:
                findings.note("no_rows", f"none of the {report.rows} rows can train")
            elif usable < MIN_ROWS:
                findings.note("few_rows", f"{usable} usable rows; DPO usually needs hundreds of pairs or more")
            if self.layout is not None and self.layout.unpaired:
                self.unpaired.finish(findings, self.kto_weights)
        tokens = report.tokens is not None and report.token_pairs.pairs
        bias = (report.token_pairs if tokens else report.char_pairs).length_bias()
        if bias is not None and report.char_pairs.pairs >= 10:
            message = length_bias_message(bias, "token" if tokens else "character")
            if message:
                findings.note("length_bias", message)


def _has_error(problems: list[Problem]) -> bool:
    return any(CHECKS[c].severity == ERROR for c, _ in problems)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
