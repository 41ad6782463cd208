"""`dpo train` as a library function: config in, trained run directory out."""

from __future__ import annotations

import functools
import os
import platform
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dpo_cli.algorithms import expected_first_loss
from dpo_cli.config.schema import RunConfig
from dpo_cli.diagnose import Finding, diagnose, summarize
from dpo_cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, DpoError
from dpo_cli.rundir import (
    atomic_write_json,
    atomic_write_text,
    check_run_dir,
    checkpoint_step,
    checkpoints_dir,
    holds_run,
    init_run_dir,
    latest_checkpoint,
    read_json,
    read_metrics,
    run_lock,
    truncate_metrics,
)

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
}


@dataclass
class RunResult:
    output_dir: Path
    final_dir: Path
    summary: dict[str, Any]
    findings: list[Finding]
    plots: list[Path] = field(default_factory=list)
    model: Any = field(default=None, repr=False)  # the trained model object, for callers that reuse it


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def config_to_yaml(cfg: RunConfig) -> str:
    data = cfg.model_dump(mode="json", exclude_unset=False)
    data["training"] = cfg.training_overrides()
    return yaml.safe_dump(data, sort_keys=False)


def preflight(cfg: RunConfig) -> None:
    """Hardware checks, separate from config validation so configs validate on a laptop."""
    import torch

    t = cfg.training
    cuda = torch.cuda.is_available() and not t.use_cpu
    if t.fp16 and not cuda:
        raise DpoError("training.fp16 needs a CUDA GPU; none is in use here (set `fp16: false`)", exit_code=EXIT_USAGE)
    bf16 = t.bf16 if t.bf16 is not None else not t.fp16
    if bf16 and cuda and not torch.cuda.is_bf16_supported():
        raise DpoError(
            f"training.bf16: {torch.cuda.get_device_name()} has no bfloat16 support",
            exit_code=EXIT_USAGE,
            details=["set `training.fp16: true` and `training.bf16: false` (pre-Ampere GPUs)"],
        )
    if cfg.quantization is not None:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise DpoError("quantization needs bitsandbytes: pip install bitsandbytes", exit_code=EXIT_USAGE) from None


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def check_resume_compatible(cfg: RunConfig, output_dir: Path) -> None:
    saved_path = output_dir / "config.yaml"
    if not saved_path.exists():
        return
    saved = _flatten(yaml.safe_load(saved_path.read_text()) or {})
    current = _flatten(yaml.safe_load(config_to_yaml(cfg)))
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        raise DpoError(
            f"{output_dir}: the config differs from the run being resumed",
            exit_code=EXIT_USAGE,
            details=[f"{k}: was {saved.get(k)!r}, now {current.get(k)!r}" for k in changed],
        )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "deepspeed"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def resume_command(config_path: str | None, overrides: list[str]) -> str:
    parts = ["dpo", "train", config_path or "CONFIG", *[f"--set {shlex.quote(o)}" for o in overrides], "--resume"]
    return " ".join(parts)


@dataclass
class BuiltRun:
    """A ready DPOTrainer and what was built for it."""

    trainer: Any
    data: Any
    tokenizer: Any
    guard: Any
    stop: Any


