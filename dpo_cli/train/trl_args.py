"""Build each algorithm's TRL config from a validated `RunConfig`.

Everything that differs between algorithms is read from their rows in
`dpo_cli.config.algorithms`, so `build_trainer`, `sweep-beta` and `eval` stay algorithm-agnostic.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_cli.config.algorithms import algorithm_of
from dpo_cli.errors import EXIT_USAGE, DpoError

if TYPE_CHECKING:
    from dpo_cli.config.schema import RunConfig


def trainer_config_kwargs(cfg: RunConfig, output_dir: Path) -> dict[str, Any]:
    """Keyword arguments for the algorithm's TRL config: dpo's defaults, the algorithm's, then the user's."""
    from dpo_cli.models import dpo_config_kwargs
    from dpo_cli.train.speed import precompute_choice

    algorithm = algorithm_of(cfg)
    kwargs = {**algorithm.defaults, **dpo_config_kwargs(cfg, output_dir)}
    # dpo's batch order is a typed default of each algorithm's section (KTO's stays `sequential`).
    kwargs.setdefault("train_sampling_strategy", cfg.training.train_sampling_strategy)
    if algorithm.packs:
        # dpo packs pairs itself (dpo_cli.train.packing); TRL 1.16's own `padding_free` only warns and pads.
        kwargs["padding_free"] = False
        kwargs["precompute_ref_log_probs"] = precompute_choice(cfg)[0]
    return kwargs


def to_trainer_config(cfg: RunConfig, output_dir: Path) -> Any:
    """Build the algorithm's TRL config (`DPOConfig`, `KTOConfig`, `ORPOConfig`, `CPOConfig`).

    Raises:
        DpoError: TRL or transformers rejected a `training:` value.
    """
    algorithm = algorithm_of(cfg)
    config_class = algorithm.config_class()
    try:
        return config_class(**trainer_config_kwargs(cfg, output_dir))
    except (TypeError, ValueError) as exc:
        raise DpoError(f"training: {algorithm.config} rejected the settings: {exc}", exit_code=EXIT_USAGE) from None


def trainer_kwargs(cfg: RunConfig, reference: Any) -> dict[str, Any]:
    """The trainer arguments that differ between algorithms: ORPO and CPO take no `ref_model` at all."""
    return {"ref_model": reference} if algorithm_of(cfg).reference else {}
