"""Validation as a library function: the rows `dpo train` would read, checked before training.

Sources are planned by `dpo_cli.data.plan` (layout per source, one representation per split)
and streamed in batches through the same converters `dpo train` uses. Per row only numbers
survive the batch (counts, length histograms, and 8-byte hashes in the duplicate indexes),
so memory does not grow with the data except for those indexes and the keys of dropped rows.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from rapidfuzz.distance import Indel

from dpo_cli.data import PlannedSource, RawRow, SplitPlan, convert_batch, iter_batches, options_of, plan_split
from dpo_cli.data.rows import RowProblem, text_of
from dpo_cli.validation.checks import (
    CHECKS,
    DROPPED,
    ERROR,
    MIN_ROWS,
    NEAR_IDENTICAL,
    Lengths,
    digest,
    length_bias_message,
    normalized,
    text_problems,
)
from dpo_cli.validation.results import SourceReport, SplitReport, ValidationReport
from dpo_cli.validation.unpaired import UnpairedRows

if TYPE_CHECKING:
    from dpo_cli.config.schema import DataSection
    from dpo_cli.validation.report import CleanWriter
    from dpo_cli.validation.tokens import TokenChecker

# Warnings that also drop the row: it adds nothing (a copy) or spoils eval (leak).
DROPPED_WARNINGS = {"duplicate_pair", "leakage"}
# Near-identical similarity is measured on at most this many characters of each response:
# the exact measure is quadratic in length, and a warning needs no more.
NEAR_IDENTICAL_CHARS = 20_000
Problem = tuple[str, str]


def validate_data(
    data: DataSection,
    *,
    token_checker: TokenChecker | None = None,
    tokenizer_name: str | None = None,
    writer: CleanWriter | None = None,
    near_identical: float = NEAR_IDENTICAL,
    kto_weights: tuple[float, float] | None = None,
    detect_unpaired: bool = False,
) -> ValidationReport:
    """Check the train (and eval) data of a `data:` section the way `dpo train` will read it.

    Args:
        data: The config's `data` section (for `--data PATH`, one built from the path).
        token_checker: Adds the token-length and chat-template checks; None skips them and
            keeps torch and transformers unimported.
        tokenizer_name: Shown in the report.
        writer: Receives every converted row, kept or dropped with its reasons (`--write-clean`).
        near_identical: Similarity (0-1) from which chosen and rejected count as near-identical.
        kto_weights: For `algorithm: kto`, its `(desirable_weight, undesirable_weight)`: rows are
            then read as KTO reads them (unpaired, or pairs under `data.unpair`) and the label
            balance is checked against the weights (see `dpo_cli.validation.unpaired`).
        detect_unpaired: Without a config (`--data`): rows that are KTO's unpaired rows are
            validated as KTO data (with weights 1:1) instead of refused as pairs.

    Raises:
        DpoError: A data file is missing or cannot be read at all.
    """
    start = time.perf_counter()
    unpaired = kto_weights is not None
    report = ValidationReport(
        splits=[],
        tokenizer=tokenizer_name,
        max_length=token_checker.max_length if token_checker else None,
        truncation_mode=token_checker.mode if token_checker else "keep_start",
        clean_dir=writer.directory if writer else None,
    )
    try:
        train_plan = plan_split(data, "train", unpaired=unpaired)
        if detect_unpaired and not unpaired and all(s.unpaired_rows for s in train_plan.sources):
            kto_weights, unpaired = (1.0, 1.0), True
            train_plan = plan_split(data, "train", unpaired=True)
        plans = [train_plan]
        if data.eval is not None:
            plans.append(plan_split(data, "eval", unpaired=unpaired, train=train_plan))
        train: _SplitChecker | None = None
        for plan in plans:
            checker = _SplitChecker(plan, data, token_checker, writer, near_identical, train, kto_weights)
            checker.run()
            report.splits.append(checker.report)
            if plan.name == "train":
                train = checker
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        if not all(s.recognised for s in report.splits):
            writer.abort()  # rows of an unknown layout cannot be sorted into kept and rejected
            report.clean_dir = None
        else:
            writer.commit(report.splits, data.seed)
    report.seconds = time.perf_counter() - start
    return report


class _SplitChecker:
    def __init__(
        self,
        plan: SplitPlan,
        data: DataSection,
        tokens: TokenChecker | None,
        writer: CleanWriter | None,
        near_identical: float,
        train: _SplitChecker | None,
        kto_weights: tuple[float, float] | None = None,
    ):
        label = plan.sources[0].source.label
        if plan.mixture:
            label = f"{len(plan.sources)} sources ({', '.join(s.name for s in plan.sources)})"
        self.report = SplitReport(name=plan.name, source=label, format=plan.format, kind=plan.kind)
        self.plan, self.data, self.tokens, self.writer = plan, data, tokens, writer
        self.options = options_of(data)
        if tokens is not None and plan.kind == "pairs":
            self.report.tokens = {k: Lengths() for k in ("prompt", "chosen", "rejected", "sequence")}
        self.threshold = near_identical
        self.train = train  # for eval: its prompt index finds leaks
        # Duplicate indexes: hash -> packed (file number, line), for "same as file:line" notes.
        self.pair_index: dict[int, int] = {}
        self.prompt_index: dict[int, int] = {}
        self.files: list[RawRow] = []  # one location template per source file
        self.kto_weights = kto_weights
        self.unpaired = UnpairedRows() if plan.kind == "unpaired" else None

    def run(self) -> None:
        report, findings = self.report, self.report.findings
        for planned in self.plan.sources:
            source = SourceReport(
                planned.name,
                planned.source.label,
                planned.describe(),
                planned.match.layout if planned.match else None,
                fraction=planned.fraction,
                max_samples=planned.max_samples,
                ignored_columns=planned.ignored_columns(),
            )
            report.sources.append(source)
            prefix = f"{planned.name}: " if self.plan.mixture else ""
            if planned.error:
                findings.note("layout", prefix + planned.error)
                report.recognised = False
                continue
            if planned.mismatch:
                findings.note("format_mismatch", prefix + planned.mismatch)
                report.recognised = False
                continue
            run = planned.converter(self.options) if planned.match is not None else _unreadable
            for batch in iter_batches(
                planned.source, split=planned.hf_split, subset=planned.subset, max_row_bytes=self.data.max_row_bytes
            ):
                self._batch(batch, planned, source, run)
        self._finish()

    # --- one batch ------------------------------------------------------------------------

    def _batch(self, rows: list[RawRow], planned: PlannedSource, source: SourceReport, run: Any) -> None:
        checked = []
        for raw, k, result in convert_batch(rows, run, self.data.max_row_bytes):
            if k == 0:
                source.rows += 1
            if result.__class__ is not dict:
                checked.append((raw, k, None, [(result.check, result.note)]))
            elif self.unpaired is not None:
                checked.append((raw, k, result, self.unpaired.check(self, raw, result)))
            else:
                checked.append((raw, k, result, self._pair_checks(raw, result, planned)))
        if self.report.tokens is not None:
            self._token_checks(checked)
        report = self.report
        for raw, k, row, problems in checked:
            report.rows += 1
            source.pairs += 1
            where = raw.where if k == 0 else f"{raw.where} (pair {k + 1})"
            for check_id, note in problems:
                report.findings.add(check_id, where, note)
            error = _has_error(problems)
            report.error_rows += error
            reasons = [c for c, _ in problems if c in DROPPED_WARNINGS or CHECKS[c].severity in (ERROR, DROPPED)]
            if reasons:
                report.dropped += 1
                source.dropped += 1
                for reason in dict.fromkeys(reasons):
                    report.dropped_by[reason] = report.dropped_by.get(reason, 0) + 1
                if row is not None:  # converted, then dropped here: training must be told to leave it out
                    report.excluded.setdefault(planned.position, set()).add((raw.index, k))
            if self.writer is not None:
                if reasons:
                    self.writer.reject(report.name, planned.name, raw, k, row, problems)
                else:
                    self.writer.keep(report.name, planned.position, row)

    def _token_checks(self, checked: list) -> None:
        todo = [i for i, (_, _, row, problems) in enumerate(checked) if row is not None and not _has_drop(problems)]
        triples = [(checked[i][2]["prompt"], checked[i][2]["chosen"], checked[i][2]["rejected"]) for i in todo]
        results = self.tokens.check(triples, self.plan.messages)
        lengths = self.report.tokens
        for i, result in zip(todo, results):
            checked[i][3].extend(result.problems)
            if result.chosen or result.rejected:  # tokenized: its lengths count, dropped or not
                lengths["prompt"].add(result.prompt)
                lengths["chosen"].add(result.chosen)
                lengths["rejected"].add(result.rejected)
                lengths["sequence"].add(result.prompt + max(result.chosen, result.rejected))
                self.report.token_pairs.add(result.chosen, result.rejected)

    def _pair_checks(self, raw: RawRow, row: dict[str, Any], planned: PlannedSource) -> list[Problem]:
        prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
        problems: list[Problem] = []
        prompt_text, chosen_text, rejected_text = text_of(prompt), text_of(chosen), text_of(rejected)
        if planned.match.implicit and not prompt_text and not self.plan.messages:
            problems.append(("no_shared_prompt", ""))
        for check_id in text_problems([prompt_text, chosen_text, rejected_text]):
            problems.append((check_id, ""))
        # Indel similarity is what difflib's ratio approximates, computed exactly and bit-parallel in C++;
        # the cutoff lets rapidfuzz stop early on the (usual) clearly different pairs.
        similarity = Indel.normalized_similarity(
            chosen_text[:NEAR_IDENTICAL_CHARS], rejected_text[:NEAR_IDENTICAL_CHARS], score_cutoff=self.threshold
        )
        if similarity:
            problems.append(("near_identical", f"similarity {similarity:.2f}"))
        ref = self.ref(raw)
        if isinstance(prompt, str):
            pair_key = f"{prompt}\x00{chosen}\x00{rejected}"
        else:
            pair_key = json.dumps([prompt, chosen, rejected], sort_keys=True, ensure_ascii=False)
        first = self.pair_index.setdefault(digest(pair_key), ref)
        duplicate = first != ref
        if duplicate:
            problems.append(("duplicate_pair", f"same as {self.where(first)}"))
        if prompt_text:
            prompt_key = digest(normalized(prompt_text))
            first = self.prompt_index.setdefault(prompt_key, ref)
            if first != ref and not duplicate:  # a copied pair is reported once, as such
                problems.append(("duplicate_prompt", f"first at {self.where(first)}"))
            leaked = self.train.prompt_index.get(prompt_key) if self.train is not None else None
            if leaked is not None:
                problems.append(("leakage", f"prompt of {self.train.where(leaked)}"))
        scores = planned.match.scores
        if scores is not None and raw.data is not None:
            high, low = raw.data.get(scores[0]), raw.data.get(scores[1])
            if _is_number(high) and _is_number(low):
                self.report.char_pairs.add_margin(high - low)
                if high <= low:
                    problems.append(("score_margin", f"{scores[0]} {high} vs {scores[1]} {low}"))
        lengths = self.report.chars
        lengths["prompt"].add(len(prompt_text))
        lengths["chosen"].add(len(chosen_text))
        lengths["rejected"].add(len(rejected_text))
        self.report.char_pairs.add(len(chosen_text), len(rejected_text))
        return problems

    def ref(self, raw: RawRow) -> int:
        """A row's location packed in an int: (file number << 32) | line."""
        if not self.files or self.files[-1].source != raw.source:
            self.files.append(RawRow(raw.source, 0, 0, None, lined=raw.lined))
        return (len(self.files) - 1) << 32 | raw.number

    def where(self, ref: int) -> str:
        template = self.files[ref >> 32]
        return RawRow(template.source, ref & 0xFFFFFFFF, 0, None, lined=template.lined).where

    # --- whole split ----------------------------------------------------------------------

    def _finish(self) -> None:
        report, findings = self.report, self.report.findings
        by_format = sum(n for c, n in report.dropped_by.items() if CHECKS[c].severity == DROPPED)
        usable = report.rows - report.error_rows - by_format
        if report.name == "train" and report.recognised:
            if usable <= 0:
                findings.note("no_rows", f"none of the {report.rows} rows can train")
            elif usable < MIN_ROWS:
                findings.note("few_rows", f"{usable} usable rows; DPO usually needs hundreds of pairs or more")
            if self.unpaired is not None:
                self.unpaired.finish(findings, self.kto_weights)
        tokens = report.tokens is not None and report.token_pairs.pairs
        bias = (report.token_pairs if tokens else report.char_pairs).length_bias()
        if bias is not None and report.char_pairs.pairs >= 10:
            message = length_bias_message(bias, "token" if tokens else "character")
            if message:
                findings.note("length_bias", message)


def _unreadable(row: dict[str, Any]) -> list:
    raise RowProblem("malformed_line", "no row of this source could be read to recognise its layout")


def _has_error(problems: list[Problem]) -> bool:
    return any(CHECKS[c].severity == ERROR for c, _ in problems)


def _has_drop(problems: list[Problem]) -> bool:
    return any(CHECKS[c].severity in (ERROR, DROPPED) for c, _ in problems)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
