"""The parts every layout is made of: the sample it is detected from, the match it returns, and
the record the registry keeps (name, docs table row, detector, converter factory)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dpo_cli.data.rows import MISSING, get_path, is_transcript

if TYPE_CHECKING:
    from dpo_cli.config.schema import DataColumns

Converter = Callable[[dict[str, Any]], Any]  # row -> a TRL row, or a list of them; raises RowProblem


class LayoutError(Exception):
    """The rows are not a layout this run trains on; the message says what was found and how to fix it.

    `unpaired` is set when the rows are KTO's unpaired rows, refused only because the run wants pairs.
    """

    def __init__(self, message: str, unpaired: bool = False):
        super().__init__(message)
        self.unpaired = unpaired


@dataclass(frozen=True)
class Options:
    """Settings of the `data:` section that change how rows convert."""

    min_score_gap: float = 0.0


@dataclass
class Sample:
    """The first parsed rows of one source, and the column mapping it is read with."""

    keys: list[str]
    rows: list[dict[str, Any]]
    columns: DataColumns

    def has(self, path: str | None) -> bool:
        """Some sampled row holds `path` (a column or dotted nested field)."""
        return path is not None and any(get_path(r, path) is not MISSING for r in self.rows)

    def first(self, path: str) -> Any:
        """The first non-null value of `path` in the sample, or None."""
        for row in self.rows:
            value = get_path(row, path)
            if value is not MISSING and value is not None:
                return value
        return None

    def explicit(self, name: str) -> bool:
        """The user set `data.columns.<name>` (rather than leaving the default)."""
        return name in self.columns.model_fields_set

    def column(self, name: str) -> str | None:
        return getattr(self.columns, name)

    def optional(self, name: str) -> str | None:
        """An optional column (system, history): its configured name when the sample has it."""
        column = self.column(name)
        return column if self.has(column) else None

    def transcript(self, path: str) -> bool:
        return is_transcript(self.first(path))


@dataclass(frozen=True)
class Match:
    """A layout recognised in a source, with everything its converter needs.

    Attributes:
        layout: The registry name (`hh`, `sharegpt`, ...).
        kind: `pairs` (prompt/chosen/rejected) or `unpaired` (prompt/completion/label, KTO's).
        native: `text` or `messages`: what the rows naturally become.
        params: The columns and choices the converter uses, as sorted `(key, value)` pairs.
        described: One line for the report: what was found and how it is read.
        used: Top-level columns read; the others are listed as ignored.
        implicit: The prompt is the shared start of chosen and rejected.
        scores: `(chosen score column, rejected score column)` when the pairs carry scores.
        to_messages: The rows can also be written as messages (text layouts: the prompt as a
            user turn; transcripts: parsed into turns).
    """

    layout: str
    kind: str
    native: str
    params: tuple[tuple[str, Any], ...]
    described: str
    used: frozenset[str]
    implicit: bool = False
    scores: tuple[str, str] | None = None
    to_messages: bool = True

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)


def match(layout: str, kind: str, native: str, described: str, used: set[str] | list[str], **params: Any) -> Match:
    extra = {k: params.pop(k) for k in ("implicit", "scores", "to_messages") if k in params}
    top = frozenset(c.split(".")[0] for c in used if c)
    return Match(layout, kind, native, tuple(sorted(params.items())), described, top, **extra)


@dataclass(frozen=True)
class Layout:
    """One source layout in the registry.

    Attributes:
        name: The value `data.format` (or a source's `format`) names it by.
        title: The name in the docs' formats table, with where it comes from.
        rule: How it is detected, in one line (docs and `--help`).
        example: A three-line example row for the docs.
        detect: Sample -> Match when the rows are this layout (None otherwise).
        build: (match, as messages, options) -> converter of one row.
        kinds: `pairs` or `unpaired` (KTO).
        builds_messages: A text layout whose converter writes messages itself when asked (parsing
            transcripts, keeping system turns); other text layouts are wrapped (prompt -> user turn).
    """

    name: str
    title: str
    rule: str
    example: str
    detect: Callable[[Sample], Match | None]
    build: Callable[[Match, bool, Options], Converter]
    kinds: tuple[str, ...] = ("pairs",)
    builds_messages: bool = False


def column_list(columns: list[str]) -> str:
    return ", ".join(f"`{c}`" for c in columns)
