"""From a `data:` section to a plan: each split's sources, the layout found in each, and the one
representation (strings or messages) they are all converted to.

Planning reads only the first rows of every source. `dpo validate-data` then streams the
sources through the plan's converters with file:line locations; `dpo train` builds `datasets`
tables through the same converters (`dpo_cli.data.loader`). `convert_batch` is the one loop
both run, so both drop exactly the same rows for the same reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dpo_cli.data.layouts import LAYOUTS, REPRESENTATIONS, LayoutError, Match, Options, Sample, converter_for, detect
from dpo_cli.data.mixture import source_name, unique_names
from dpo_cli.data.readers import DataSource, RawRow, iter_batches, resolve_source
from dpo_cli.data.rows import RowProblem, text_of

if TYPE_CHECKING:
    from dpo_cli.config.schema import DataColumns, DataSection

SAMPLE_ROWS = 100
SAMPLE_BATCHES = 10  # how far to look for parseable rows when the first ones are malformed


@dataclass
class PlannedSource:
    """One source of one split, as planned.

    Attributes:
        split: `train` or `eval`.
        position: Index among the split's sources (the key of its rows in `excluded.json`).
        name: Short name, for reports and per-source metrics.
        source: The files or Hub id.
        hf_split: The split read from it.
        subset: The Hub configuration.
        columns: Its column mapping.
        format: Its `format` value (`auto`, a representation or a layout name).
        fraction: `fraction` of a mixture source.
        max_samples: `max_samples` of a mixture source.
        match: The layout found; None when no row could be parsed (or on `error`).
        error: Why the rows cannot be read as pairs (a `layout` finding).
        mismatch: Why they cannot take the split's representation (a `format_mismatch` finding).
        messages: Converted to messages (else strings).
        keys: Columns seen in the sample.
    """

    split: str
    position: int
    name: str
    source: DataSource
    hf_split: str
    subset: str | None
    columns: DataColumns
    format: str
    fraction: float | None = None
    max_samples: int | None = None
    match: Match | None = None
    error: str | None = None
    mismatch: str | None = None
    messages: bool = False
    keys: list[str] = field(default_factory=list)
    unpaired_rows: bool = False  # refused as pairs because the rows are KTO's unpaired rows

    @property
    def problem(self) -> str | None:
        return self.error or self.mismatch

    def describe(self) -> str:
        if self.match is None:
            return "not recognised"
        shape = "conversational" if self.messages else "standard"
        converted = " -> converted to messages" if self.messages and self.match.native == "text" else ""
        return f"{self.match.layout}: {self.match.described} [{shape}{converted}]"

    def ignored_columns(self) -> list[str]:
        if self.match is None:
            return []
        return [k for k in self.keys if k not in self.match.used]

    def converter(self, options: Options) -> Callable[[dict[str, Any]], list]:
        assert self.match is not None
        return converter_for(self.match, self.messages, options)


@dataclass
class SplitPlan:
    """The sources of one split and the representation they share."""

    name: str
    sources: list[PlannedSource]
    messages: bool = False
    kind: str = "pairs"

    @property
    def format(self) -> str:
        """`standard` or `conversational`: what TRL is handed."""
        return "conversational" if self.messages else "standard"

    @property
    def mixture(self) -> bool:
        return len(self.sources) > 1

    def problems(self) -> list[str]:
        return [
            f"{s.name} ({s.source.label}): {s.problem}" if self.mixture else f"{s.source.label}: {s.problem}"
            for s in self.sources
            if s.problem
        ]


def source_entries(data: DataSection, split: str) -> list[dict[str, Any]]:
    """`data.train` / `data.eval` as a list of source entries with every default filled in.

    One string, or a list of strings, is one source (as before mixtures existed); a list
    holding mappings is a mixture, each item one source.
    """
    spec = data.train if split == "train" else data.eval
    hf_split = data.train_split if split == "train" else (data.eval_split or data.train_split)
    base = {
        "split": hf_split,
        "subset": data.subset,
        "columns": data.columns,
        "format": data.format,
        "fraction": None,
        "max_samples": None,
        "name": None,
    }
    if isinstance(spec, str) or all(isinstance(item, str) for item in spec):
        paths = [spec] if isinstance(spec, str) else list(spec)
        return [{**base, "path": paths[0] if len(paths) == 1 else paths}]
    entries = []
    for item in spec:
        if isinstance(item, str):
            entries.append({**base, "path": item})
            continue
        given = {k: v for k, v in item.model_dump(exclude_none=True).items() if k != "columns"}
        if item.columns is not None:
            given["columns"] = item.columns
        entries.append({**base, **given})
    return entries


def sample_rows(source: DataSource, hf_split: str, subset: str | None, max_row_bytes: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i, batch in enumerate(iter_batches(source, split=hf_split, subset=subset, max_row_bytes=max_row_bytes)):
        rows += [r.data for r in batch if r.data is not None]
        if len(rows) >= SAMPLE_ROWS or i + 1 >= SAMPLE_BATCHES:
            break
    return rows[:SAMPLE_ROWS]


def plan_split(data: DataSection, split: str, *, unpaired: bool = False, train: SplitPlan | None = None) -> SplitPlan:
    """Plan one split: resolve, sample and detect each source, then fix the shared representation.

    Layout and format problems are recorded on the sources (`PlannedSource.problem`), so a
    report can show all of them; missing files raise.

    Raises:
        DpoError: A source cannot be found or read at all.
    """
    entries = source_entries(data, split)
    names = unique_names(
        [e["name"] or source_name(e["path"] if isinstance(e["path"], str) else e["path"][0]) for e in entries]
    )
    sources = []
    for position, (entry, name) in enumerate(zip(entries, names)):
        planned = PlannedSource(
            split=split,
            position=position,
            name=name,
            source=resolve_source(entry["path"]),
            hf_split=entry["split"],
            subset=entry["subset"],
            columns=entry["columns"],
            format=entry["format"],
            fraction=entry["fraction"],
            max_samples=entry["max_samples"],
        )
        rows = sample_rows(planned.source, planned.hf_split, planned.subset, data.max_row_bytes)
        planned.keys = list(dict.fromkeys(k for row in rows for k in row))
        if rows:
            forced = planned.format if planned.format in LAYOUTS else None
            try:
                planned.match = detect(
                    Sample(planned.keys, rows, planned.columns), forced=forced, unpaired=unpaired, unpair=data.unpair
                )
            except LayoutError as exc:
                planned.error = str(exc)
                planned.unpaired_rows = exc.unpaired
        sources.append(planned)
    plan = SplitPlan(split, sources, kind="unpaired" if unpaired and not data.unpair else "pairs")
    _fix_representation(plan, data.format, train)
    return plan


def _fix_representation(plan: SplitPlan, data_format: str, train: SplitPlan | None) -> None:
    """Strings or messages for the whole split: messages as soon as one source needs them.

    `data.format: standard|conversational` fixes it instead; eval takes train's. A source that
    cannot take the split's representation gets a `mismatch` naming the source that set it.
    """
    found = [s for s in plan.sources if s.match is not None]
    if train is not None:
        messages, why = train.messages, f"train data is {train.format}"
    elif data_format in REPRESENTATIONS:
        messages, why = data_format == "conversational", f"`data.format` is {data_format}"
    else:
        leader = next((s for s in found if s.match.native == "messages"), None)
        messages = leader is not None
        why = f"{leader.name} ({leader.source.label}) holds conversations" if leader else ""
    plan.messages = messages
    for source in found:
        source.messages = messages
        native = source.match.native
        if messages and native == "text" and not source.match.to_messages:
            source.mismatch = (
                f"{why}, but {source.name} is standard with an implicit prompt, which has no turns to "
                "convert into messages"
            )
        elif not messages and native == "messages":
            shape = "conversational" if source.match.kind == "pairs" else "conversational (unpaired)"
            lead = "but eval data is" if train is not None else "but the rows are"
            source.mismatch = f"{why} {lead} {shape} ({source.match.described})"


def plan_data(data: DataSection, *, unpaired: bool = False) -> tuple[SplitPlan, SplitPlan | None]:
    """Plans of train and (when `data.eval` is given) eval."""
    train = plan_split(data, "train", unpaired=unpaired)
    evals = plan_split(data, "eval", unpaired=unpaired, train=train) if data.eval is not None else None
    return train, evals


def options_of(data: DataSection) -> Options:
    return Options(min_score_gap=data.min_score_gap)


def convert_batch(
    batch: list[RawRow], run: Callable[[dict[str, Any]], list], max_row_bytes: int
) -> Iterator[tuple[RawRow, int, Any]]:
    """`(raw row, pair index, TRL row or RowProblem)` for every pair a batch of rows yields.

    A row that fails as a whole yields one problem at pair index 0. Rows read through
    `datasets` (no line to measure) are held to the per-row limit on their text here.
    """
    for raw in batch:
        if raw.error is not None:
            yield raw, 0, RowProblem(*raw.error)
            continue
        try:
            results = run(raw.data)
        except RowProblem as problem:
            yield raw, 0, problem
            continue
        for k, result in enumerate(results):
            if not raw.lined and result.__class__ is dict and _chars(result) > max_row_bytes:
                result = RowProblem(
                    "row_too_long", f"{_chars(result)} characters, over data.max_row_bytes {max_row_bytes}"
                )
            yield raw, k, result


def _chars(row: dict[str, Any]) -> int:
    return sum(len(text_of(v)) for k, v in row.items() if k != "label")
