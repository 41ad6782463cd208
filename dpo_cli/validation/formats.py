"""Reading rows and recognising the layout they come in.

Local JSON Lines files are streamed line by line, so a malformed line is reported with its
line number and the rest of the file is still checked. Everything else (CSV, Parquet, JSON
arrays, Hub ids) goes through `dpo_cli.data.load_split`, the loader `dpo train` uses, and is
read in batches. Either way only one batch of rows is in memory at a time.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpo_cli.config.schema import DataColumns
from dpo_cli.data import DataSource, load_split

BATCH_ROWS = 1000
SAMPLE_ROWS = 100


@dataclass
class RawRow:
    """One input row: parsed, or the reason it could not be.

    Attributes:
        source: The file (or dataset label) the row comes from.
        number: Line number for JSON Lines, 1-based row number otherwise.
        data: The parsed object, None when the line is malformed.
        line: The original JSON Lines text, kept so `--write-clean` copies rows byte for byte.
        error: Why the line could not be parsed.
    """

    source: str
    number: int
    data: dict[str, Any] | None
    line: bytes | None = None
    error: str | None = None

    @property
    def where(self) -> str:
        return f"{self.source}:{self.number}" if self.line is not None else f"{self.source} row {self.number}"


def is_json_lines(path: str) -> bool:
    """A `.jsonl` file, or a `.json` file that is not one JSON array."""
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return True
    if suffix != ".json":
        return False
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip()
    return not head.startswith(b"[")


def iter_batches(source: DataSource, *, split: str, subset: str | None) -> Iterator[list[RawRow]]:
    """Rows of one source in batches of `BATCH_ROWS`, in file order."""
    if source.files and all(is_json_lines(f) for f in source.files):
        for path in source.files:
            yield from _jsonl_batches(path)
        return
    dataset = load_split(source, split=split, subset=subset)
    index = 0
    for batch in dataset.iter(batch_size=BATCH_ROWS):
        columns = list(batch)
        size = len(batch[columns[0]]) if columns else 0
        rows = []
        for i in range(size):
            index += 1
            rows.append(RawRow(source.label, index, {c: batch[c][i] for c in columns}))
        yield rows


def _jsonl_batches(path: str) -> Iterator[list[RawRow]]:
    batch: list[RawRow] = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue  # the `datasets` JSON loader skips blank lines too
            try:
                data = json.loads(line)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                batch.append(RawRow(path, number, None, line, _json_error(exc)))
            else:
                if isinstance(data, dict):
                    batch.append(RawRow(path, number, data, line))
                else:
                    batch.append(RawRow(path, number, None, line, f"a JSON {type(data).__name__}, not an object"))
            if len(batch) >= BATCH_ROWS:
                yield batch
                batch = []
    if batch:
        yield batch


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} at column {exc.colno}"
    return f"not UTF-8: {exc}".splitlines()[0][:200]


# --- layouts -----------------------------------------------------------------------------------


class LayoutError(Exception):
    """The rows are not prompt/chosen/rejected pairs under the configured column names."""


@dataclass(frozen=True)
class Layout:
    """How one split's rows map to TRL's preference columns."""

    conversational: bool
    implicit: bool
    prompt: str | None
    chosen: str
    rejected: str
    scores: tuple[str, str] | None = None
    # KTO's unpaired rows: `chosen` then names the completion column and `rejected` the label column.
    unpaired: bool = False

    @property
    def format(self) -> str:
        """The name `data.format` uses: `standard` or `conversational`."""
        return "conversational" if self.conversational else "standard"

    def describe(self) -> str:
        text = self.format
        if self.unpaired:
            return f"{text}, unpaired rows (prompt, completion, boolean label: KTO's layout)"
        if self.implicit:
            text += " with implicit prompt (extracted from the shared start of chosen and rejected, as TRL does)"
        return text

    def columns(self) -> set[str]:
        used = {self.chosen, self.rejected}
        if self.prompt:
            used.add(self.prompt)
        return used


RESPONSE_LISTS = ("completions", "responses", "outputs", "answers", "generations", "candidates")
SCORE_LISTS = ("scores", "ratings", "rewards", "ranks", "ranking", "rankings", "preferences")
PAIR_LABELS = ("winner", "preference", "label", "choice", "preferred", "better_response_id", "safer_response_id")
PAIR_RESPONSES = (("response_a", "response_b"), ("response_0", "response_1"), ("output_1", "output_2"),
                  ("answer_a", "answer_b"), ("completion_a", "completion_b"), ("model_a", "model_b"))


def detect_layout(columns: DataColumns, keys: list[str], sample: list[dict[str, Any]]) -> Layout:
    """Work out how the rows map to prompt/chosen/rejected.

    Args:
        columns: The configured column names (`data.columns`).
        keys: Column names found in the first rows, in order.
        sample: The first parsed rows.

    Raises:
        LayoutError: The rows are another layout (unpaired, ranked, labelled pairs, SFT) or a
            configured column is absent; the message says what was found and how to fix it.
    """
    if columns.chosen not in keys or columns.rejected not in keys:
        raise LayoutError(_other_layout(columns, keys, sample))
    prompt_set = "prompt" in columns.model_fields_set
    implicit = columns.prompt is None or (columns.prompt not in keys and not prompt_set)
    if not implicit and columns.prompt not in keys:
        raise LayoutError(_missing(columns, keys, [f"`{columns.prompt}` (for prompt)"]))
    first = next((row[columns.chosen] for row in sample if row.get(columns.chosen) is not None), None)
    conversational = isinstance(first, list) and all(isinstance(m, dict) and "role" in m for m in first)
    return Layout(
        conversational=conversational,
        implicit=implicit,
        prompt=None if implicit else columns.prompt,
        chosen=columns.chosen,
        rejected=columns.rejected,
        scores=_score_columns(columns, keys),
    )


def _score_columns(columns: DataColumns, keys: list[str]) -> tuple[str, str] | None:
    for chosen_name, rejected_name in ((columns.chosen, columns.rejected), ("chosen", "rejected")):
        for pattern in ("score_{}", "{}_score", "{}_rating", "rating_{}", "{}_reward", "reward_{}"):
            pair = (pattern.format(chosen_name), pattern.format(rejected_name))
            if pair[0] in keys and pair[1] in keys:
                return pair
    return None


def _other_layout(columns: DataColumns, keys: list[str], sample: list[dict[str, Any]]) -> str:
    found = f"columns found: {', '.join(keys) or 'none'}"
    key_set = set(keys)
    if {"completion", "label"} <= key_set:
        return (
            "unpaired rows (prompt/completion/label, the KTO layout): each row rates a single completion, "
            "while DPO needs a chosen and a rejected response to the same prompt. Pair a label=true completion "
            "with a label=false one for each prompt into prompt/chosen/rejected columns, or train these rows "
            f"with KTO (`algorithm: kto`). {found}"
        )
    responses = next((k for k in RESPONSE_LISTS if k in key_set and _is_list(sample, k)), None)
    scores = next((k for k in SCORE_LISTS if k in key_set), None)
    if responses and (scores or _holds_scored_dicts(sample, responses)):
        where = f"`{scores}`" if scores else f"the entries of `{responses}`"
        return (
            f"ranked or scored responses: `{responses}` holds several responses per prompt and {where} their "
            "scores. Convert each row to pairs first (the best-scored response as chosen, a lower-scored one, "
            f"for example the worst, as rejected; skip ties) written as prompt/chosen/rejected. {found}"
        )
    pair = next((p for p in PAIR_RESPONSES if set(p) <= key_set), None)
    label = next((k for k in PAIR_LABELS if k in key_set), None)
    if pair and label:
        return (
            f"two responses with a preference label (`{pair[0]}`/`{pair[1]}` and `{label}`): which column wins "
            "changes from row to row, so a column mapping cannot express it. Convert the rows: write the "
            f"preferred response as chosen and the other as rejected (drop ties). {found}"
        )
    if key_set & {"messages", "conversations"} or key_set == {"text"}:
        return (
            "single conversations or texts (the SFT layout): there is no rejected response to prefer against. "
            f"DPO needs prompt/chosen/rejected pairs. {found}"
        )
    missing = [f"`{name}` (for {role})" for role, name in (("chosen", columns.chosen), ("rejected", columns.rejected))
               if name not in key_set]
    return _missing(columns, keys, missing)


def _missing(columns: DataColumns, keys: list[str], missing: list[str]) -> str:
    hints = []
    for role in ("prompt", "chosen", "rejected"):
        name = getattr(columns, role)
        if name is not None and name not in keys:
            close = difflib.get_close_matches(role, keys, n=1, cutoff=0.5) or difflib.get_close_matches(
                name, keys, n=1, cutoff=0.5
            )
            if close:
                hints.append(f"data.columns.{role}: {close[0]}")
    text = f"missing column {', '.join(missing)}; columns found: {', '.join(keys) or 'none'}"
    if hints:
        text += f". Perhaps map them in the config: {'; '.join(hints)}"
    else:
        text += ". Map them with `data.columns` in the config"
    return text


def _is_list(sample: list[dict[str, Any]], key: str) -> bool:
    return any(isinstance(row.get(key), list) for row in sample)


def _holds_scored_dicts(sample: list[dict[str, Any]], key: str) -> bool:
    for row in sample:
        value = row.get(key)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return any(any(w in k for w in ("score", "rating", "reward", "rank")) for k in value[0])
    return False


# The JSON loader of `datasets` (what train uses) refuses a column holding, say, strings in
# some rows and objects in others; numbers and booleans mix fine.
_KINDS = {str: "string", int: "number", float: "number", bool: "number", list: "list", dict: "object"}


def value_kind(value: Any) -> str | None:
    return None if value is None else _KINDS.get(type(value), type(value).__name__)
