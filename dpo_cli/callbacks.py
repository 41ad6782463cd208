"""Trainer callbacks: metrics file, NaN guard, graceful stop, checkpoint markers, progress bar."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from dpo_cli.diagnose import is_bad_number
from dpo_cli.rundir import mark_complete

# Metrics whose NaN/inf means the run is broken, not merely noisy.
GUARDED_KEYS = ("loss", "grad_norm", "logits/chosen", "logits/rejected", "logps/chosen", "logps/rejected")


class MetricsWriter(TrainerCallback):
    """Appends every logged dict, with its step, to `metrics.jsonl` (main process only)."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        # Wall-clock time lets throughput be read off the file (and benchmarks compare runs).
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "time": round(time.time(), 3), **logs}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()


class NanGuard(TrainerCallback):
    """Stops training at the first NaN/inf loss, gradient norm or logits instead of burning hours."""

    def __init__(self) -> None:
        self.tripped: tuple[int, str] | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in GUARDED_KEYS:
            if is_bad_number((logs or {}).get(key)):
                self.tripped = (state.global_step, key)
                control.should_training_stop = True
                control.should_save = False
                return


class GracefulStop(TrainerCallback):
    """On SIGTERM/SIGINT, finish the current step, save a checkpoint and stop.

    A second signal falls through to the default handler, so an impatient Ctrl-C still works.
    In a multi-process run the ranks agree at every step end: when any rank got a signal, all
    of them save and stop together (a rank stopping alone would leave the others hanging in
    their next collective). `stopped` is then true on every rank, `received` only on those signalled.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.stopped = False
        self._previous: dict[int, Any] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread; the launcher forwards signals anyway
                pass

    def _handle(self, signum, frame):
        self.received = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def on_step_end(self, args, state, control, **kwargs):
        if _any_rank(self.received is not None, args):
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def _any_rank(flag: bool, args) -> bool:
    """`flag` OR-ed over all ranks (just `flag` in a single process)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([int(flag)], device=args.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class CheckpointMarker(TrainerCallback):
    """Marks a checkpoint complete once the Trainer has finished writing it.

    `--resume` only trusts marked checkpoints, so a kill during a save falls back to the
    previous one instead of loading half-written weights.
    """

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                mark_complete(checkpoint)


class ProgressBar(TrainerCallback):
    """One tqdm bar with the numbers that matter, instead of a wall of log lines."""

    def __init__(self) -> None:
        self.bar = None
        self.postfix: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step", dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        names = {
            "loss": "loss",
            "rewards/accuracies": "acc",
            "rewards/margins": "margin",
            "eval_loss": "eval_loss",
            "eval_rewards/accuracies": "eval_acc",
        }
        for key, short in names.items():
            if isinstance(logs.get(key), (int, float)):
                self.postfix[short] = f"{logs[key]:.3f}"
        self.bar.set_postfix(self.postfix, refresh=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
