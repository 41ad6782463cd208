"""The loader every command trains and evaluates from: sources -> TRL-format `datasets` tables.

Each source is read by `dpo_cli.data.readers`, converted row by row by its layout's converter
(the loop `dpo validate-data` runs, `plan.convert_batch`), and written by
`datasets.Dataset.from_generator` into a memory-mapped Arrow table, cached under a fingerprint
of the files (path, size, mtime), the plan, the rows to leave out and this package's code, so
the ranks of a launched run share one table. Reading our own rows rather than handing the file
to `load_dataset` is what lets a malformed line, or a column whose type changes from row to
row, drop one row instead of failing the whole file, with the line numbers validation reports.

Rows `dpo validate-data` drops for reasons the converter cannot see (duplicates, eval prompts
seen in train, token-length problems) are left out by key: `dpo train` saves them in the run
directory as `data/excluded.json` (with `data/rejects.jsonl` for people), and every rank, and
`dpo eval` later, leaves out the same rows.

KTO reads unpaired rows instead, `prompt` / `completion` / `label` (true: desirable); pairs
become two such rows only when `data.unpair` asks for it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_cli.data.layouts import Options
from dpo_cli.data.mixture import mixture_order, take_rows
from dpo_cli.data.plan import PlannedSource, SplitPlan, convert_batch, options_of, plan_data
from dpo_cli.data.readers import iter_batches
from dpo_cli.errors import EXIT_USAGE, DpoError

if TYPE_CHECKING:
    from datasets import Dataset

    from dpo_cli.config.schema import DataSection

# `excluded[split][source position]` = keys `(row index, pair index)` of rows left out.
Exclusions = dict[str, dict[int, frozenset[tuple[int, int]]]]
EXCLUDED_FILE = Path("data") / "excluded.json"


@dataclass(frozen=True)
class PreferenceData:
    """What training reads.

    Attributes:
        train: The training rows in TRL's format.
        eval: Held-out rows, or None.
        format: `standard` or `conversational`.
        ignored_columns: Source columns no layout reads (of the first train source).
        sources: Per split, one record per source: name, path, layout, rows converted, rows taken.
        eval_sources: Per eval source name, its held-out rows, when `data.eval` lists several.
    """

    train: Dataset
    eval: Dataset | None
    format: str
    ignored_columns: list[str] = field(default_factory=list)
    sources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    eval_sources: dict[str, Dataset] | None = None


def load_preference_data(
    data: DataSection, *, unpaired: bool = False, excluded: Exclusions | None = None
) -> PreferenceData:
    """Load train and eval as configured, converted to TRL's format.

    The eval split comes from `data.eval`, or is a seeded `eval_fraction` of train.

    Args:
        data: The config's `data:` section.
        unpaired: The algorithm trains on unpaired rows (KTO): such rows are read as they are,
            and pairs are split in two when `data.unpair` is set (after the eval split is held
            out, so both halves of a pair land on the same side).
        excluded: Rows to leave out, as `dpo validate-data` found them (see `read_exclusions`).

    Raises:
        DpoError: Missing files, rows that are not a layout this algorithm trains on, sources
            that cannot share one representation, or an empty split.
    """
    train_plan, eval_plan = plan_data(data, unpaired=unpaired)
    options = options_of(data)
    excluded = excluded or {}
    sources: dict[str, list[dict[str, Any]]] = {}
    train, _ = _split_dataset(train_plan, data, options, excluded.get("train", {}), sources)
    eval_set = eval_parts = None
    if eval_plan is not None:
        eval_set, eval_parts = _split_dataset(eval_plan, data, options, excluded.get("eval", {}), sources)
    elif data.eval_fraction:
        if len(train) < 2:
            raise DpoError(
                f"{train_plan.sources[0].source.label}: too few rows ({len(train)}) to hold out an eval split",
                exit_code=EXIT_USAGE,
            )
        parts = train.train_test_split(test_size=data.eval_fraction, seed=data.seed, shuffle=True)
        train, eval_set = parts["train"], parts["test"]
    if data.max_train_samples:
        train = train.select(range(min(data.max_train_samples, len(train))))
    if eval_set is not None and data.max_eval_samples:
        eval_set = eval_set.select(range(min(data.max_eval_samples, len(eval_set))))
    if len(train) == 0:
        raise DpoError(
            f"{train_plan.sources[0].source.label}: no training rows",
            exit_code=EXIT_USAGE,
            details=["run `dpo validate-data` on it to see why every row was dropped"],
        )
    if unpaired and data.unpair and "chosen" in train.column_names:
        from trl.data_utils import unpair_preference_dataset

        # Unpairing puts a batch's desirable rows before its undesirable ones; KTO reads rows in order,
        # so they are shuffled (seeded) to mix both labels into every batch.
        train = unpair_preference_dataset(train).shuffle(seed=data.seed)
        if eval_set is not None:
            eval_set = unpair_preference_dataset(eval_set).shuffle(seed=data.seed)
        if eval_parts is not None:
            eval_parts = {k: unpair_preference_dataset(v) for k, v in eval_parts.items()}
    return PreferenceData(
        train=train,
        eval=eval_set,
        format=train_plan.format,
        ignored_columns=train_plan.sources[0].ignored_columns(),
        sources=sources,
        eval_sources=eval_parts if eval_parts is not None and len(eval_parts) > 1 else None,
    )


def _split_dataset(
    plan: SplitPlan, data: DataSection, options: Options, excluded: dict[int, frozenset], sources: dict
) -> tuple[Dataset, dict[str, Dataset]]:
    from datasets import concatenate_datasets

    problems = plan.problems()
    if problems:
        check = "format_mismatch" if any(s.mismatch and not s.error for s in plan.sources) else "layout"
        raise DpoError(
            f"{plan.name} data: {problems[0]}",
            exit_code=EXIT_USAGE,
            details=[*problems[1:], f"({check}) run `dpo validate-data` for the full report"],
        )
    parts, records = {}, []
    for planned in plan.sources:
        table, left_out = _source_dataset(planned, plan, data, options, excluded.get(planned.position, frozenset()))
        converted = len(table)
        chosen = take_rows(
            converted, planned.fraction, planned.max_samples, f"{data.seed}:{plan.name}:{planned.position}"
        )
        if chosen is not None:
            table = table.select(chosen)
        parts[planned.name] = table
        records.append(
            {
                "name": planned.name,
                "path": planned.source.label,
                "layout": planned.match.layout if planned.match else None,
                "rows": converted,
                "taken": len(table),
                "left_out": left_out,
            }
        )
    sources[plan.name] = records
    tables = list(parts.values())
    combined = tables[0] if len(tables) == 1 else concatenate_datasets(tables)
    if plan.mixture:
        combined = combined.select(mixture_order(len(combined), f"{data.seed}:{plan.name}"))
    return combined, parts


def features_for(messages: bool, kind: str) -> Any:
    """The Arrow schema of TRL rows, fixed so every source (and an empty one) gets the same."""
    from datasets import Features, List, Value

    text = List({"role": Value("string"), "content": Value("string")}) if messages else Value("string")
    if kind == "unpaired":
        return Features({"prompt": text, "completion": text, "label": Value("bool")})
    return Features({"prompt": text, "chosen": text, "rejected": text})


def _source_dataset(
    planned: PlannedSource, plan: SplitPlan, data: DataSection, options: Options, excluded: frozenset
) -> tuple[Dataset, dict[str, int]]:
    """A source's kept rows as a table, and how many rows were left out, by reason."""
    from datasets import Dataset

    kind = planned.match.kind if planned.match is not None else plan.kind
    features = features_for(plan.messages, kind)
    fingerprint = _fingerprint(planned, options, data.max_row_bytes, excluded)
    tally = _tally_path(fingerprint)
    recipe = {
        "planned": planned,
        "options": options,
        "max_row_bytes": data.max_row_bytes,
        "excluded": excluded,
        "tally": str(tally),
    }
    try:
        table = Dataset.from_generator(_rows, features=features, gen_kwargs={"recipe": recipe}, fingerprint=fingerprint)
    except ValueError as exc:
        if "corresponds to no data" not in str(exc):  # datasets' way of saying the generator yielded nothing
            raise
        table = Dataset.from_dict({name: [] for name in features}, features=features)
    left_out = json.loads(tally.read_text()) if tally.is_file() else {}
    if left_out:  # counted even when nobody ran the data check
        reasons = ", ".join(f"{c} x{n}" for c, n in left_out.items())
        # Every rank says it in a launched run: they must all leave out the same rows.
        rank = f" (rank {os.environ['RANK']})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        print(
            f"data{rank}: {planned.source.label}: {sum(left_out.values())} row(s) left out ({reasons}); "
            "`dpo validate-data` lists them",
            file=sys.stderr,
        )
    return table, left_out


