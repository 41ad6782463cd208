"""`dpo train ARGS...` in this process, then the process's peak GPU memory as JSON (for gpu_bench.py).

    python scripts/bench/dpo_train_measured.py OUT.json train CONFIG [--set ...]

The same measurement as plain_trl_train.py's `peak_gpu_bytes`: `torch.cuda.max_memory_allocated()`
over the whole process, written even when the command exits with an error.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]
    started = time.time()
    code = 0
    try:
        from dpo_cli.cli.main import main as dpo

        sys.argv = ["dpo", *argv]
        dpo()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        import torch

        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
        with open(out, "w") as handle:
            json.dump({"exit_code": code, "peak_gpu_bytes": peak, "wall_in_process": time.time() - started}, handle)
    sys.exit(code)


if __name__ == "__main__":
    main()
