"""Reference log-probs computed once and reused by every run that shares data and starting model.

TRL 1.16 caches precomputed reference log-probs in the `datasets` cache, keyed by the prepared
dataset's fingerprint. That fingerprint includes a hash of the whole `DPOConfig` (TRL's length
filter closes over it), so two runs that differ only in beta or output directory never share
the cache, although their reference log-probs are identical. This cache keys by content
instead: the token ids of every row and TRL's own hash of the starting model.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def content_key(dataset: Any, model_hash: str) -> str:
    """Hash of the prepared rows' token ids and of the starting model."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(model_hash).encode())
    table = dataset.with_format("arrow")[:]
    for name in TOKEN_COLUMNS:
        column = table.column(name).combine_chunks()
        for piece in (column.offsets, column.values) if hasattr(column, "offsets") else (column,):
            for buffer in piece.buffers():
                if buffer is not None:
                    digest.update(memoryview(buffer))
    digest.update(str(len(dataset)).encode())
    return digest.hexdigest()


def shared_ref_trainer_class(cache_dir: Path) -> type:
    """A `DPOTrainer` whose reference log-prob precompute reads and fills `cache_dir`."""
    import numpy as np
    from trl import DPOTrainer

    cache_dir = Path(cache_dir)

    class SharedRefLogpsDPOTrainer(DPOTrainer):
        """DPOTrainer that reuses reference log-probs across runs (see module docstring)."""

        # split name -> "computed" | "reused", for reports and tests
        ref_logps_source: dict[str, str]

        def _precompute_ref_logps(self, dataset, name, batch_size):
            if not hasattr(self, "ref_logps_source"):
                self.ref_logps_source = {}
            key = content_key(dataset, self._precompute_model_hash)
            path = cache_dir / f"{name}-{key}.npz"
            if path.exists():
                arrays = np.load(path)
                self.ref_logps_source[name] = "reused"
                return dataset.add_column("ref_chosen_logps", arrays["chosen"].tolist()).add_column(
                    "ref_rejected_logps", arrays["rejected"].tolist()
                )
            result = super()._precompute_ref_logps(dataset, name, batch_size)
            self.ref_logps_source[name] = "computed"
            if self.accelerator.is_main_process:
                chosen = np.asarray(result["ref_chosen_logps"], dtype=np.float32)
                rejected = np.asarray(result["ref_rejected_logps"], dtype=np.float32)
                cache_dir.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".npz")
                os.close(fd)
                np.savez(tmp, chosen=chosen, rejected=rejected)
                os.replace(tmp, path)
            return result

    return SharedRefLogpsDPOTrainer
