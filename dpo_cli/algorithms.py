"""Which TRL trainer and config class each `algorithm:` runs, and what its strength parameter is.

TRL 1.16 keeps DPO and KTO in `trl` and ORPO and CPO (SimPO is CPO with its own loss and no
behaviour-cloning term) in `trl.experimental`. Everything that differs between algorithms at
build time is read from the `Algorithm` records here, so `build_trainer`, `sweep-beta` and
`eval` stay algorithm-agnostic.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_cli.errors import EXIT_USAGE, DpoError

if TYPE_CHECKING:
    from dpo_cli.config.schema import RunConfig


@dataclass(frozen=True)
class Algorithm:
    """How one `algorithm:` value maps onto TRL."""

    name: str
    module: str
    trainer: str
    config: str
    reference: bool  # the loss compares against a frozen reference model
    strength: str  # the TRL config field that sets how hard the preference is pushed
    strength_meaning: str  # what that field is, in the algorithm's own words
    paired: bool = True  # trains on chosen/rejected pairs (KTO: on unpaired rows)

    @property
    def strength_key(self) -> str:
        """The dotted config key that sets the strength parameter (`--set` / sweep override)."""
        return f"training.{self.strength}"

    def trainer_class(self) -> type:
        return getattr(_import(self.module), self.trainer)

    def config_class(self) -> type:
        return getattr(_import(self.module), self.config)


ALGORITHMS: dict[str, Algorithm] = {
    "dpo": Algorithm("dpo", "trl", "DPOTrainer", "DPOConfig", True, "beta", "DPO's beta: KL strength towards the reference"),
    "kto": Algorithm(
        "kto", "trl", "KTOTrainer", "KTOConfig", True, "beta", "KTO's beta: KL strength towards the reference",
        paired=False,
    ),
    "orpo": Algorithm(
        "orpo", "trl.experimental.orpo", "ORPOTrainer", "ORPOConfig", False, "beta",
        "ORPO's lambda (TRL's `beta`): weight of the odds-ratio term against the SFT loss",
    ),
    "cpo": Algorithm(
        "cpo", "trl.experimental.cpo", "CPOTrainer", "CPOConfig", False, "beta", "CPO's beta: scale of the implicit reward",
    ),
    "simpo": Algorithm(
        "simpo", "trl.experimental.cpo", "CPOTrainer", "CPOConfig", False, "beta",
        "SimPO's beta: scale of the length-normalised reward (gamma is the target margin)",
    ),
}


def algorithm_of(cfg: RunConfig) -> Algorithm:
    return ALGORITHMS[cfg.algorithm]


def _import(module: str) -> Any:
    # trl.experimental warns on import; choosing `algorithm: orpo` is already the informed opt-in.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*importing from 'trl.experimental'")
        return importlib.import_module(module)


def trainer_config_kwargs(cfg: RunConfig, output_dir: Path) -> dict[str, Any]:
    """Keyword arguments for the algorithm's TRL config: dpo's defaults, the algorithm's, then the user's."""
    from dpo_cli.build import dpo_config_kwargs
    from dpo_cli.config.variants import ALGORITHM_DEFAULTS
    from dpo_cli.speed import precompute_choice

    kwargs = {**ALGORITHM_DEFAULTS.get(cfg.algorithm, {}), **dpo_config_kwargs(cfg, output_dir)}
    # dpo's batch order is a typed default of each algorithm's section (KTO's stays `sequential`).
    kwargs.setdefault("train_sampling_strategy", cfg.training.train_sampling_strategy)
    if cfg.algorithm == "dpo":
        # dpo packs pairs itself (dpo_cli.packing); TRL 1.16's own `padding_free` only warns and pads.
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


def expected_first_loss(cfg: RunConfig) -> float | None:
    """The loss at step 0 (policy == reference), where the algorithm's loss has a closed form there."""
    from dpo_cli.diagnose import expected_initial_loss

    t = cfg.training
    if cfg.algorithm == "dpo":
        if getattr(t, "use_weighting", None):
            return None  # WPO multiplies each pair's loss by its (model-dependent) probability
        return expected_initial_loss(cfg.loss_types(), t.loss_weights, t.beta, label_smoothing=t.label_smoothing)
    if cfg.algorithm == "kto" and t.desirable_weight == t.undesirable_weight:
        # Every row's loss is 1 - sigmoid(0) = 0.5 (the KL estimate is 0 too), whatever the batch's label mix.
        return 0.5 * t.desirable_weight
    return None  # ORPO, CPO and SimPO start from the policy's own NLL / log-probs
