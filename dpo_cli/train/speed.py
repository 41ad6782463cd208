"""How `dpo train` spends less compute on padding than plain TRL, decided per run and logged.

Three things, each with a switch under `training:` (TRL/transformers names, our defaults):

- `train_sampling_strategy: group_by_length` (dpo's default; TRL's is `random`): batches of
  pairs of similar length, shuffled mega-batches reproducible for a seed (`dpo_cli.train.batching`);
  evaluation and the reference precompute run sorted by length;
- `padding_free` (unset: on where it applies and was measured to pay): a DPO batch's sequences run
  packed, without padding (`dpo_cli.train.packing`), where the model and attention kernel support packed
  rows, and with SDPA/eager/flex only on length-grouped batches (see `padding_free_choice`);
- `precompute_ref_log_probs` (unset: dpo decides): reference log-probs computed once, sorted by
  length, and kept in a content-keyed cache that resumes and sweep points reuse
  (`dpo_cli.train.ref_cache`; see `precompute_choice`).

Where one cannot apply (an algorithm whose trainer is not wrapped, a model or kernel without
packed-sequence support, rows with no known length columns) the run falls back to padded,
length-grouped batches and says so on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_cli.config.algorithms import algorithm_of

if TYPE_CHECKING:
    from dpo_cli.config.schema import RunConfig


def note(message: str) -> None:
    """One line of the run's log about how it is batched (main process only)."""
    import os

    if os.environ.get("RANK", "0") == "0":
        print(f"speed: {message}", file=sys.stderr, flush=True)


def precompute_choice(cfg: RunConfig) -> tuple[bool, str]:
    """Whether the reference log-probs are precomputed, and why.

    An explicit `training.precompute_ref_log_probs` wins. Unset, DPO precomputes where it was
    measured to win (README, "Speed"; scripts/bench_precompute.py): with full fine-tuning (the
    second copy of the model is never loaded: 533 MiB less for SmolLM2-135M) and for more than
    two epochs (each epoch after the first skips the reference forward: 15% faster at 4 epochs).
    With LoRA, or a separate reference model (which TRL keeps loaded either way), for one or two
    epochs the two cost the same within a few percent, and online starts training sooner.
    """
    t = cfg.training
    if "precompute_ref_log_probs" in t.model_fields_set:
        value = bool(t.precompute_ref_log_probs)
        return value, "set in the config"
    if not algorithm_of(cfg).packs or cfg.reference.kind == "none":
        return False, f"`algorithm: {cfg.algorithm}` keeps TRL's default"
    if getattr(t, "sync_ref_model", None):
        return False, "`sync_ref_model` updates the reference during training"
    if cfg.mode == "full" and cfg.reference.kind == "policy":
        return True, "full fine-tuning: no second copy of the model is loaded as the reference"
    if t.max_steps in (None, -1) and t.num_train_epochs > 2:
        return True, f"{t.num_train_epochs:g} epochs: the reference forward runs once instead of every epoch"
    return False, "LoRA for up to two epochs: online costs as much and starts training sooner"


def padding_free_choice(cfg: RunConfig, model: Any) -> tuple[bool, str]:
    """Whether a DPO batch runs packed (padding-free) on `model`, and why.

    Packed rows never hold more tokens, nor more attention pairs, than the padded batch (see
    `dpo_cli.train.packing.row_width`). With a variable-length kernel (FlashAttention) they are the
    default wherever they apply. With kernels that compute the whole mask (SDPA, eager, flex)
    they are the default on length-grouped batches only: measured on the CPU, packing was as fast
    or faster there (padded / packed 0.89-1.31, median 1.06 at batch sizes 4-16) and slower on
    random batches (0.84-0.99), `scripts/bench_padding_free.py`, docs/speed.md.

    Args:
        cfg: The run config.
        model: The loaded policy (PEFT's base model or the model itself).
    """
    from dpo_cli.train import packing

    t = cfg.training
    explicit = getattr(t, "padding_free", None)
    if not algorithm_of(cfg).packs:
        return False, f"TRL's {cfg.algorithm.upper()} trainer is not wrapped for packing; padded batches"
    reason = packing.unsupported_reason(model)
    if reason is not None:
        return False, f"{reason}; padded batches"
    attn = model.config._attn_implementation
    if explicit is not None:
        return bool(explicit), "set in the config"
    if attn in packing.VARLEN_ATTENTION:
        return True, f"{attn}: one packed row through its variable-length kernels"
    if t.train_sampling_strategy != "group_by_length":
        return False, (
            f"{attn} with {t.train_sampling_strategy} batches: packed rows measured slower than padded ones "
            "there; padded batches (set training.padding_free: true to pack anyway)"
        )
    # Rows as wide as the longest sequence: never more tokens, nor more attention, than the padded batch.
    return True, f"{attn}: sequences packed into rows as wide as the batch's longest"


