"""`training:` for the other algorithms: KTO, ORPO, CPO and SimPO, by their TRL config names.

`algorithm:` picks which TRL config class `training:` feeds, so each algorithm gets the
same checks as DPO: the common fields typed with ranges, every other field of its own config
class accepted by name, any other key an error naming that class. Field lists come from
`trl_fields.py` (frozen from TRL, so validation never imports it). Which classes exist, and
their names, follow the algorithm table (`dpo_cli.config.algorithms`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model

from dpo_cli.config.algorithms import ALGORITHMS, Algorithm
from dpo_cli.config.schema import DPOTrainingArgs, RunConfig, TrainerArgs, TrainingSection, passthrough_fields


class KTOTrainingArgs(TrainerArgs):
    """The `KTOConfig` fields most runs set."""

    loss_type: Literal["kto", "apo_zero_unpaired"] = Field(
        ALGORITHMS["kto"].default("loss_type"),
        description="`kto`: KTO's loss; `apo_zero_unpaired`: APO-zero on unpaired data (no KL estimate).",
    )
    desirable_weight: float = Field(
        ALGORITHMS["kto"].default("desirable_weight"),
        gt=0.0,
        description="Weight of the losses of desirable (label true) rows, to balance unequal counts.",
    )
    undesirable_weight: float = Field(
        ALGORITHMS["kto"].default("undesirable_weight"),
        gt=0.0,
        description="Weight of the losses of undesirable (label false) rows.",
    )
    train_sampling_strategy: Literal["group_by_length", "random", "sequential", "batch_rebalance"] = Field(
        ALGORITHMS["kto"].default("train_sampling_strategy"),
        description=(
            "Batch order; TRL's KTO default `sequential` keeps the KL completions next to the rows they were "
            "matched with. `group_by_length` (with `loss_type: apo_zero_unpaired` only) batches rows of similar length."
        ),
    )


class ORPOTrainingArgs(TrainerArgs):
    """The `ORPOConfig` fields most runs set."""

    beta: float = Field(
        ALGORITHMS["orpo"].default("beta"),
        gt=0.0,
        description="ORPO's lambda: weight of the odds-ratio term added to the SFT loss (TRL's `beta`).",
    )


class CPOTrainingArgs(TrainerArgs):
    """The `CPOConfig` fields most runs set."""

    loss_type: Literal["sigmoid", "hinge", "ipo", "simpo", "alphapo"] = Field(
        ALGORITHMS["cpo"].default("loss_type"),
        description="CPO's preference loss; `alphapo` is `simpo` with `cpo_alpha: 0` and an `alpha` shape.",
    )
    label_smoothing: float = Field(
        ALGORITHMS["cpo"].default("label_smoothing"),
        ge=0.0,
        lt=0.5,
        description="Label smoothing of the sigmoid/simpo losses.",
    )
    cpo_alpha: float = Field(
        ALGORITHMS["cpo"].default("cpo_alpha"),
        ge=0.0,
        description="Weight of the behaviour-cloning (NLL on chosen) term.",
    )
    simpo_gamma: float = Field(
        ALGORITHMS["cpo"].default("simpo_gamma"),
        description="SimPO's target reward margin (used with `loss_type: simpo`).",
    )


class SimPOTrainingArgs(CPOTrainingArgs):
    """SimPO is CPO with its own loss and no behaviour-cloning term."""

    # Its defaults are its row's in the algorithm table: the values dpo passes to TRL's CPOConfig even when unset.
    beta: float = Field(
        ALGORITHMS["simpo"].default("beta"), gt=0.0, description="SimPO's reward scale; the SimPO paper uses 2 to 10."
    )
    loss_type: Literal["simpo"] = Field(
        ALGORITHMS["simpo"].default("loss_type"), description="Always `simpo`; use `algorithm: cpo` for other losses."
    )
    cpo_alpha: float = Field(
        ALGORITHMS["simpo"].default("cpo_alpha"),
        ge=0.0,
        description="Behaviour-cloning weight; 0 is plain SimPO (> 0: CPO-SimPO).",
    )
    simpo_gamma: float = Field(
        ALGORITHMS["simpo"].default("simpo_gamma"),
        description="Target reward margin gamma; the SimPO paper keeps gamma / beta around 0.5.",
    )


# The hand-written typed fields, by the class name each algorithm's row gives (`Algorithm.typed_args`).
TYPED_ARGS: dict[str, type[TrainerArgs]] = {
    cls.__name__: cls
    for cls in (DPOTrainingArgs, KTOTrainingArgs, ORPOTrainingArgs, CPOTrainingArgs, SimPOTrainingArgs)
}


def _section(algorithm: Algorithm) -> type[TrainerArgs]:
    if algorithm.section == TrainingSection.__name__:
        return TrainingSection  # DPO's lives beside RunConfig, whose default it is
    typed = TYPED_ARGS[algorithm.typed_args]
    return create_model(
        algorithm.section,
        __base__=typed,
        __doc__=f"`{algorithm.config_path}` fields, by their TRL names. Only the keys you set are passed on.",
        **passthrough_fields(algorithm.frozen_fields(), typed, algorithm.config),
    )


# algorithm -> its `training:` section and its `RunConfig`, derived from the algorithm table.
TRAINING_SECTIONS: dict[str, type[TrainerArgs]] = {name: _section(a) for name, a in ALGORITHMS.items()}
RUN_CONFIG_CLASSES: dict[str, type[RunConfig]] = {
    name: RunConfig
    if a.run_config == RunConfig.__name__
    else create_model(
        a.run_config,
        __base__=RunConfig,
        training=(TRAINING_SECTIONS[name], Field(default_factory=TRAINING_SECTIONS[name])),
    )
    for name, a in ALGORITHMS.items()
}


# Each generated class is also a module attribute under its own name: pickle (and dill, with which
# `datasets` fingerprints the trainers' tokenizing functions) finds a class by module and name, and
# an unbound one makes it fall back to a random fingerprint, so the tokenized data is never reused.
globals().update({cls.__name__: cls for cls in (*TRAINING_SECTIONS.values(), *RUN_CONFIG_CLASSES.values())})


def run_config_class(algorithm: object) -> type[RunConfig]:
    """The `RunConfig` whose `training:` matches the algorithm; DPO's for a missing or invalid name
    (pydantic then reports the invalid name itself)."""
    return RUN_CONFIG_CLASSES.get(algorithm, RunConfig) if isinstance(algorithm, str) else RunConfig


def algorithm_of_class(config_class: type[RunConfig]) -> str:
    """The algorithm a `RunConfig` class validates."""
    return next(name for name, cls in RUN_CONFIG_CLASSES.items() if cls is config_class)
