"""`dpo train` as a library function: config in, trained run directory out."""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpo_cli.config.algorithms import expected_first_loss
from dpo_cli.config.loader import config_to_yaml
from dpo_cli.config.schema import RunConfig
from dpo_cli.doctor import RUN_PACKAGES, installed_versions, preflight
from dpo_cli.errors import EXIT_INTERRUPTED, DpoError
from dpo_cli.fsio import atomic_write_json, atomic_write_text
from dpo_cli.rundir import (
    check_run_dir,
    checkpoint_step,
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
from dpo_cli.train.launch import close_process_group, is_main_process, wait_for_all_ranks
from dpo_cli.train.resume import check_resume_compatible, resume_command
from dpo_cli.train.tracking import check_trackers
from dpo_cli.train.trainer import BuiltRun, build_trainer


@dataclass
class RunResult:
    output_dir: Path
    final_dir: Path
    summary: dict[str, Any]
    findings: list[Finding]
    plots: list[Path] = field(default_factory=list)
    model: Any = field(default=None, repr=False)  # the trained model object, for callers that reuse it


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
            check_trackers(cfg.training.report_to)  # before torch: a missing tracker stops the run in a second
            preflight(cfg, main=main)
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
                "versions": installed_versions(RUN_PACKAGES),
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
            return DpoError(
                "interrupted before the resumed run started; the run is unchanged",
                exit_code=EXIT_INTERRUPTED,
                details=[f"resume with: {resume}"],
            )
        return DpoError(
            "interrupted before training started; nothing was written, so there is nothing to resume",
            exit_code=EXIT_INTERRUPTED,
            details=["run the same command again to start"],
        )
    loading = (OSError, EOFError, ValueError, RuntimeError, KeyError)
    if checkpoint is None or isinstance(exc, DpoError) or not isinstance(exc, loading):
        return exc
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return DpoError(
        f"{checkpoint}: could not be loaded to resume: {type(exc).__name__}: {first}",
        details=[
            "the run directory is unchanged",
            (
                "if the config changed how the model is built (lora, quantization), put it back; "
                "else move this checkpoint aside and resume from the one before"
            ),
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
    # Every rank stays until the main rank has written the run: a rank that ended sooner could not
    # take the main one down with it (see `exit_worker_rank`). The push comes after: it has no
    # time bound, and the barrier has the process group's timeout.
    wait_for_all_ranks()
    if main and trainer.args.push_to_hub:
        from dpo_cli.publish.hub import push_final

        push_final(trainer, final_dir)
    return RunResult(
        output_dir=output_dir, final_dir=final_dir, summary=summary, findings=findings, plots=plots, model=trainer.model
    )


def _data_summary(data: Any, data_check: Any, output_dir: Path) -> dict[str, Any]:
    """Rows trained on, per source, and what the data check dropped (listed in `data/rejects.jsonl`)."""
    out: dict[str, Any] = {
        "train_rows": len(data.train),
        "eval_rows": len(data.eval) if data.eval is not None else 0,
        "sources": data.sources,
    }
    if data_check is not None:
        out["dropped"] = {
            name: {"rows": s["rows"], "dropped": s["dropped"], "dropped_by": s["dropped_by"]}
            for name, s in data_check.summary.items()
        }
        out["rejects"] = str(output_dir / "data" / "rejects.jsonl")
    return out


def train_or_launch(
    cfg: RunConfig,
    *,
    config_path: str,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    validate: bool = True,
    strict: bool = False,
    data_check: str | Path | None = None,
    starts_at_reference: bool = True,
) -> RunResult | None:
    """Train in this process, or re-run `dpo train` under `accelerate launch` when the config asks for ranks.

    The data is checked once, here, before any rank is spawned (on node 0 of several): a bad file
    fails in seconds with one message, and the launched ranks read the check saved in
    `output_dir/launch/` (kept by `--overwrite`) instead of checking again. Inside a launched run only the main
    rank checks; the others read the rows it dropped from the run directory.

    Args:
        cfg: The validated run config.
        config_path: The config file; the launched ranks load it again with `overrides`.
        overrides: `--set` strings that make `cfg` from `config_path` (for the ranks and the resume message).
        overwrite: Replace an earlier run in `output_dir`.
        resume: Continue the run in `output_dir`.
        validate: Check the data first (`--skip-validation` turns it off).
        strict: Stop on any row with an error instead of dropping it.
        data_check: A folder holding a check saved earlier (sweep, iterate), used instead of checking.
        starts_at_reference: False when the policy deliberately starts away from its reference.

    Returns:
        The run's result in this process; None after a launch (its ranks print their own summary).

    Raises:
        DpoError: The run directory is taken, the data cannot train, or the run (or launch) failed.
    """
    from dpo_cli.train import launch

    overrides = list(overrides or [])
    if launch.needs_launcher(cfg):

        def check_for_the_ranks() -> list[str]:
            # Under the run directory's lock, after its check (a second launch cannot overwrite the files).
            from dpo_cli.validation import check_before_training

            folder = launch.launch_dir(cfg)
            check_before_training(cfg, config_path, strict=strict).save(folder)
            return ["--data-check", str(folder)]

        args = launch.train_args(
            config_path,
            overrides,
            overwrite=overwrite,
            resume=resume,
            skip_validation=not validate,
            strict=strict,
            data_check=None if data_check is None else str(data_check),
        )
        # Only node 0's launcher has the main rank below it (`launch` runs `prepare` there only).
        prepare = check_for_the_ranks if data_check is None and validate else None
        launch.launch(cfg, args, overwrite=overwrite, resume=resume, prepare=prepare)  # returns 0 or raises
        return None
    check = None
    if is_main_process():
        if data_check is not None:
            from dpo_cli.validation import DataCheck

            check = DataCheck.load(Path(data_check), cfg.data)
        elif validate:
            check = _check_data(cfg, config_path, overwrite=overwrite, resume=resume, strict=strict)
    return train(
        cfg,
        overwrite=overwrite,
        resume=resume,
        config_path=config_path,
        overrides=overrides,
        starts_at_reference=starts_at_reference,
        data_check=check,
    )


def _check_data(cfg: RunConfig, config_path: str, *, overwrite: bool, resume: bool, strict: bool) -> Any:
    """The run directory refusal first (the cheapest), then the data check, before any model is loaded."""
    from dpo_cli.validation import check_before_training

    protected = config_inputs(cfg.model_dump(mode="json"), config_path)
    check_run_dir(Path(cfg.output_dir), overwrite=overwrite, resume=resume, protected=protected)
    return check_before_training(cfg, config_path, strict=strict)
