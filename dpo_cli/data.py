"""The one data loader every command uses: local files or Hub datasets -> preference pairs.

Loading goes through `datasets.load_dataset` (memory-mapped Arrow, cached, shared by ranks),
then columns are mapped to TRL's names `prompt` / `chosen` / `rejected`. Both TRL formats are
kept as they are: standard (strings) and conversational (lists of role/content messages,
rendered later by the tokenizer's chat template inside TRL).

KTO reads unpaired rows instead, `prompt` / `completion` / `label` (true: desirable); pairs
become two such rows only when `data.unpair` asks for it.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_cli.errors import EXIT_USAGE, DpoError

if TYPE_CHECKING:
    from datasets import Dataset

    from dpo_cli.config.schema import DataSection

# File extension -> `datasets` builder.
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class DataSource:
    """Where one split comes from: local files for one builder, or a Hub dataset id."""

    label: str
    builder: str | None = None
    files: tuple[str, ...] = ()
    hub_id: str | None = None


@dataclass(frozen=True)
class PreferenceData:
    train: Dataset
    eval: Dataset | None
    format: str
    ignored_columns: list[str] = field(default_factory=list)


def resolve_source(spec: str | list[str]) -> DataSource:
    """Turn a `data.train` / `data.eval` value into files or a Hub id.

    Raises:
        DpoError: A path that looks local does not exist, or files of different types are mixed.
    """
    specs = [spec] if isinstance(spec, str) else list(spec)
    files: list[str] = []
    for item in specs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in BUILDERS and p.is_file())
            if not found:
                raise DpoError(f"{item}: folder holds no {'/'.join(BUILDERS)} files", exit_code=EXIT_USAGE)
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
    builders = {BUILDERS.get(Path(f).suffix.lower()) for f in files}
    if None in builders:
        bad = next(f for f in files if Path(f).suffix.lower() not in BUILDERS)
        raise DpoError(f"{bad}: unsupported file type (use {', '.join(BUILDERS)})", exit_code=EXIT_USAGE)
    if len(builders) > 1:
        raise DpoError(f"{specs}: mixes file types {sorted(builders)}; convert them to one type", exit_code=EXIT_USAGE)
    label = files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more)"
    return DataSource(label=label, builder=builders.pop(), files=tuple(files))


def _looks_local(item: str) -> bool:
    return item.startswith((".", "/", "~")) or Path(item).suffix.lower() in BUILDERS


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


def to_preference_columns(dataset: Dataset, data: DataSection, label: str) -> tuple[Dataset, list[str]]:
    """Rename the configured columns to TRL's names and drop the rest.

    Returns:
        The dataset with only `prompt`/`chosen`/`rejected` (no `prompt` for implicit-prompt
        data), and the names of the columns that were ignored.
    """
    cols = data.columns
    present = list(dataset.column_names)
    wanted = {"chosen": cols.chosen, "rejected": cols.rejected}
    # No prompt column and none configured: the HH layout, where TRL extracts the shared start.
    implicit = cols.prompt is None or (cols.prompt not in present and "prompt" not in cols.model_fields_set)
    if not implicit:
        wanted = {"prompt": cols.prompt, **wanted}
    _require_columns(present, wanted, label)
    return _select_columns(dataset, wanted)


def _require_columns(present: list[str], wanted: dict[str, str], label: str) -> None:
    missing = [f"`{src}` (for {dst})" for dst, src in wanted.items() if src not in present]
    if missing:
        raise DpoError(
            f"{label}: missing column {', '.join(missing)}",
            exit_code=EXIT_USAGE,
            details=[f"columns present: {', '.join(present)}", "map them with `data.columns` in the config"],
        )


def _select_columns(dataset: Dataset, wanted: dict[str, str]) -> tuple[Dataset, list[str]]:
    """Keep the `wanted` source columns under TRL's names (the keys); return the dropped column names."""
    ignored = [c for c in dataset.column_names if c not in wanted.values()]
    if ignored:
        dataset = dataset.remove_columns(ignored)
    renames = {src: dst for dst, src in wanted.items() if src != dst}
    return (dataset.rename_columns(renames) if renames else dataset), ignored


def is_unpaired(columns: list[str], data: DataSection) -> bool:
    """Rows with one response and a label (KTO's layout) rather than a chosen/rejected pair."""
    cols = data.columns
    return cols.completion in columns and cols.label in columns and cols.chosen not in columns


