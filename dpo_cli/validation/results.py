"""What validation found: per source, per split, and for the whole check (`validate_data`'s result).

Plain data, shared by the runner that fills it and the report that prints and writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpo_cli.validation.checks import ERROR, WARNING, Findings, Lengths, PairStats


@dataclass
class SourceReport:
    """One source of a split: what it is and what became of its rows."""

    name: str
    label: str
    described: str
    layout: str | None
    rows: int = 0  # input rows (lines) read
    pairs: int = 0  # TRL rows they became, or failed to become (an OASST tree yields several)
    dropped: int = 0
    taken: int | None = None  # after `fraction` / `max_samples`
    fraction: float | None = None
    max_samples: int | None = None
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return self.pairs - self.dropped

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.label,
            "layout": self.layout,
            "described": self.described,
            "rows": self.rows,
            "pairs": self.pairs,
            "dropped": self.dropped,
            "kept": self.kept,
            "taken": self.kept if self.taken is None else self.taken,
            "ignored_columns": self.ignored_columns,
        }


@dataclass
class SplitReport:
    """Everything found in one split (train or eval)."""

    name: str
    source: str
    format: str = "standard"
    kind: str = "pairs"
    sources: list[SourceReport] = field(default_factory=list)
    rows: int = 0  # TRL rows (pairs), kept or dropped, plus input rows that failed as a whole
    error_rows: int = 0
    dropped: int = 0
    dropped_by: dict[str, int] = field(default_factory=dict)
    findings: Findings = field(default_factory=Findings)
    chars: dict[str, Lengths] = field(default_factory=lambda: {k: Lengths() for k in ("prompt", "chosen", "rejected")})
    tokens: dict[str, Lengths] | None = None
    char_pairs: PairStats = field(default_factory=PairStats)
    token_pairs: PairStats = field(default_factory=PairStats)
    recognised: bool = True
    # Keys (row index, pair index) of rows dropped for reasons only validation sees, per source position.
    excluded: dict[int, set[tuple[int, int]]] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return self.rows - self.dropped

    @property
    def ignored_columns(self) -> list[str]:
        return self.sources[0].ignored_columns if self.sources else []

    @property
    def error_share(self) -> float:
        return self.error_rows / self.rows if self.rows else 0.0


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

    def excluded(self) -> dict[str, dict[int, frozenset[tuple[int, int]]]]:
        """Rows `dpo train` must leave out beyond what its converters drop (see `dpo_cli.data.loader`)."""
        return {s.name: {pos: frozenset(keys) for pos, keys in s.excluded.items()} for s in self.splits}
