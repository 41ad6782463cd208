"""What a merge reads from a run's `config.yaml`: the base model and how to load it.

Only these keys are validated; everything else in the file is ignored, so a partial file, or one
written by an older (or newer) dpo with other sections, still merges. A key that is present
with the wrong type is an error naming the file and the key, never a silent default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dpo_cli.errors import EXIT_USAGE, DpoError


class RunModel(BaseModel):
    """The run's `model:` keys a merge uses."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name_or_path: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    # Any text: `auto` and other values the merge cannot use fall back to the base's own dtype.
    dtype: str | None = None


class RunSettings(BaseModel):
    """The keys of a run's `config.yaml` a merge uses."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: RunModel = Field(default_factory=RunModel)
    # A QLoRA run: only whether there was one matters (the merge never loads the base in 4 bits).
    quantization: dict[str, Any] | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value  # `model:` with nothing under it


def read_run_settings(run_dir: Path) -> RunSettings:
    """The merge's settings from `run_dir/config.yaml`.

    Raises:
        DpoError: The file is not YAML, not a mapping, or a key the merge uses has the wrong type
            (exit code 2).
    """
    from dpo_cli.config.yaml_safe import load_yaml_file

    path = Path(run_dir) / "config.yaml"
    data = load_yaml_file(path)
    if data is None:
        return RunSettings()
    if not isinstance(data, dict):
        raise DpoError(
            f"{path}: expected a mapping of config sections, found {type(data).__name__}", exit_code=EXIT_USAGE
        )
    try:
        return RunSettings.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors()]
        raise DpoError(
            f"{path}: {problems[0]}",
            exit_code=EXIT_USAGE,
            details=[
                *problems[1:],
                "fix the value in the run's config.yaml, or merge the adapter directory with --base",
            ],
        ) from None


def _describe(error: Any) -> str:
    key = ".".join(str(part) for part in error["loc"] if not str(part).startswith(("function-", "dict[")))
    return f"`{key}`: {error['msg'].lower()}, found {error.get('input')!r}"
