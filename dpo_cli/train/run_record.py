"""`run.json`: how a run started and how it ended, true in every ending.

`completed`; `interrupted`, with the checkpoint that was kept (or `null` when none was); or
`failed`, with the reason. Only a kill -9 (or a power loss) leaves `running` behind, and the
next `--resume` rewrites it. A failed write (a full disk, a quota, failing storage) becomes one
message naming the path and what was being written, and the record says the same.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dpo_cli.checkpoints import discard_incomplete, saving_checkpoint
from dpo_cli.errors import EXIT_INTERRUPTED, DpoError
from dpo_cli.fsio import as_write_error, read_json
from dpo_cli.rundir import RUN_INFO, checkpoints_dir, latest_checkpoint, write_run_info


class RunRecord:
    """Writes `run.json` (on the main process only) and turns a run's ending into its message.

    Attributes:
        info: What every write of `run.json` carries (start time, versions, row counts, ...).
        target: `(path, what)` being written outside the Trainer's loop (final model, summary),
            named when that write fails.
    """

    def __init__(
        self, output_dir: Path, info: dict[str, Any], *, main: bool, resume_command: str, restart_command: str
    ):
        self.output_dir = output_dir
        self.info = info
        self.main = main
        self.resume_command = resume_command
        self.restart_command = restart_command
        self.target: tuple[Path, str] | None = None
        self.begun = False  # set once the folder is this run's (an earlier run replaced, or a resume restored)

    def write(self, status: str, **fields: Any) -> None:
        if not self.main:
            return
        info = {**self.info, "status": status, **fields}
        if status != "running":
            info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        path = self.output_dir / RUN_INFO
        try:
            earlier = read_json(path) if status != "running" and path.exists() else {}
        except (OSError, ValueError):
            earlier = {}
        # Keys something else added during the run stay; how it ended is this write's.
        write_run_info(self.output_dir, {**(earlier if isinstance(earlier, dict) else {}), **info})

    def _write_last(self, status: str, details: list[str], **fields: Any) -> None:
        """`write`, noting in `details` when even that fails (the disk may be full)."""
        try:
            self.write(status, **fields)
        except OSError as exc:
            details.append(f"{self.output_dir / RUN_INFO} could not be updated either: {exc.strerror or exc}")

    def stopped(self, step: int) -> DpoError:
        """The graceful stop: the step finished and a checkpoint was saved."""
        kept = latest_checkpoint(self.output_dir)
        details: list[str] = []
        self._write_last("interrupted", details, checkpoint=str(kept) if kept else None, stopped_at_step=step)
        where = f"checkpoint saved in {checkpoints_dir(self.output_dir)}" if kept else "no checkpoint could be saved"
        return DpoError(
            f"interrupted at step {step}; {where}",
            exit_code=EXIT_INTERRUPTED,
            details=[
                *details,
                f"resume with: {self.resume_command}" if kept else f"start again with: {self.restart_command}",
            ],
        )

    def interrupted(self, step: int, phase: str) -> DpoError:
        """A signal that stopped a started run at once (a second one during training, or while finishing)."""
        kept = latest_checkpoint(self.output_dir)
        cut = saving_checkpoint(self.output_dir, step)
        details = []
        if cut is not None:
            details.append(f"the save of {cut.name} was cut short; --resume ignores it")
        if phase == "finishing":
            details.append("final/ was not finished; --resume writes it again")
        self._write_last(
            "interrupted", details, checkpoint=str(kept) if kept else None, stopped_at_step=step, stopped_while=phase
        )
        if kept is None:
            return DpoError(
                f"interrupted at step {step} before any checkpoint was complete; nothing to resume",
                exit_code=EXIT_INTERRUPTED,
                details=[*details, f"start again with: {self.restart_command}"],
            )
        again = "again " if phase == "training" else ""
        return DpoError(
            f"interrupted {again}at step {step} while {'saving' if cut else phase}; kept {kept} (complete)",
            exit_code=EXIT_INTERRUPTED,
            details=[*details, f"resume with: {self.resume_command}"],
        )

    def failed(self, exc: BaseException, step: int, phase: str) -> DpoError | None:
        """Record `exc` as the run's failure; returns the clear error to raise, or None to let `exc` go on."""
        if isinstance(exc, DpoError) and exc.exit_code == EXIT_INTERRUPTED:
            return None
        saving = saving_checkpoint(self.output_dir, step) if phase == "training" else None
        if self.target is not None and phase == "finishing":
            path, what = self.target
        elif saving is not None:
            path, what = saving, f"checkpoint at step {step}"
        else:
            path, what = checkpoints_dir(self.output_dir), f"training state at step {step}"
        error = as_write_error(exc, path, what)
        if error is None:
            reason = exc.message if isinstance(exc, DpoError) else f"{type(exc).__name__}: {exc}"
            details: list[str] = []
            self._write_last("failed", details, error=reason, stopped_at_step=step)
            return None
        details = []
        if error.out_of_space and saving is not None and self.main and discard_incomplete(self.output_dir, step):
            details.append(f"the incomplete {saving.name} was removed to free its space")
        kept = latest_checkpoint(self.output_dir)
        self._write_last(
            "failed", details, error=error.message, stopped_at_step=step, checkpoint=str(kept) if kept else None
        )
        details.append(f"last complete checkpoint: {kept}" if kept else "no checkpoint was complete")
        action = "free some space" if error.out_of_space else "fix the storage"
        details.append(
            f"{action}, then resume with: {self.resume_command}"
            if kept
            else f"{action}, then start again with: {self.restart_command}"
        )
        error.details = [*error.details, *details]
        return error