def to_unpaired_columns(dataset: Dataset, data: DataSection, label: str) -> tuple[Dataset, list[str]]:
    """Rename the configured unpaired columns to TRL's `prompt` / `completion` / `label`, drop the rest.

    Raises:
        DpoError: A column is missing, or `label` holds something other than booleans.
    """
    cols = data.columns
    present = list(dataset.column_names)
    wanted = {"prompt": cols.prompt or "prompt", "completion": cols.completion, "label": cols.label}
    _require_columns(present, wanted, label)
    kind = dataset.features[wanted["label"]]
    if getattr(kind, "dtype", None) != "bool":
        raise DpoError(
            f"{label}: column `{wanted['label']}` must hold true/false (desirable or not), found {kind}",
            exit_code=EXIT_USAGE,
            details=["run `dpo validate-data` on it for the rows at fault"],
        )
    return _select_columns(dataset, wanted)


def unpair(dataset: Dataset) -> Dataset:
    """Each pair as two rows: prompt + chosen labelled true, prompt + rejected labelled false."""
    from trl.data_utils import unpair_preference_dataset

    return unpair_preference_dataset(dataset)


def detect_format(row: dict[str, Any]) -> str:
    """`conversational` when responses are lists of messages, else `standard`."""
    value = row.get("chosen", row.get("completion"))
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value):
        return "conversational"
    return "standard"


def _columns_for(dataset: Dataset, data: DataSection, label: str, unpaired: bool) -> tuple[Dataset, list[str]]:
    if is_unpaired(list(dataset.column_names), data):
        if not unpaired:
            raise DpoError(
                f"{label}: unpaired rows (`{data.columns.completion}` + `{data.columns.label}`) train only with "
                "`algorithm: kto`; DPO and its variants need chosen/rejected pairs",
                exit_code=EXIT_USAGE,
            )
        return to_unpaired_columns(dataset, data, label)
    if unpaired and not data.unpair:
        raise DpoError(
            f"{label}: KTO trains on unpaired rows (prompt, completion, label) and these are preference pairs",
            exit_code=EXIT_USAGE,
            details=["set `data.unpair: true` to split each pair into a desirable and an undesirable row"],
        )
    return to_preference_columns(dataset, data, label)


def load_preference_data(data: DataSection, *, unpaired: bool = False) -> PreferenceData:
    """Load train and eval splits as configured.

    The eval split comes from `data.eval`, or is a seeded `eval_fraction` of train.

    Args:
        data: The config's `data:` section.
        unpaired: The algorithm trains on unpaired rows (KTO): such rows are read as they are,
            and pairs are split in two when `data.unpair` is set (after the eval split is held
            out, so both halves of a pair land on the same side).

    Raises:
        DpoError: Missing files or columns, an empty split, or a format that contradicts `data.format`.
    """
    train_src = resolve_source(data.train)
    train = load_split(train_src, split=data.train_split, subset=data.subset)
    train, ignored = _columns_for(train, data, train_src.label, unpaired)
    eval_set = None
    if data.eval is not None:
        eval_src = resolve_source(data.eval)
        eval_set = load_split(eval_src, split=data.eval_split or data.train_split, subset=data.subset)
        eval_set, _ = _columns_for(eval_set, data, eval_src.label, unpaired)
    elif data.eval_fraction:
        if len(train) < 2:
            raise DpoError(f"{train_src.label}: too few rows ({len(train)}) to hold out an eval split", exit_code=EXIT_USAGE)
        parts = train.train_test_split(test_size=data.eval_fraction, seed=data.seed, shuffle=True)
        train, eval_set = parts["train"], parts["test"]
    if data.max_train_samples:
        train = train.select(range(min(data.max_train_samples, len(train))))
    if eval_set is not None and data.max_eval_samples:
        eval_set = eval_set.select(range(min(data.max_eval_samples, len(eval_set))))
    if len(train) == 0:
        raise DpoError(f"{train_src.label}: no training rows", exit_code=EXIT_USAGE)
    fmt = detect_format(train[0])
    if data.format != "auto" and data.format != fmt:
        raise DpoError(
            f"{train_src.label}: `data.format` is {data.format} but the rows are {fmt}",
            exit_code=EXIT_USAGE,
        )
    if eval_set is not None and len(eval_set) and detect_format(eval_set[0]) != fmt:
        raise DpoError(f"train data is {fmt} but eval data is {detect_format(eval_set[0])}", exit_code=EXIT_USAGE)
    if unpaired and data.unpair:
        # Unpairing puts a batch's desirable rows before its undesirable ones; KTO reads rows in order,
        # so they are shuffled (seeded) to mix both labels into every batch.
        if "chosen" in train.column_names:
            train = unpair(train).shuffle(seed=data.seed)
        if eval_set is not None and "chosen" in eval_set.column_names:
            eval_set = unpair(eval_set).shuffle(seed=data.seed)
    return PreferenceData(train=train, eval=eval_set, format=fmt, ignored_columns=ignored)