def build_trainer(
    cfg: RunConfig,
    metrics_path: Path,
    extra_callbacks: list[Any] | None = None,
    policy: Any = None,
    ref_logps_cache: Path | None = None,
) -> BuiltRun:
    """Load data, tokenizer and models, and build the `DPOTrainer` exactly as `dpo train` runs it.

    Args:
        cfg: The run config.
        metrics_path: Where `metrics.jsonl` is appended.
        extra_callbacks: More Trainer callbacks.
        policy: An already loaded base model to train instead of loading `model.name_or_path`
            (a sweep loads it once for all its points). It must be what `load_policy` returns.
        ref_logps_cache: Folder where precomputed reference log-probs are shared between runs
            with the same data and starting model (see `dpo_cli.ref_cache`).
    """
    quiet_known_noise()
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from dpo_cli.algorithms import algorithm_of, to_trainer_config, trainer_kwargs
    from dpo_cli.build import load_policy, load_reference, load_tokenizer, to_lora_config
    from dpo_cli.callbacks import CheckpointMarker, GracefulStop, MetricsWriter, NanGuard, ProgressBar
    from dpo_cli.data import load_preference_data, read_exclusions

    algorithm = algorithm_of(cfg)  # which TRL trainer and config class (DPO, KTO, ORPO, CPO/SimPO)
    args = to_trainer_config(cfg, checkpoints_dir(Path(cfg.output_dir)))
    # Rank 0 reads the files into the datasets cache first; the other ranks then reuse that cache
    # instead of each parsing the data at once (TRL tokenizes the same way).
    # The rows the data check dropped (written into the run directory by the main rank before this).
    with args.main_process_first(local=False, desc="load data"), args.main_process_first(desc="load data"):
        excluded = read_exclusions(Path(cfg.output_dir), cfg.data)
        data = load_preference_data(cfg.data, unpaired=not algorithm.paired, excluded=excluded)
    tokenizer = load_tokenizer(cfg)
    policy = policy if policy is not None else load_policy(cfg)
    reference = load_reference(cfg) if algorithm.reference else None
    peft_config = to_lora_config(cfg.lora) if cfg.lora is not None else None
    guard, stop = NanGuard(), GracefulStop()
    trainer_cls = algorithm.trainer_class()
    if ref_logps_cache is not None and cfg.algorithm == "dpo":
        from dpo_cli.ref_cache import shared_ref_trainer_class

        trainer_cls = shared_ref_trainer_class(ref_logps_cache)
    trainer = trainer_cls(
        model=policy,
        **trainer_kwargs(cfg, reference),
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[MetricsWriter(metrics_path), guard, stop, CheckpointMarker(), *(extra_callbacks or [])],
    )
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(ProgressBar())
    return BuiltRun(trainer=trainer, data=data, tokenizer=tokenizer, guard=guard, stop=stop)


def _in_run_scope(train_fn: Any) -> Any:
    """Hold the run directory's lock on the main rank for the whole run (see `rundir.run_lock`), and
    tear down torch.distributed when a launched run ends, however it ends."""

    @functools.wraps(train_fn)
    def wrapper(cfg: RunConfig, **kwargs: Any) -> RunResult:
        try:
            if not is_main_process():
                return train_fn(cfg, **kwargs)
            with run_lock(Path(cfg.output_dir)):
                return train_fn(cfg, **kwargs)
        finally:
            close_process_group()

    return wrapper


