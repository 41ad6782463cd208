"""Which rows of each source a mixture takes, and in what order: one seeded rule for everyone.

`dpo train` (selecting rows of `datasets` tables) and `dpo validate-data --write-clean`
(writing the clean file) both call these functions, so they take the same rows in the same
order. Seeds are strings (`"<data.seed>:<split>:<source>"`): Python's `random` hashes them
deterministically on every platform and version.
"""

from __future__ import annotations

import random
import re
from pathlib import Path


def take_rows(n: int, fraction: float | None, max_samples: int | None, seed: str) -> list[int] | None:
    """Indices of the usable rows a source contributes, or None for all of them in order.

    `fraction` takes a seeded random share (rounded, at least one row when the source has
    any); `max_samples` then caps it, also at random (a seeded sample, not the first rows,
    since sources are often sorted).
    """
    if fraction is None and max_samples is None:
        return None
    k = n if fraction is None else max(1, round(n * fraction)) if n else 0
    if max_samples is not None:
        k = min(k, max_samples)
    return random.Random(seed).sample(range(n), k)


def mixture_order(total: int, seed: str) -> list[int]:
    """A seeded shuffle of the concatenated sources of a mixture."""
    order = list(range(total))
    random.Random(seed).shuffle(order)
    return order


def source_name(path: str) -> str:
    """A short name for reports and metric keys: the file name without suffixes, or a Hub id's last part."""
    base = Path(path.rstrip("/")).name or path
    while "." in base and base.rsplit(".", 1)[1].lower() in {
        "gz",
        "bz2",
        "xz",
        "zst",
        "jsonl",
        "json",
        "csv",
        "parquet",
    }:
        base = base.rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9_-]+", "_", base).strip("_") or "source"


def unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out
