"""Finding and reading data files: local files (plain or compressed), folders, globs, Hub ids.

JSON Lines files, plain or compressed (`.gz`, `.bz2`, `.xz`, `.zst`), are streamed here line by
line, so every row keeps its line number and a malformed line is one bad row, not a failed
file. CSV, Parquet, JSON arrays and Hub datasets are read by `datasets` (which decompresses them
too) and iterated in batches. Either way the same `RawRow`s come out, numbered the same way for
`dpo validate-data` and `dpo train`, and only one batch is held in memory.

A JSONL line longer than the per-row limit (`data.max_row_bytes`, 4 MiB by default) is
reported as a bad row naming its line, and is skipped in bounded chunks without ever being
held whole.
"""

from __future__ import annotations

import glob
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from dpo_cli.errors import EXIT_USAGE, DpoError

if TYPE_CHECKING:
    from datasets import Dataset

# File extension (after any compression suffix) -> `datasets` builder.
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
BATCH_ROWS = 1000
# The per-row limit (`data.max_row_bytes`). A batch also ends once it holds this many bytes, so
# one batch holds at most about twice the limit, however long its rows: what the data check
# holds at once (JSON objects, token ids) is bounded by it.
DEFAULT_MAX_ROW_BYTES = 4 * 1024 * 1024
_SKIP_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class DataSource:
    """Where one source's rows come from: local files for one builder, or a Hub dataset id."""

    label: str
    builder: str | None = None
    files: tuple[str, ...] = ()
    hub_id: str | None = None


@dataclass
class RawRow:
    """One input row: parsed, or the reason it could not be.

    Attributes:
        source: The file (or dataset label) the row comes from.
        number: Line number for JSON Lines, 1-based row number otherwise.
        index: 0-based position among the source's rows (over all its files); with the pair
            index it is the row's key in `excluded.json`, the same in validation and training.
        data: The parsed object, None when the row is unusable as a whole.
        lined: Numbered by line (JSON Lines) rather than by row.
        error: `(check id, note)` when the row could not be read.
        text: The start of a malformed line, for the rejects file.
    """

    source: str
    number: int
    index: int
    data: dict[str, Any] | None
    lined: bool = True
    error: tuple[str, str] | None = None
    text: str | None = None

    @property
    def where(self) -> str:
        return f"{self.source}:{self.number}" if self.lined else f"{self.source} row {self.number}"


def split_suffix(path: str) -> tuple[str, str | None]:
    """`(data suffix, compression suffix)`: `x.jsonl.gz` -> `(".jsonl", ".gz")`."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    compression = suffixes[-1] if suffixes and suffixes[-1] in COMPRESSIONS else None
    data = (
        suffixes[-2] if compression and len(suffixes) >= 2 else (suffixes[-1] if suffixes and not compression else "")
    )
    return data, compression


def builder_of(path: str) -> str | None:
    data, compression = split_suffix(path)
    if compression and data == ".parquet":
        return None  # Parquet compresses inside the file; an outer compression layer is not readable
    return BUILDERS.get(data)


def open_binary(path: str) -> IO[bytes]:
    """The file's bytes, decompressed according to its suffix."""
    _, compression = split_suffix(path)
    if compression == ".gz":
        import gzip

        return gzip.open(path, "rb")
    if compression == ".bz2":
        import bz2

        return bz2.open(path, "rb")
    if compression == ".xz":
        import lzma

        return lzma.open(path, "rb")
    if compression == ".zst":
        try:
            import zstandard
        except ImportError:
            raise DpoError(
                f"{path}: reading .zst needs the zstandard package: pip install zstandard", exit_code=EXIT_USAGE
            ) from None
        raw = open(path, "rb")  # noqa: SIM115 - closed with the reader (closefd)
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return open(path, "rb")  # the caller closes it


def is_json_lines(path: str) -> bool:
    """A `.jsonl` file, or a `.json` file that is not one JSON array (either possibly compressed)."""
    data, _ = split_suffix(path)
    if data == ".jsonl":
        return True
    if data != ".json":
        return False
    try:
        with open_binary(path) as handle:
            head = handle.read(4096).lstrip()
    except (OSError, EOFError) as exc:
        raise DpoError(f"{path}: cannot read: {exc}", exit_code=EXIT_USAGE) from None
    return not head.startswith(b"[")


def resolve_source(spec: str | list[str]) -> DataSource:
    """Turn a path, folder, glob, list of files or Hub id into the files (or id) to read.

    Raises:
        DpoError: A path that looks local does not exist, or files of different types are mixed.
    """
    specs = [spec] if isinstance(spec, str) else list(spec)
    files: list[str] = []
    for item in specs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.is_file() and builder_of(str(p)))
            if not found:
                kinds = "/".join(BUILDERS)
                raise DpoError(
                    f"{item}: folder holds no {kinds} files (plain or {'/'.join(COMPRESSIONS)})", exit_code=EXIT_USAGE
                )
            files.extend(found)
        elif path.is_file():
            files.append(str(path))
        elif any(ch in item for ch in "*?["):
            matched = sorted(glob.glob(str(path)))
            if not matched:
                raise DpoError(f"{item}: pattern matches no files", exit_code=EXIT_USAGE)
            files.extend(matched)
        elif _looks_local(item):
            raise DpoError(f"{item}: data file not found", exit_code=EXIT_USAGE)
        elif len(specs) == 1:
            return DataSource(label=item, hub_id=item)
        else:
            raise DpoError(f"{item}: not found; a list of sources must name local files", exit_code=EXIT_USAGE)
    builders = {builder_of(f) for f in files}
    if None in builders:
        bad = next(f for f in files if builder_of(f) is None)
        raise DpoError(
            f"{bad}: unsupported file type",
            exit_code=EXIT_USAGE,
            details=[
                (
                    f"use {', '.join(BUILDERS)} files, plain or compressed as {', '.join(COMPRESSIONS)} "
                    "(Parquet only uncompressed: it compresses inside)"
                )
            ],
        )
    if len(builders) > 1:
        raise DpoError(f"{specs}: mixes file types {sorted(builders)}; convert them to one type", exit_code=EXIT_USAGE)
    label = files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more)"
    return DataSource(label=label, builder=builders.pop(), files=tuple(files))