def close_process_group() -> None:
    """Tear down torch.distributed before the interpreter exits.

    Left to interpreter shutdown, gloo's worker threads can be destroyed while still joinable,
    and the process dies with `terminate called without an active exception` (SIGABRT) after a
    run that succeeded. Training has no collectives left once `train` returns on this rank.
    """
    import torch.distributed as dist

    # Only in a launched multi-process run, where this process trains once and exits; one process
    # training several runs (a sweep) keeps accelerate's state, which owns the group.
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@_in_run_scope
def train(
    cfg: RunConfig,
    *,
    overwrite: bool = False,
    resume: bool = False,
    config_path: str | None = None,
    overrides: list[str] | None = None,
    policy: Any = None,
    ref_logps_cache: Path | None = None,
    starts_at_reference: bool = True,
    data_check: Any = None,
) -> RunResult:
    """Train as configured and leave a complete run directory.

    `starts_at_reference` false says the policy deliberately starts away from its reference
    (a later round of `dpo iterate`), so the first loss is not checked against its closed form.
    `data_check` is what `dpo_cli.validation.check_before_training` found: the rows it dropped
    are saved into the run directory (`data/`) and left out by every rank.

    Raises:
        DpoError: The run directory is taken or in use, inputs are unusable, training diverged
            (NaN) or was interrupted (exit code 130, after saving a checkpoint).
    """
    output_dir = Path(cfg.output_dir)
    main = is_main_process()
    if main:
        check_run_dir(output_dir, overwrite=overwrite, resume=resume)
        if resume:
            check_resume_compatible(cfg, output_dir)
    preflight(cfg)

    metrics_path = output_dir / "metrics.jsonl"
    resume_from = latest_checkpoint(output_dir) if resume else None
    fresh = main and not resume and not holds_run(output_dir)
    if main:
        init_run_dir(output_dir, overwrite=overwrite, resume=resume)
        atomic_write_text(output_dir / "config.yaml", config_to_yaml(cfg))
        if data_check is not None:
            data_check.save(output_dir)
        if resume_from is not None:
            truncate_metrics(metrics_path, checkpoint_step(resume_from))
    try:
        built = build_trainer(cfg, metrics_path, policy=policy, ref_logps_cache=ref_logps_cache)
    except BaseException:
        # A typo in a model path must not leave a run directory that the next attempt refuses.
        if fresh or (main and overwrite):
            shutil.rmtree(output_dir, ignore_errors=True)
        raise
    trainer, data, guard, stop = built.trainer, built.data, built.guard, built.stop

    run_info = {
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "mode": cfg.mode,
        "config": config_path,
        "resumed_from": str(resume_from) if resume_from else None,
        "train_rows": len(data.train),
        "eval_rows": len(data.eval) if data.eval is not None else 0,
        "data_format": data.format,
        # Rows per source (converted, then taken by fraction/max_samples) and what the data check dropped.
        "data": {"sources": data.sources, **({"check": data_check.summary} if data_check is not None else {})},
        # Where precomputed reference log-probs came from: {"train": "computed" | "reused", ...}
        "ref_logps": getattr(trainer, "ref_logps_source", None),
        "versions": _versions(),
    }
    if main:
        atomic_write_json(output_dir / "run.json", run_info)

    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    expected = expected_first_loss(cfg) if starts_at_reference else None
    if guard.tripped is not None:
        step, key = guard.tripped
        _finish(output_dir, run_info, "failed", main)
        raise DpoError(
            f"training stopped at step {step}: `{key}` became NaN/inf",
            details=[
                "lower training.learning_rate, or use bf16 instead of fp16 (fp16 overflows)",
                "check the data for empty responses (dpo validate-data)",
                f"metrics so far: {metrics_path}",
            ],
        )
    if stop.stopped:
        _finish(output_dir, run_info, "interrupted", main)
        raise DpoError(
            f"interrupted at step {trainer.state.global_step}; checkpoint saved in {checkpoints_dir(output_dir)}",
            exit_code=EXIT_INTERRUPTED,
            details=[f"resume with: {resume_command(config_path, overrides or [])}"],
        )

    final_dir = output_dir / "final"
    by_source = None
    if data.eval is not None:
        trainer.evaluate()
        if data.eval_sources:
            from dpo_cli.evaluation.by_source import evaluate_by_source

            by_source = evaluate_by_source(trainer, data.eval_sources, built.tokenizer)
    trainer.save_model(str(final_dir))
    if main:
        built.tokenizer.save_pretrained(str(final_dir))
    records = read_metrics(metrics_path)
    summary = summarize(records)
    findings = diagnose(records, expected_loss=expected)
    plots: list[Path] = []
    if main:
        from dpo_cli.plots import write_plots

        plots = write_plots(records, output_dir / "plots", expected_loss=expected)
        summary.update(
            {
                "mode": cfg.mode,
                "expected_initial_loss": expected,
                "final_dir": str(final_dir),
                "metrics": str(metrics_path),
                "plots": [str(p) for p in plots],
                "diagnosis": [{"level": f.level, "message": f.message} for f in findings],
                "data": _data_summary(data, data_check, output_dir),
            }
        )
        if by_source is not None:
            summary["eval_by_source"] = by_source
        atomic_write_json(output_dir / "summary.json", summary)
        _finish(output_dir, run_info, "completed", main)
    return RunResult(
        output_dir=output_dir, final_dir=final_dir, summary=summary, findings=findings, plots=plots, model=trainer.model
    )


def _data_summary(data: Any, data_check: Any, output_dir: Path) -> dict[str, Any]:
    """Rows trained on, per source, and what the data check dropped (listed in `data/rejects.jsonl`)."""
    out: dict[str, Any] = {"train_rows": len(data.train), "eval_rows": len(data.eval) if data.eval is not None else 0,
                           "sources": data.sources}
    if data_check is not None:
        out["dropped"] = {name: {"rows": s["rows"], "dropped": s["dropped"], "dropped_by": s["dropped_by"]}
                          for name, s in data_check.summary.items()}
        out["rejects"] = str(output_dir / "data" / "rejects.jsonl")
    return out


def quiet_known_noise() -> None:
    """Silence warnings that are harmless in this setup, so the ones that matter stay visible."""
    import logging
    import warnings

    # bitsandbytes' CPU backend looks for an optional kernels package on import and logs its absence.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    for pattern in (
        r".*is_gradient_checkpointing.*is deprecated",  # transformers 5 internal rename, not ours to fix
        r".*'pin_memory' argument is set as true but no accelerator",  # CPU runs
        r".*fan_in_fan_out is set to False but the target module is `Conv1D`",  # GPT-2 style layers, PEFT fixes it
    ):
        warnings.filterwarnings("ignore", message=pattern)


def _finish(output_dir: Path, run_info: dict[str, Any], status: str, main: bool) -> None:
    if not main:
        return
    info = {**run_info, "status": status, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = output_dir / "run.json"
    if path.exists():
        info = {**read_json(path), **info}
    atomic_write_json(path, info)

