"""`dpo train` as a library function: config in, trained run directory out."""

from __future__ import annotations

import functools
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dpo_cli.config.algorithms import algorithm_of, expected_first_loss
from dpo_cli.config.schema import RunConfig
from dpo_cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, DpoError
from dpo_cli.models import quiet_known_noise
from dpo_cli.rundir import (
    REF_CACHE_DIR,
    atomic_write_json,
    atomic_write_text,
    check_run_dir,
    checkpoint_step,
    checkpoints_dir,
    config_inputs,
    init_run_dir,
    mark_complete,
    read_metrics,
    run_lock,
    train_command,
    truncate_metrics,
    undo_start,
    unmark,
)
from dpo_cli.train.diagnose import Finding, diagnose, summarize

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
    from dpo_cli.train.tracking import check_trackers

    check_trackers(cfg.training.report_to)  # before torch: a missing tracker stops the run in a second
    import torch

    from dpo_cli.train.trl_args import launched_without_gpu

    t = cfg.training
    cuda = torch.cuda.is_available() and not t.use_cpu
    if not t.use_cpu and launched_without_gpu() and is_main_process():
        print(
            f"note: no GPU visible: the {os.environ.get('WORLD_SIZE')} processes train on the CPU "
            "(as with `training.use_cpu: true`)",
            file=sys.stderr,
            flush=True,
        )
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
                ("put back the config.yaml the run was started with (it is the resolved config), "
                 "or start over with --overwrite"),
            ],
        )
    saved = load_yaml_file(saved_path)
    if not isinstance(saved, dict):
        raise DpoError(f"{saved_path}: not a run config (expected a mapping)", exit_code=EXIT_USAGE)
    saved = _flatten(saved)
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
    """The exact `dpo train ... --resume` line for this run, quoted for a POSIX shell."""
    return train_command(config_path, overrides, "--resume")


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
    exclusions: Any = None,
) -> BuiltRun:
    """Load data, tokenizer and models, and build the `DPOTrainer` exactly as `dpo train` runs it.

    Args:
        cfg: The run config.
        metrics_path: Where `metrics.jsonl` is appended.
        extra_callbacks: More Trainer callbacks.
        policy: An already loaded base model to train instead of loading `model.name_or_path`
            (a sweep loads it once for all its points). It must be what `load_policy` returns.
        ref_logps_cache: Folder where precomputed reference log-probs are shared between runs
            with the same data and starting model (see `dpo_cli.train.ref_cache`). A training run (its
            metrics go into its run directory) keeps them in `<output_dir>/ref_logps/` by default.
        exclusions: Rows the data check dropped (`DataCheck.excluded`); None reads the run
            directory's `data/excluded.json` (a resumed run, `dpo eval`). The main rank's value is
            every rank's.
    """
    quiet_known_noise()
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from dpo_cli.data import load_preference_data, read_exclusions
    from dpo_cli.models import load_policy, load_reference, load_tokenizer
    from dpo_cli.train import speed
    from dpo_cli.train.callbacks import CheckpointMarker, GracefulStop, MetricsWriter, NanGuard, ProgressBar
    from dpo_cli.train.trl_args import to_lora_config, to_trainer_config, trainer_kwargs

    algorithm = algorithm_of(cfg)  # which TRL trainer and config class (DPO, KTO, ORPO, CPO/SimPO)
    args = to_trainer_config(cfg, checkpoints_dir(Path(cfg.output_dir)))
    if exclusions is None:
        exclusions = read_exclusions(Path(cfg.output_dir), cfg.data)
    # Only the main rank checked the data, and nothing is written into the run directory before the
    # inputs load, so its rows to leave out reach the other ranks over the process group.
    exclusions = _from_main_rank(exclusions, args)
    # Rank 0 reads the files into the datasets cache first; the other ranks then reuse that cache
    # instead of each parsing the data at once (TRL tokenizes the same way).
    with args.main_process_first(local=False, desc="load data"), args.main_process_first(desc="load data"):
        data = load_preference_data(cfg.data, unpaired=not algorithm.paired, excluded=exclusions)
    tokenizer = load_tokenizer(cfg)
    policy = policy if policy is not None else load_policy(cfg)
    reference = load_reference(cfg, precomputed=speed.precompute_choice(cfg)[0]) if algorithm.reference else None
    peft_config = to_lora_config(cfg.lora) if cfg.lora is not None else None
    guard, stop = NanGuard(), GracefulStop()
    if ref_logps_cache is None and metrics_path.parent == Path(cfg.output_dir):
        ref_logps_cache = Path(cfg.output_dir) / REF_CACHE_DIR  # reused by --resume
    # Length-grouped batches, padding-free pairs and the cached reference precompute (dpo_cli.train.speed).
    trainer_cls = speed.trainer_class(algorithm.trainer_class(), cfg, ref_logps_cache)
    trainer = trainer_cls(
        model=policy,
        **trainer_kwargs(cfg, reference),
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[
            MetricsWriter(metrics_path), guard, stop, CheckpointMarker.taking_over_rotation(args), *(extra_callbacks or [])
        ],
    )
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(ProgressBar())
    return BuiltRun(trainer=trainer, data=data, tokenizer=tokenizer, guard=guard, stop=stop)


