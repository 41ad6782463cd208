"""`training:` for the other algorithms: KTO, ORPO, CPO and SimPO, by their TRL config names.

`algorithm:` picks which TRL config class `training:` feeds, so each algorithm gets the
same checks as DPO: the common fields typed with ranges, every other field of its own config
class accepted by name, any other key an error naming that class. Field lists come from
`dpo_fields.py` (frozen from TRL, so validation never imports it).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model

from dpo_cli.config.dpo_fields import CPO_CONFIG_FIELDS, DPO_CONFIG_FIELDS, KTO_CONFIG_FIELDS, ORPO_CONFIG_FIELDS
from dpo_cli.config.schema import REFERENCE_FREE, RunConfig, TrainingSection, _TrainerArgs, sync_ref_problems

# algorithm -> (TRL config class as users import it, its frozen field list)
CONFIG_CLASSES: dict[str, tuple[str, dict[str, str]]] = {
    "dpo": ("trl.DPOConfig", DPO_CONFIG_FIELDS),
    "kto": ("trl.KTOConfig", KTO_CONFIG_FIELDS),
    "orpo": ("trl.experimental.orpo.ORPOConfig", ORPO_CONFIG_FIELDS),
    "cpo": ("trl.experimental.cpo.CPOConfig", CPO_CONFIG_FIELDS),
    "simpo": ("trl.experimental.cpo.CPOConfig", CPO_CONFIG_FIELDS),
}


class _KTOCommon(_TrainerArgs):
    """The `KTOConfig` fields most runs set."""

    loss_type: Literal["kto", "apo_zero_unpaired"] = Field(
        "kto", description="`kto`: KTO's loss; `apo_zero_unpaired`: APO-zero on unpaired data (no KL estimate)."
    )
    desirable_weight: float = Field(
        1.0, gt=0.0, description="Weight of the losses of desirable (label true) rows, to balance unequal counts."
    )
    undesirable_weight: float = Field(
        1.0, gt=0.0, description="Weight of the losses of undesirable (label false) rows."
    )
    train_sampling_strategy: Literal["group_by_length", "random", "sequential", "batch_rebalance"] = Field(
        "sequential",
        description=(
            "Batch order; TRL's KTO default `sequential` keeps the KL completions next to the rows they were "
            "matched with. `group_by_length` (with `loss_type: apo_zero_unpaired` only) batches rows of similar length."
        ),
    )


class _ORPOCommon(_TrainerArgs):
    """The `ORPOConfig` fields most runs set."""

    beta: float = Field(
        0.1, gt=0.0, description="ORPO's lambda: weight of the odds-ratio term added to the SFT loss (TRL's `beta`)."
    )


class _CPOCommon(_TrainerArgs):
    """The `CPOConfig` fields most runs set."""

    loss_type: Literal["sigmoid", "hinge", "ipo", "simpo", "alphapo"] = Field(
        "sigmoid", description="CPO's preference loss; `alphapo` is `simpo` with `cpo_alpha: 0` and an `alpha` shape."
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5, description="Label smoothing of the sigmoid/simpo losses.")
    cpo_alpha: float = Field(1.0, ge=0.0, description="Weight of the behaviour-cloning (NLL on chosen) term.")
    simpo_gamma: float = Field(0.5, description="SimPO's target reward margin (used with `loss_type: simpo`).")


class _SimPOCommon(_CPOCommon):
    """SimPO is CPO with its own loss and no behaviour-cloning term."""

    beta: float = Field(2.0, gt=0.0, description="SimPO's reward scale; the SimPO paper uses 2 to 10.")
    loss_type: Literal["simpo"] = Field("simpo", description="Always `simpo`; use `algorithm: cpo` for other losses.")
    cpo_alpha: float = Field(0.0, ge=0.0, description="Behaviour-cloning weight; 0 is plain SimPO (> 0: CPO-SimPO).")
    simpo_gamma: float = Field(
        1.0, description="Target reward margin gamma; the SimPO paper keeps gamma / beta around 0.5."
    )


def _section(name: str, typed: type[_TrainerArgs], algorithm: str):
    config, fields = CONFIG_CLASSES[algorithm]
    from dpo_cli.config.schema import _passthrough_fields

    return create_model(
        name,
        __base__=typed,
        __doc__=f"`{config}` fields, by their TRL names. Only the keys you set are passed on.",
        **_passthrough_fields(fields, typed, config.rsplit(".", 1)[-1]),
    )


KTOTrainingSection = _section("KTOTrainingSection", _KTOCommon, "kto")
ORPOTrainingSection = _section("ORPOTrainingSection", _ORPOCommon, "orpo")
CPOTrainingSection = _section("CPOTrainingSection", _CPOCommon, "cpo")
SimPOTrainingSection = _section("SimPOTrainingSection", _SimPOCommon, "simpo")

# Values that differ from the TRL config's own defaults and are passed even when unset.
ALGORITHM_DEFAULTS: dict[str, dict[str, object]] = {
    "simpo": {"loss_type": "simpo", "cpo_alpha": 0.0, "beta": 2.0, "simpo_gamma": 1.0},
}


class KTORunConfig(RunConfig):
    training: KTOTrainingSection = Field(default_factory=KTOTrainingSection)  # type: ignore[valid-type]


class ORPORunConfig(RunConfig):
    training: ORPOTrainingSection = Field(default_factory=ORPOTrainingSection)  # type: ignore[valid-type]


class CPORunConfig(RunConfig):
    training: CPOTrainingSection = Field(default_factory=CPOTrainingSection)  # type: ignore[valid-type]


class SimPORunConfig(RunConfig):
    training: SimPOTrainingSection = Field(default_factory=SimPOTrainingSection)  # type: ignore[valid-type]


RUN_CONFIG_CLASSES: dict[str, type[RunConfig]] = {
    "dpo": RunConfig,
    "kto": KTORunConfig,
    "orpo": ORPORunConfig,
    "cpo": CPORunConfig,
    "simpo": SimPORunConfig,
}

TRAINING_SECTIONS = {
    "dpo": TrainingSection,
    "kto": KTOTrainingSection,
    "orpo": ORPOTrainingSection,
    "cpo": CPOTrainingSection,
    "simpo": SimPOTrainingSection,
}


def run_config_class(algorithm: object) -> type[RunConfig]:
    """The `RunConfig` whose `training:` matches the algorithm; DPO's for a missing or invalid name
    (pydantic then reports the invalid name itself)."""
    return RUN_CONFIG_CLASSES.get(algorithm, RunConfig) if isinstance(algorithm, str) else RunConfig


def other_algorithms_with(key: str, algorithm: str) -> list[str]:
    """Algorithms whose TRL config has `key`, for 'did you mean `algorithm: kto`?' hints."""
    return [name for name, (_, fields) in CONFIG_CLASSES.items() if name != algorithm and key in fields]


def algorithm_problems(cfg: RunConfig) -> list[str]:
    """Rules of the non-DPO algorithms (TRL's own, checked at config time), one sentence each."""
    problems: list[str] = []
    t = cfg.training
    name = cfg.algorithm
    if name in REFERENCE_FREE:
        if cfg.reference.kind != "none":
            problems.append(
                f"`algorithm: {name}` is reference-free and loads no reference model; remove the `reference:` "
                f"section or set `reference.kind: none` (found `{cfg.reference.kind}`)"
            )
        if t.precompute_ref_log_probs:
            problems.append(f"`algorithm: {name}` has no reference model: `training.precompute_ref_log_probs` does not apply")
    if name == "kto":
        if t.loss_type == "kto":
            sampling = getattr(t, "train_sampling_strategy", None)
            if sampling not in (None, "sequential"):
                problems.append(
                    f"`training.train_sampling_strategy: {sampling}` breaks KTO's KL estimate (TRL's rule: the KL "
                    "completions are matched with their neighbours in a fixed-order batch); keep `sequential` or "
                    "use `loss_type: apo_zero_unpaired`"
                )
            if t.per_device_train_batch_size <= 1:
                problems.append(
                    "`loss_type: kto` needs `training.per_device_train_batch_size` > 1 (TRL's rule: with one row per "
                    "batch the KL estimate equals the row's own reward)"
                )
        problems += sync_ref_problems(cfg)
    if name in ("cpo", "simpo"):
        loss = t.loss_type
        if loss in ("hinge", "ipo") and t.label_smoothing > 0:
            problems.append(
                f"`training.label_smoothing` is ignored by CPO's `{loss}` loss (TRL only warns); set it to 0 or use "
                "`loss_type: sigmoid`"
            )
        if loss == "alphapo" and "cpo_alpha" in t.model_fields_set and t.cpo_alpha != 0:
            problems.append("`loss_type: alphapo` sets `cpo_alpha` to 0 (TRL's rule); remove `training.cpo_alpha`")
        if "simpo_gamma" in t.model_fields_set and loss not in ("simpo", "alphapo"):
            problems.append(f"`training.simpo_gamma` is only read by the simpo loss; `loss_type: {loss}` ignores it")
    return problems
