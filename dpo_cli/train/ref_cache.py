"""Reference log-probs computed once and reused by every run that shares data and starting model.

TRL 1.16 caches precomputed reference log-probs in the `datasets` cache, keyed by the prepared
dataset's fingerprint. That fingerprint includes a hash of the whole `DPOConfig` (TRL's length
filter closes over it), so two runs that differ only in beta or output directory never share
the cache, although their reference log-probs are identical. This cache keys by content
instead: the token ids of every row and TRL's own hash of the starting model.

`dpo train` keeps the cache in its run directory (`ref_logps/`), so `--resume` and every epoch
reuse it; `dpo sweep-beta` shares one cache between its points. The precompute itself runs in
`dpo_cli.train.speed.FasterDPO`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def content_key(dataset: Any, model_hash: str, settings: str = "") -> str:
    """Hash of the prepared rows' token ids, of the starting model and of the settings that change
    the values (truncation, precision)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(model_hash).encode())
    digest.update(settings.encode())
    table = dataset.with_format("arrow")[:]
    for name in TOKEN_COLUMNS:
        column = table.column(name).combine_chunks()
        for piece in (column.offsets, column.values) if hasattr(column, "offsets") else (column,):
            for buffer in piece.buffers():
                if buffer is not None:
                    digest.update(memoryview(buffer))
    digest.update(str(len(dataset)).encode())
    return digest.hexdigest()


def cache_path(cache_dir: Path, name: str, key: str) -> Path:
    return Path(cache_dir) / f"{name}-{key}.npz"


def load(cache_dir: Path, name: str, key: str) -> tuple[Any, Any] | None:
    """The cached (chosen, rejected) reference log-probs of split `name`, or None."""
    import numpy as np

    path = cache_path(cache_dir, name, key)
    if not path.exists():
        return None
    with np.load(path) as arrays:
        return arrays["chosen"], arrays["rejected"]


def save(cache_dir: Path, name: str, key: str, chosen: Any, rejected: Any) -> Path:
    """Write the log-probs atomically (a run killed mid-write leaves no half file to reuse)."""
    import numpy as np

    from dpo_cli.fsio import atomic_save

    path = cache_path(Path(cache_dir), name, key)
    arrays = {"chosen": np.asarray(chosen, dtype=np.float32), "rejected": np.asarray(rejected, dtype=np.float32)}
    atomic_save(path, lambda tmp: np.savez(tmp, **arrays))
    return path
