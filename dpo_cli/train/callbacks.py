"""Trainer callbacks: metrics file, NaN guard, graceful stop, checkpoint markers, progress bar."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from dpo_cli.interrupts import RunSignals
from dpo_cli.rundir import ends_with_newline, mark_complete
from dpo_cli.train.diagnose import is_bad_number
from dpo_cli.train.launch import wait_for_all_ranks

# Metrics whose NaN/inf means the run is broken, not merely noisy.
GUARDED_KEYS = ("loss", "grad_norm", "logits/chosen", "logits/rejected", "logps/chosen", "logps/rejected")


class MetricsWriter(TrainerCallback):
    """Appends every logged dict, with its step, to `metrics.jsonl` (main process only)."""

    def __init__(self, path: Path):
        self.path = path
        self._checked = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        from dpo_cli.fsio import WriteError

        # Wall-clock time lets throughput be read off the file (and benchmarks compare runs).
        record = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "time": round(time.time(), 3),
            **logs,
        }
        # A line cut off by a kill must not swallow the next record: start it on a line of its own.
        lead = "" if self._checked or ends_with_newline(self.path) else "\n"
        self._checked = True
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(lead + json.dumps(record) + "\n")
                handle.flush()
        except OSError as exc:
            raise WriteError(self.path, f"metrics record at step {state.global_step}", exc) from exc


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

    The signals are the run's `interrupts.RunSignals` (installed by `dpo_cli.train.run.train`
    from model loading on; here, for the training loop only, when another caller trains): a
    second signal stops at once, even during the save. In a multi-process run the ranks agree
    at every step end: when any rank got a signal, all of them save and stop together (a rank
    stopping alone would leave the others hanging in their next collective). `stopped` is then
    true on every rank, `received` only on those signalled.
    """

    def __init__(self) -> None:
        self.stopped = False
        self._signals: RunSignals | None = None
        self._own: RunSignals | None = None

    @property
    def received(self) -> int | None:
        return self._signals.received if self._signals is not None else None

    def on_train_begin(self, args, state, control, **kwargs):
        self._signals = RunSignals.active()
        if self._signals is None:
            self._own = self._signals = RunSignals().__enter__()
        self._signals.phase = "training"

    def on_step_end(self, args, state, control, **kwargs):
        if _any_rank(self.received is not None, args):
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self._signals is not None and self._signals.phase == "training":
            self._signals.phase = "finishing"
        if self._own is not None:
            self._own.__exit__(None, None, None)
            self._own = None


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
    """Marks a checkpoint complete once every rank has written it, then rotates older ones.

    `--resume` only trusts marked checkpoints, so a kill during a save falls back to the
    previous one instead of loading half-written weights. The Trainer's own `save_total_limit`
    rotation runs before this marker is written; `taking_over_rotation` turns it off and the
    rotation happens here instead, after the marker (see `dpo_cli.checkpoints`).
    """

    def __init__(self, keep: int | None = None):
        self.keep = keep

    @classmethod
    def taking_over_rotation(cls, args: Any) -> CheckpointMarker:
        """A marker that keeps `args.save_total_limit` checkpoints itself; the Trainer then keeps all."""
        keep, args.save_total_limit = args.save_total_limit, None
        return cls(keep)

    def on_save(self, args, state, control, **kwargs):
        from dpo_cli.checkpoints import rotate

        wait_for_all_ranks()  # every rank's shard of a ZeRO checkpoint is written before rank 0 vouches for it
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                mark_complete(checkpoint, step=state.global_step)
                rotate(Path(args.output_dir).parent, self.keep, protect=state.best_model_checkpoint)


class TrainingAlreadyDone(Exception):
    """Raised before a step past `max_steps`: the run resumed from its last checkpoint has nothing left to train."""


class NoStepPastTheEnd(TrainerCallback):
    """Stops a run resumed from a checkpoint at `max_steps` before it trains one step too many.

    The Trainer checks for the end after each step, never before the first one, so resuming a
    run that was stopped while writing `final/` would train step `max_steps + 1`. The
    checkpoint's weights are loaded by the time the first step begins; `train` catches the
    exception and goes on to write `final/`.
    """

    def on_step_begin(self, args, state, control, **kwargs):
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            raise TrainingAlreadyDone


class OnTrainingStart(TrainerCallback):
    """Calls `action` once, when the first step begins: every checkpoint file has loaded by then.

    A resumed run writes nothing (run.json, metrics, config.yaml) until its checkpoint has been
    restored, so a resume that fails to load leaves the run exactly as it was. A resume with no
    step left runs `action` at its first log instead. Register it first (`install`), so that it
    runs before `MetricsWriter` appends anything.
    """

    @classmethod
    def install(cls, trainer: Any, action: Callable[[], None]) -> OnTrainingStart:
        callback = cls(action)
        trainer.callback_handler.callbacks.insert(0, callback)
        return callback

    def __init__(self, action: Callable[[], None]):
        self.action = action
        self.done = False

    def run(self) -> None:
        if not self.done:
            self.done = True
            self.action()

    def on_step_begin(self, args, state, control, **kwargs):
        self.run()

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.run()

    def on_train_end(self, args, state, control, **kwargs):
        self.run()


class ProgressBar(TrainerCallback):
    """One tqdm bar with the numbers that matter, instead of a wall of log lines."""

    def __init__(self) -> None:
        self.bar = None
        self.postfix: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=state.max_steps, initial=state.global_step, desc="train", unit="step", dynamic_ncols=True
            )

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
