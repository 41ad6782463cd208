"""SIGTERM and SIGINT for the whole life of a run: one policy from model loading to the final save.

- `loading` (inputs, model, dataset preparation, a checkpoint being restored) and `finishing`
  (final evaluation, `final/`, summary): there is no step to finish, so the first signal stops
  the run at once (`RunInterrupted`); `dpo_cli.train.run` says what was kept.
- `training`: the first signal asks for a graceful stop (the step finishes, a checkpoint is
  saved, `callbacks.GracefulStop` acts on it); a second one stops at once, even in the middle
  of that save.
- `closing`: the run is already stopping and writing its record; signals are noted, not obeyed,
  so the record of how the run ended is never itself cut short.

SIGTERM and SIGINT are treated alike: a scheduler's pre-emption notice and a Ctrl-C mean the
same thing here.
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

SIGNALS = (signal.SIGTERM, signal.SIGINT)
PHASES = ("loading", "training", "finishing", "closing")


class RunInterrupted(BaseException):
    """A stop signal where the run cannot finish a step first.

    A `BaseException`, like `KeyboardInterrupt`, so that no `except Exception` on the way up
    (a library's, or a sweep isolating its points) mistakes it for a failure.
    """

    def __init__(self, signum: int, phase: str):
        super().__init__(f"{signal.Signals(signum).name} while {phase}")
        self.signum = signum
        self.phase = phase


class RunSignals:
    """Installs the run's handlers for SIGTERM and SIGINT for the life of a `with` block.

    Attributes:
        phase: One of `PHASES`; the run moves it forward.
        received: The first signal received, or None.
        count: How many signals arrived.
    """

    _active: ClassVar[list[RunSignals]] = []

    def __init__(self, phase: str = "loading"):
        self.phase = phase
        self.received: int | None = None
        self.count = 0
        self.interrupted_phase: str | None = None  # the phase a signal stopped the run in
        self._previous: dict[int, Any] = {}

    @classmethod
    def active(cls) -> RunSignals | None:
        """The innermost installed `RunSignals`, if any."""
        return cls._active[-1] if cls._active else None

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        RunSignals._active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self in RunSignals._active:
            RunSignals._active.remove(self)

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.received is None:
            self.received = signum
        if self.phase == "closing" or (self.phase == "training" and self.count == 1):
            return
        self.interrupted_phase = self.phase
        raise RunInterrupted(signum, self.phase)