def _from_main_rank(value: Any, args: Any) -> Any:
    """`value` as the main process has it, on every rank of a multi-process run."""
    if args.world_size <= 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


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

    Nothing is written into `output_dir` until the inputs have loaded (and, on `--resume`, the
    checkpoint has been restored), so a failed or interrupted start leaves it as it was. From
    then on `run.json` says how the run ended (see `dpo_cli.train.run_record`).

    Raises:
        DpoError: The run directory is taken or in use, inputs are unusable, training diverged
            (NaN), a write failed (full disk), or the run was interrupted (exit code 130; the
            message says which checkpoint was kept).
    """
    from dpo_cli.interrupts import RunInterrupted, RunSignals

    output_dir = Path(cfg.output_dir)
    main = is_main_process()
    created = not output_dir.exists()
    metrics_path = output_dir / "metrics.jsonl"
    protected = config_inputs(cfg.model_dump(mode="json"), config_path)
    resume_from: Path | None = None
    with RunSignals() as signals:
        try:
            if main:
                check_run_dir(output_dir, overwrite=overwrite, resume=resume, protected=protected)
                if resume:
                    check_resume_compatible(cfg, output_dir)
            resume_from = _resume_checkpoint(cfg, output_dir, warn=main) if resume else None
            preflight(cfg)
            built = build_trainer(
                cfg,
                metrics_path,
                policy=policy,
                ref_logps_cache=ref_logps_cache,
                exclusions=data_check.excluded if data_check is not None else None,
            )
        except BaseException as exc:
            if main and not resume:
                undo_start(output_dir, created=created)  # only empty folders this start made
            failure = _failed_start(exc, resume_from, resume_command(config_path, overrides or []) if resume else None)
            if failure is exc:
                raise
            raise failure from None
        trainer, data, guard, stop = built.trainer, built.data, built.guard, built.stop
        from dpo_cli.train.tracking import route_logs

        route_logs(trainer, output_dir)

        from dpo_cli.train.run_record import RunRecord

        record = RunRecord(
            output_dir,
            {
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
            },
            main=main,
            resume_command=resume_command(config_path, overrides or []),
            restart_command=train_command(config_path, overrides or [], "--overwrite"),
        )

        def begin() -> None:
            """What a started run writes: the old run replaced, the abandoned checkpoints cleared, the record."""
            if not main:
                record.begun = True
                return
            init_run_dir(output_dir, overwrite=overwrite, resume=resume, protected=protected)
            record.begun = True  # from here on the folder is this run's, and run.json tells how it ended
            if data_check is not None:
                data_check.save(output_dir)  # every rank, and a later `dpo eval`, leaves out the same rows
            if resume_from is not None:
                from dpo_cli.checkpoints import set_aside_after

                for note in set_aside_after(output_dir, resume_from):
                    print(f"note: {note}", file=sys.stderr, flush=True)
                truncate_metrics(metrics_path, checkpoint_step(resume_from))
            atomic_write_text(output_dir / "config.yaml", config_to_yaml(cfg))
            record.write("running")

        from dpo_cli.train.callbacks import NoStepPastTheEnd, OnTrainingStart, TrainingAlreadyDone

        started = OnTrainingStart.install(trainer, begin)
        trainer.add_callback(NoStepPastTheEnd())
        try:
            if resume_from is None:
                started.run()
            try:
                trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
            except TrainingAlreadyDone:
                trainer.callback_handler.on_train_end(trainer.args, trainer.state, trainer.control)
            started.run()  # a resume with no step left to train
            signals.phase = "finishing"
            if guard.tripped is not None:
                step, key = guard.tripped
                raise DpoError(
                    f"training stopped at step {step}: `{key}` became NaN/inf",
                    details=[
                        "lower training.learning_rate, or use bf16 instead of fp16 (fp16 overflows)",
                        "check the data for empty responses (dpo validate-data)",
                        f"metrics so far: {metrics_path}",
                    ],
                )
            if stop.stopped:
                signals.phase = "closing"
                raise record.stopped(trainer.state.global_step)
            result = _finish_run(cfg, built, record, starts_at_reference, config_path, overrides, data_check)
        except BaseException as exc:
            interrupted = isinstance(exc, RunInterrupted)
            phase = exc.phase if interrupted else signals.phase
            signals.phase = "closing"
            if not record.begun:  # a resume that failed to restore its checkpoint, or a refused replacement
                if main and not resume:
                    undo_start(output_dir, created=created)
                failure = _failed_start(exc, resume_from, record.resume_command if resume else None)
                if failure is exc:
                    raise
                raise failure from None
            if interrupted:
                raise record.interrupted(trainer.state.global_step, phase) from None
            error = record.failed(exc, trainer.state.global_step, phase)
            if error is None:
                raise
            raise error from None
    return result


def _resume_checkpoint(cfg: RunConfig, output_dir: Path, *, warn: bool) -> Path:
    """The verified checkpoint to resume from; warnings name each newer one that failed its check."""
    from dpo_cli.checkpoints import choose_resume_checkpoint

    checkpoint, warnings = choose_resume_checkpoint(output_dir, needs_optimizer=not cfg.training.save_only_model)
    if warn:
        for line in warnings:
            print(f"warning: {line}", file=sys.stderr, flush=True)
    return checkpoint


def _failed_start(exc: BaseException, checkpoint: Path | None, resume: str | None) -> BaseException:
    """What to raise for a start that ended before it wrote anything (`resume`: the resume command, if resuming).

    A signal becomes a clear exit-130 message; a checkpoint that passed its check but failed to
    load becomes a clear error. Anything else is raised as it is.
    """
    from dpo_cli.interrupts import RunInterrupted

    if isinstance(exc, RunInterrupted):
        if resume:
            return DpoError("interrupted before the resumed run started; the run is unchanged",
                            exit_code=EXIT_INTERRUPTED, details=[f"resume with: {resume}"])
        return DpoError("interrupted before training started; nothing was written, so there is nothing to resume",
                        exit_code=EXIT_INTERRUPTED, details=["run the same command again to start"])
    loading = (OSError, EOFError, ValueError, RuntimeError, KeyError)
    if checkpoint is None or isinstance(exc, DpoError) or not isinstance(exc, loading):
        return exc
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return DpoError(
        f"{checkpoint}: could not be loaded to resume: {type(exc).__name__}: {first}",
        details=[
            "the run directory is unchanged",
            ("if the config changed how the model is built (lora, quantization), put it back; "
             "else move this checkpoint aside and resume from the one before"),
        ],
    )


def _finish_run(
    cfg: RunConfig,
    built: BuiltRun,
    record: Any,
    starts_at_reference: bool,
    config_path: str | None,
    overrides: list[str] | None,
    data_check: Any,
) -> RunResult:
    """After the last step: held-out evaluation, `final/` (marked complete), summary, plots, model card and
    report, `completed`, then the push to the Hub when `push_to_hub` asks for it."""
    trainer, data = built.trainer, built.data
    output_dir = Path(cfg.output_dir)
    main = is_main_process()
    metrics_path = output_dir / "metrics.jsonl"
    expected = expected_first_loss(cfg) if starts_at_reference else None
    final_dir = output_dir / "final"
    by_source = None
    if data.eval is not None:
        record.target = (metrics_path, "held-out evaluation record")
        trainer.evaluate()
        if data.eval_sources:
            from dpo_cli.evaluation.by_source import evaluate_by_source

            by_source = evaluate_by_source(trainer, data.eval_sources, built.tokenizer)
    record.target = (final_dir, "final model")
    if main and final_dir.is_dir():
        unmark(final_dir)  # a resumed run writes final/ again; an old marker must not vouch for the mix
    # Without `_internal_call`, save_model would push `checkpoints/` with TRL's card; `push_final` pushes final/.
    trainer.save_model(str(final_dir), _internal_call=True)
    if main:
        built.tokenizer.save_pretrained(str(final_dir))
        mark_complete(final_dir)
    records = read_metrics(metrics_path)
    summary = summarize(records)
    findings = diagnose(records, expected_loss=expected)
    plots: list[Path] = []
    if main:
        from dpo_cli.publish.record import provenance
        from dpo_cli.train.plots import write_plots

        record.target = (output_dir / "plots", "plots")
        plots = write_plots(records, output_dir / "plots", expected_loss=expected)
        summary.update(
            {
                "mode": cfg.mode,
                "expected_initial_loss": expected,
                "final_dir": str(final_dir),
                "metrics": str(metrics_path),
                "plots": [str(p) for p in plots],
                "diagnosis": [{"level": f.level, "message": f.message} for f in findings],
                "provenance": provenance(cfg, trainer.args, config_path=config_path, overrides=overrides),
                "data": _data_summary(data, data_check, output_dir),
            }
        )
        if by_source is not None:
            summary["eval_by_source"] = by_source
        record.target = (output_dir / "summary.json", "summary")
        atomic_write_json(output_dir / "summary.json", summary)
        from dpo_cli.publish import refresh_run_documents

        record.target = (final_dir / "README.md", "model card and report.html")
        refresh_run_documents(output_dir)  # final/README.md (the model card) and report.html
        record.target = (output_dir / "run.json", "run record")
        record.write("completed", final_complete=True)
        if trainer.args.push_to_hub:
            from dpo_cli.publish.hub import push_final

            push_final(trainer, final_dir)
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
