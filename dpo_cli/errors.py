"""The one exception type for expected failures.

The CLI turns a `DpoError` into a clear message and an exit code, without a traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad config, bad data, bad arguments
EXIT_DOES_NOT_FIT = 3  # `dpo plan`: the run as configured does not fit in the GPUs' memory
EXIT_INTERRUPTED = 130


class DpoError(Exception):
    """An expected failure with a message meant for the user.

    Args:
        message: What went wrong and, where possible, what to do about it.
        exit_code: Process exit code the CLI uses for this error.
        details: Extra lines printed under the message (one problem per line).
    """

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE, details: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.details = list(details or [])

    def __str__(self) -> str:
        return "\n".join([self.message, *(f"  {line}" for line in self.details)])


class ConfigError(DpoError):
    """One or more problems in a config file, reported together."""

    def __init__(self, source: str, problems: list[str]):
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{source}: {count} config {noun}", exit_code=EXIT_USAGE, details=problems)
        self.problems = problems