def trainer_class(base: type, cfg: RunConfig, ref_cache: Path | None) -> type:
    """`base` (a TRL trainer class) with dpo's batch order, packing and reference cache mixed in."""
    mixins: list[type] = [LengthAwareBatches]
    if algorithm_of(cfg).packs:
        mixins.insert(0, FasterDPO)
    else:
        note(f"padding-free pairs off (TRL's {base.__name__} is not wrapped for packing; padded batches)")
    attrs = {"dpo_ref_cache": ref_cache, "dpo_cfg": cfg, "__module__": __name__}
    # TRL's own name: logs, model cards and users see which trainer runs.
    return type(base.__name__, (*mixins, base), attrs)


class LengthAwareBatches:
    """Trainer mixin: `group_by_length` with `dpo_cli.train.batching`'s order, eval sorted by length."""

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        from dpo_cli.train.batching import MEGABATCH_BATCHES, LengthGroupedSampler

        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = _lengths(dataset, self.args)
        if lengths is None:
            from torch.utils.data import RandomSampler

            note("training rows have no token-length columns: random batches")
            return RandomSampler(dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        note(f"batches grouped by length (shuffled mega-batches of {MEGABATCH_BATCHES} batches, seed {seed})")
        # accelerate cuts the order into per-device batches and deals them to the processes in
        # turn, so one group of similar length covers one micro-batch on every process.
        group = self.args.per_device_train_batch_size * max(1, self.args.world_size)
        return LengthGroupedSampler(lengths, group, seed)

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_eval_sampler(eval_dataset)
        from dpo_cli.train.batching import LongestFirstSampler

        lengths = _lengths(eval_dataset, self.args)
        if lengths is None:
            from torch.utils.data import SequentialSampler

            return SequentialSampler(eval_dataset)
        return LongestFirstSampler(lengths)


def _lengths(dataset: Any, args: Any) -> Any:
    from datasets import Dataset

    from dpo_cli.train.batching import pair_lengths

    if not isinstance(dataset, Dataset):
        return None
    return pair_lengths(dataset, getattr(args, "max_length", None))


class FasterDPO:
    """`DPOTrainer` mixin: padding-free pairs and a sorted, cached reference precompute."""

    dpo_ref_cache: Path | None = None
    dpo_cfg: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.dpo_speed: dict[str, Any] = {}
        on, why = precompute_choice(self.dpo_cfg)
        self.dpo_speed["precompute_ref_log_probs"] = on
        note(f"reference log-probs {'precomputed, sorted by length' if on else 'computed online'} ({why})")
        super().__init__(*args, **kwargs)
        self._dpo_install_packing()

    def _dpo_models(self) -> list[Any]:
        from accelerate.utils import is_peft_model

        models = []
        for model in (self.model, getattr(self, "ref_model", None)):
            if model is None:
                continue
            model = getattr(model, "module", model)  # DeepSpeed engine / DDP wrapper
            models.append(model.get_base_model() if is_peft_model(model) else model)
        return models

    def _dpo_install_packing(self) -> None:
        if "padding_free" in self.dpo_speed:
            return
        from dpo_cli.train import packing

        models = self._dpo_models()
        on, why = padding_free_choice(self.dpo_cfg, models[0])
        for model in models[1:]:
            reason = packing.unsupported_reason(model)
            if on and reason is not None:
                on, why = False, f"reference model: {reason}; padded batches"
        if on:
            for model in models:
                packing.install(model)
        self.dpo_speed["padding_free"] = on
        note(f"padding-free pairs {'on' if on else 'off'} ({why})")

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        import numpy as np

        from dpo_cli.train import ref_cache
        from dpo_cli.train.batching import longest_first, pair_lengths

        self._dpo_install_packing()
        sources = self.__dict__.setdefault("ref_logps_source", {})
        cache = self.dpo_ref_cache
        a = self.args
        # Everything besides the rows and the model that changes a reference log-prob.
        settings = f"{a.max_length}|{a.truncation_mode}|{a.ld_alpha}|{a.bf16}|{a.fp16}"
        key = ref_cache.content_key(dataset, self._precompute_model_hash, settings) if cache is not None else None
        cached = ref_cache.load(cache, name, key) if cache is not None else None
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            # The precompute below is collective: reuse only when every rank has the file (a node
            # without the shared run directory computes with the others instead of leaving them waiting).
            if not all(gather_object([cached is not None])):
                cached = None
        if cached is not None:
            sources[name] = "reused"
            chosen, rejected = cached
        else:
            lengths = pair_lengths(dataset, getattr(self.args, "max_length", None))
            order = np.asarray(longest_first(lengths) if lengths is not None else range(len(dataset)))
            done = super()._precompute_ref_logps(dataset.select(order), name, batch_size)
            chosen = np.empty(len(order), dtype=np.float32)
            rejected = np.empty(len(order), dtype=np.float32)
            chosen[order] = np.asarray(done["ref_chosen_logps"], dtype=np.float32)
            rejected[order] = np.asarray(done["ref_rejected_logps"], dtype=np.float32)
            sources[name] = "computed"
            if cache is not None and self.accelerator.is_main_process:
                ref_cache.save(cache, name, key, chosen, rejected)
        return dataset.add_column("ref_chosen_logps", chosen.tolist()).add_column(
            "ref_rejected_logps", rejected.tolist()
        )