def _tally_path(fingerprint: str) -> Path:
    """Where a table's left-out counts are kept: beside `datasets`' cache, so a cached table still reports them."""
    from datasets import config

    return Path(config.HF_DATASETS_CACHE) / "dpo_left_out" / f"{fingerprint}.json"


def _rows(recipe: dict[str, Any]) -> Any:
    """The generator `datasets` writes a source's table from: kept TRL rows in file order."""
    planned: PlannedSource = recipe["planned"]
    if planned.match is None:
        return
    run = planned.converter(recipe["options"])
    excluded, limit = recipe["excluded"], recipe["max_row_bytes"]
    left_out: dict[str, int] = {}
    for batch in iter_batches(planned.source, split=planned.hf_split, subset=planned.subset, max_row_bytes=limit):
        for raw, k, result in convert_batch(batch, run, limit):
            if result.__class__ is not dict:
                left_out[result.check] = left_out.get(result.check, 0) + 1
            elif (raw.index, k) in excluded:
                left_out["found by the data check"] = left_out.get("found by the data check", 0) + 1
            else:
                yield result
    from dpo_cli.fsio import atomic_write_text

    atomic_write_text(Path(recipe["tally"]), json.dumps(left_out))


def _fingerprint(planned: PlannedSource, options: Options, max_row_bytes: int, excluded: frozenset) -> str:
    digest = hashlib.sha256()
    stats = []
    for path in planned.source.files:
        info = os.stat(path)
        stats.append([os.path.abspath(path), info.st_size, info.st_mtime_ns])
    hub = None
    if planned.source.hub_id:  # what `datasets` has cached for the id: a new revision is a new table
        from dpo_cli.data.readers import load_split

        hub = load_split(planned.source, split=planned.hf_split, subset=planned.subset)._fingerprint
    description = {
        "files": stats,
        "hub": [planned.source.hub_id, hub],
        "split": planned.hf_split,
        "subset": planned.subset,
        "match": _canonical(planned.match),
        "messages": planned.messages,
        "options": repr(options),
        "max_row_bytes": max_row_bytes,
        "code": _code_digest(),
    }
    digest.update(json.dumps(description, sort_keys=True, default=str).encode())
    for key in sorted(excluded):
        digest.update(f"{key[0]},{key[1]};".encode())
    return digest.hexdigest()[:32]