def _looks_local(item: str) -> bool:
    return item.startswith((".", "/", "~")) or builder_of(item) is not None


def load_split(source: DataSource, *, split: str, subset: str | None = None) -> Dataset:
    """Load one split with `datasets`, turning its failures into a message naming the source."""
    from datasets import load_dataset

    try:
        if source.hub_id:
            return load_dataset(source.hub_id, subset, split=split)
        return load_dataset(source.builder, data_files=list(source.files), split="train")
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as exc:
        raise DpoError(
            f"{source.label}: could not load data: {_first_line(exc)}",
            exit_code=EXIT_USAGE,
            details=["run `dpo validate-data` on it for a line-by-line report"],
        ) from None
    except Exception as exc:  # datasets wraps parser errors in its own types
        if type(exc).__module__.startswith(("datasets", "pyarrow")):
            raise DpoError(
                f"{source.label}: could not parse data: {_first_line(exc)}",
                exit_code=EXIT_USAGE,
                details=["run `dpo validate-data` on it for a line-by-line report"],
            ) from None
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def streams_lines(source: DataSource) -> bool:
    """Read line by line here (JSON Lines) rather than through `datasets`."""
    return bool(source.files) and all(is_json_lines(f) for f in source.files)


def iter_batches(
    source: DataSource, *, split: str, subset: str | None, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES
) -> Iterator[list[RawRow]]:
    """Rows of one source in batches (at most `BATCH_ROWS` rows or about `BATCH_BYTES`), in file order."""
    if streams_lines(source):
        index = 0
        for path in source.files:
            for batch in _jsonl_batches(path, index, max_row_bytes):
                index += len(batch)
                yield batch
        return
    dataset = load_split(source, split=split, subset=subset)
    # Rows of long text come in smaller batches, for the same bound as JSON Lines batches.
    mean_row = dataset.data.nbytes / max(len(dataset), 1)
    batch_rows = max(1, min(BATCH_ROWS, int(max_row_bytes // max(mean_row, 1))))
    index = 0
    for batch in dataset.iter(batch_size=batch_rows):
        columns = list(batch)
        size = len(batch[columns[0]]) if columns else 0
        rows = []
        for i in range(size):
            rows.append(RawRow(source.label, index + 1, index, {c: batch[c][i] for c in columns}, lined=False))
            index += 1
        yield rows


def _jsonl_batches(path: str, first_index: int, max_row_bytes: int) -> Iterator[list[RawRow]]:
    batch: list[RawRow] = []
    size = 0
    index = first_index
    try:
        handle = open_binary(path)
    except OSError as exc:
        raise DpoError(f"{path}: cannot open: {exc}", exit_code=EXIT_USAGE) from None
    with handle:
        number = 0
        readline = handle.readline
        while True:
            try:
                line = readline(max_row_bytes + 1)
            except (OSError, EOFError, ValueError) as exc:  # truncated or corrupt compressed stream
                raise DpoError(
                    f"{path}: cannot read after line {number}: {_first_line(exc)}", exit_code=EXIT_USAGE
                ) from None
            if not line:
                break
            number += 1
            if len(line) > max_row_bytes and not line.endswith(b"\n"):
                length = len(line) + _skip_rest_of_line(readline)
                note = f"line is {_mb(length)}, over the per-row limit of {_mb(max_row_bytes)} (data.max_row_bytes)"
                batch.append(RawRow(path, number, index, None, error=("row_too_long", note)))
                index += 1
                continue
            if not line.strip():
                continue  # the `datasets` JSON loader skips blank lines too
            size += len(line)
            try:
                data = json.loads(line)
            except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, absurd nesting
                text = line[:1000].decode("utf-8", "replace").rstrip("\n")
                batch.append(RawRow(path, number, index, None, error=("malformed_line", _json_error(exc)), text=text))
            else:
                if isinstance(data, dict):
                    batch.append(RawRow(path, number, index, data))
                else:
                    note = f"a JSON {type(data).__name__}, not an object"
                    text = line[:1000].decode("utf-8", "replace").rstrip("\n")
                    batch.append(RawRow(path, number, index, None, error=("malformed_line", note), text=text))
            index += 1
            if len(batch) >= BATCH_ROWS or size >= max_row_bytes:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


def _skip_rest_of_line(readline: Any) -> int:
    """Read on to the end of an over-long line in bounded chunks; returns the bytes skipped."""
    skipped = 0
    while True:
        chunk = readline(_SKIP_CHUNK)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def _json_error(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "invalid JSON: nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} at column {exc.colno}"
    return f"not UTF-8: {exc}".splitlines()[0][:200]
