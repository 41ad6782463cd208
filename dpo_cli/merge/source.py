"""Where a merge starts: the adapter, the base it goes on and how to load it, from a run or an adapter directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.fsio import read_json_object
from dpo_cli.merge.run_config import RunSettings, read_run_settings
from dpo_cli.rundir import COMPLETE_MARKER

MERGE_DTYPES = ("bfloat16", "float16", "float32")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class MergeSource:
    """What to merge: the adapter, the base it goes on, and how to load that base."""

    adapter_dir: Path
    base: str
    recorded_base: str | None
    revision: str | None = None
    trust_remote_code: bool = False
    run_dtype: str | None = None  # `model.dtype` of the run, when the adapter came from one
    run_dir: Path | None = None
    quantized_run: bool = False


# --------------------------------------------------------------------------- input


def resolve_source(path: Path, base: str | None = None, trust_remote_code: bool | None = None) -> MergeSource:
    """Find the adapter and its base from a run directory or an adapter directory.

    Args:
        path: A run directory (uses `final/`) or a directory holding `adapter_config.json`
            (for example `RUN/checkpoints/checkpoint-N`).
        base: Base model to merge into instead of the one the adapter records.
        trust_remote_code: Overrides the run's setting; None keeps it (False without a run).

    Raises:
        DpoError: The path is neither, the run trained the full model, or the adapter weights
            are missing (a ZeRO-3 save without 16-bit gathering leaves none).
    """
    path = Path(path)
    if not path.is_dir():
        raise DpoError(f"{path}: no such directory", exit_code=EXIT_USAGE)
    run_dir: Path | None = None
    if (path / "config.yaml").is_file() and not (path / "adapter_config.json").is_file():
        run_dir, adapter_dir = path, path / "final"
        if not adapter_dir.is_dir():
            raise DpoError(
                f"{path}: the run has no final/ directory (training did not finish)",
                exit_code=EXIT_USAGE,
                details=[f"merge a checkpoint instead: dpo merge-adapter {path}/checkpoints/checkpoint-N ..."],
            )
        if not (adapter_dir / "adapter_config.json").is_file():
            raise DpoError(
                f"{adapter_dir}: this run trained the full model; final/ is already a complete model, nothing to merge",
                exit_code=EXIT_USAGE,
            )
    elif (path / "adapter_config.json").is_file():
        adapter_dir = path
        # RUN/final and RUN/checkpoints/checkpoint-N sit inside a run whose config we can use.
        for candidate in (path.parent, path.parent.parent):
            if (candidate / "config.yaml").is_file() and (candidate / "run.json").is_file():
                run_dir = candidate
                break
    else:
        raise DpoError(
            f"{path}: neither a run directory (config.yaml + final/) nor a LoRA adapter (adapter_config.json)",
            exit_code=EXIT_USAGE,
        )

    adapter_config = read_json_object(adapter_dir / "adapter_config.json", what="adapter config")
    _check_adapter_weights(adapter_dir)
    if run_dir is not None:
        _check_finished(adapter_dir, run_dir)
    recorded = adapter_config.get("base_model_name_or_path")
    settings = read_run_settings(run_dir) if run_dir else RunSettings()
    run_model = settings.model
    run_base = run_model.name_or_path
    chosen = base or recorded or run_base
    if not chosen:
        raise DpoError(
            f"{adapter_dir}/adapter_config.json records no base model",
            exit_code=EXIT_USAGE,
            details=["name it with --base"],
        )
    # The run's loading settings apply only when merging into the run's own base.
    same_base = run_base is not None and same_model(chosen, run_base)
    run_dtype = run_model.dtype if same_base else None
    return MergeSource(
        adapter_dir=adapter_dir,
        base=chosen,
        recorded_base=recorded or run_base,
        revision=(run_model.revision if same_base else None) or adapter_config.get("revision"),
        trust_remote_code=run_model.trust_remote_code
        if trust_remote_code is None and same_base
        else bool(trust_remote_code),
        run_dtype=run_dtype if run_dtype in MERGE_DTYPES else None,
        run_dir=run_dir,
        quantized_run=bool(settings.quantization),
    )


def _check_adapter_weights(adapter_dir: Path) -> None:
    from dpo_cli.checkpoints import pickle_problem, safetensors_problem

    found = [adapter_dir / name for name in ADAPTER_WEIGHTS if (adapter_dir / name).is_file()]
    if found:
        weights = found[0]
        problem = safetensors_problem(weights) if weights.suffix == ".safetensors" else pickle_problem(weights)
        if problem:
            raise DpoError(
                f"{adapter_dir}: the adapter weights are damaged: {problem}",
                details=["merge an earlier checkpoint (RUN/checkpoints/checkpoint-N), or train the run again"],
            )
        return
    details = []
    if (adapter_dir / "latest").is_file() or any(adapter_dir.glob("global_step*")):
        # Trainer.save_model under ZeRO-3 without 16-bit gathering writes only DeepSpeed's
        # partitioned checkpoint, no adapter weights.
        details = [
            (
                "this is a DeepSpeed ZeRO-3 partitioned checkpoint; train with "
                "`launch.deepspeed.zero3_save_16bit_model: true`, or rebuild the weights with the "
                "zero_to_fp32.py script saved beside it"
            )
        ]
    raise DpoError(f"{adapter_dir}: no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})", details=details)


def _check_finished(adapter_dir: Path, run_dir: Path) -> None:
    """Refuse a run's `final/` or checkpoint whose save did not finish, or whose files changed since.

    `final/` and every checkpoint get a `.complete` marker once their files are on disk. A
    `final/` from before dpo wrote that marker is accepted when the run's `run.json` says
    `completed` (it was written only after `final/`) and its files pass the same checks.
    """
    from dpo_cli.checkpoints import folder_problems
    from dpo_cli.fsio import read_json
    from dpo_cli.rundir import is_complete

    if adapter_dir.parent.name == "checkpoints":
        if not is_complete(adapter_dir):
            raise DpoError(
                f"{adapter_dir}: this checkpoint's save did not finish (no {COMPLETE_MARKER} marker)",
                exit_code=EXIT_USAGE,
                details=["merge a complete one (ls the checkpoints folder for those with a .complete file)"],
            )
    elif not is_complete(adapter_dir):
        try:
            status = read_json(run_dir / "run.json").get("status")
        except (OSError, ValueError, AttributeError):
            status = None
        if status != "completed":
            raise DpoError(
                f"{adapter_dir}: incomplete: the run ended {status or 'without a record'!r} before final/ was "
                f"finished (no {COMPLETE_MARKER} marker)",
                exit_code=EXIT_USAGE,
                details=[
                    (
                        f"resume the run (dpo train ... --resume), or merge a complete checkpoint: "
                        f"dpo merge-adapter {run_dir / 'checkpoints'}/checkpoint-N ..."
                    )
                ],
            )
    problems = folder_problems(adapter_dir)
    if problems:
        raise DpoError(f"{adapter_dir}: damaged since it was saved", details=problems[:5])


def same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()