def _canonical(value: Any) -> Any:
    """`value` as JSON-able data that is the same in every process.

    A `repr` is not: sets print in hash order, which differs between processes (string hashes are
    salted per process), so the ranks of one launched run would each build their own table.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _canonical(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(item) for item in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _canonical(item) for key, item in value.items()}
    return value


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    """A hash of this package's sources: cached tables never outlive a change in how rows convert."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# --- rows left out, shared through the run directory -------------------------------------------------


def data_fingerprint(data: DataSection) -> str:
    """The `data:` section and the sizes and times of its local files: what `excluded.json` is valid for."""
    from dpo_cli.data.plan import source_entries
    from dpo_cli.data.readers import resolve_source

    stats = []
    for split in ("train", "eval") if data.eval is not None else ("train",):
        for entry in source_entries(data, split):
            for path in resolve_source(entry["path"]).files:
                info = os.stat(path)
                stats.append([path, info.st_size, info.st_mtime_ns])
    # Settings that change which rows are taken or held out, but not which rows were dropped, stay out.
    kept = data.model_dump(
        mode="json", exclude={"seed", "eval_fraction", "max_train_samples", "max_eval_samples", "max_drop_fraction"}
    )
    payload = json.dumps([kept, stats], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def save_exclusions(run_dir: Path, data: DataSection, excluded: Exclusions) -> Path:
    """Write `data/excluded.json` in a run directory (atomically)."""
    from dpo_cli.fsio import atomic_write_json

    path = Path(run_dir) / EXCLUDED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "fingerprint": data_fingerprint(data),
        "splits": {
            split: {str(pos): sorted([list(k) for k in keys]) for pos, keys in by_source.items()}
            for split, by_source in excluded.items()
        },
    }
    atomic_write_json(path, payload)
    return path


def read_exclusions(run_dir: Path, data: DataSection) -> Exclusions | None:
    """The rows a run's data check left out, when they were found for this very data; else None."""
    path = Path(run_dir) / EXCLUDED_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        splits = payload["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        print(f"warning: {path} is unreadable; no rows are left out by it", file=sys.stderr)
        return None
    if payload.get("fingerprint") != data_fingerprint(data):
        print(f"warning: {path} was written for other data; no rows are left out by it", file=sys.stderr)
        return None
    return {
        split: {int(pos): frozenset((int(a), int(b)) for a, b in keys) for pos, keys in by_source.items()}
        for split, by_source in splits.items()
    }
