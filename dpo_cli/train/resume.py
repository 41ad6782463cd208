"""Resuming a run: which config changes a resumed run accepts, and the command that resumes it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_cli.config.loader import config_record
from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.rundir import train_command

if TYPE_CHECKING:
    from dpo_cli.config.schema import RunConfig

# Keys that may change between a run and its resumption (extending or re-logging a run is fine).
RESUMABLE_CHANGES = {
    "training.max_steps",
    "training.num_train_epochs",
    "training.logging_steps",
    "training.save_steps",
    "training.save_total_limit",
    "training.eval_steps",
    "training.report_to",
    # A re-queued job lands on other nodes; where rank 0 listens is not part of the run.
    "launch.main_process_ip",
    "launch.main_process_port",
    "launch.machine_rank",
    # A run directory moved or copied elsewhere (another disk, a shared file system) resumes there.
    "output_dir",
}


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def check_resume_compatible(cfg: RunConfig, output_dir: Path) -> None:
    """Refuse to resume with a config that changes what the run trains.

    Raises:
        DpoError: The run's `config.yaml` is missing or unreadable (nothing to compare with: dpo
            will not guess), or the config differs in a key outside `RESUMABLE_CHANGES`.
    """
    from dpo_cli.config.yaml_safe import load_yaml_file

    saved_path = output_dir / "config.yaml"
    if not saved_path.is_file():
        raise DpoError(
            f"{saved_path}: missing, so the config cannot be checked against the run being resumed",
            exit_code=EXIT_USAGE,
            details=[
                "a different beta or learning rate would silently change the run; dpo does not guess",
                (
                    "put back the config.yaml the run was started with (it is the resolved config), "
                    "or start over with --overwrite"
                ),
            ],
        )
    saved = load_yaml_file(saved_path)
    if not isinstance(saved, dict):
        raise DpoError(f"{saved_path}: not a run config (expected a mapping)", exit_code=EXIT_USAGE)
    saved = flatten(saved)
    current = flatten(config_record(cfg))
    changed = sorted(
        k for k in set(saved) | set(current) if saved.get(k) != current.get(k) and k not in RESUMABLE_CHANGES
    )
    if changed:
        raise DpoError(
            f"{output_dir}: the config differs from the run being resumed",
            exit_code=EXIT_USAGE,
            details=[f"{k}: was {saved.get(k)!r}, now {current.get(k)!r}" for k in changed],
        )


def resume_command(config_path: str | None, overrides: list[str]) -> str:
    """The exact `dpo train ... --resume` line for this run, quoted for a POSIX shell."""
    return train_command(config_path, overrides, "--resume")
