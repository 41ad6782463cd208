"""Build the TRL trainer of a run exactly as `dpo train` runs it: data, tokenizer, models, TRL config,
callbacks, and dpo's batch order, packing and reference cache mixed into the algorithm's trainer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_cli.config.algorithms import algorithm_of
from dpo_cli.models import quiet_known_noise
from dpo_cli.rundir import REF_CACHE_DIR, checkpoints_dir

if TYPE_CHECKING:
    from dpo_cli.config.schema import RunConfig


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
            MetricsWriter(metrics_path),
            guard,
            stop,
            CheckpointMarker.taking_over_rotation(args),
            *(extra_callbacks or []),
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
