"""The one table of algorithms: what each `algorithm:` value runs, and every per-algorithm fact.

Everything that differs between algorithms is a field of its row here: the TRL trainer and
config class (by name, imported only when a run is built), the `training:` section that
validates it, whether a frozen reference model is loaded, whether it trains on pairs, the
loss at step 0 where it has a closed form, the values dpo passes even when unset, and whether
dpo's own packing applies. The schema, the loader's hints, the docs, the trainer builder,
`sweep-beta`, `eval` and `scripts/gen_trl_fields.py` all read this table.

TRL 1.16 keeps DPO and KTO in `trl` and ORPO and CPO (SimPO is CPO with its own loss and no
behaviour-cloning term) in `trl.experimental`. The module is pure: the standard library only,
so config checks never import TRL or torch.
"""

from __future__ import annotations

import copy
import importlib
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dpo_cli.config.schema import RunConfig

LN2 = math.log(2)

# Where dpo deliberately differs from TRL for every algorithm: (value, why). Passed even when unset;
# every other TRL default is TRL's own (an algorithm's row may add its own, e.g. SimPO's).
DELIBERATE: Mapping[str, tuple[Any, str]] = MappingProxyType(
    {
        "logging_first_step": (True, "step 1's loss is computed before any update: the closed-form check of the setup"),
        "report_to": ("none", "trackers are opt-in: a run must not try to reach wandb from an offline node"),
        "train_sampling_strategy": (
            "group_by_length",
            "pairs of similar length share a batch (shuffled mega-batches): far less padding than `random`",
        ),
    }
)
DELIBERATE_DEFAULTS: Mapping[str, Any] = MappingProxyType({k: value for k, (value, _) in DELIBERATE.items()})

# TRL settings whose dpo default is "unset": dpo chooses per run (typed default None), and why.
DECIDED_PER_RUN: Mapping[str, str] = MappingProxyType(
    {
        "precompute_ref_log_probs": "DPO precomputes where it was measured to win (full fine-tuning, > 2 epochs)",
        "padding_free": "DPO packs pairs wherever the model's attention keeps them apart",
    }
)


@dataclass(frozen=True)
class Algorithm:
    """How one `algorithm:` value maps onto TRL, and what dpo knows about it."""

    name: str  # the `algorithm:` value
    label: str  # how people write it ("SimPO"); also names its generated config classes
    trl_module: str  # where TRL keeps its trainer and config
    trainer: str  # TRL trainer class name
    config: str  # TRL config class name
    fields: str  # the dict of the config's frozen field names in `dpo_cli.config.trl_fields` (`*_DEFAULTS` beside it)
    reference: bool  # the loss compares against a frozen reference model (False: reference-free)
    strength: str  # the TRL config field that sets how hard the preference is pushed
    strength_meaning: str  # what that field is, in the algorithm's own words
    paired: bool = True  # trains on chosen/rejected pairs (KTO: on unpaired, labelled rows)
    packs: bool = False  # dpo's own trainer wrapper (packing, padding-free, precompute choice) applies
    # Values that differ from dpo's or the TRL config's own defaults, passed even when unset, and why.
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    defaults_why: str = ""
    first_loss: Callable[[RunConfig], float | None] | None = None  # closed-form loss at step 0

    @property
    def strength_key(self) -> str:
        """The dotted config key that sets the strength parameter (`--set` / sweep override)."""
        return f"training.{self.strength}"

    @property
    def config_path(self) -> str:
        """The TRL config class as users import it (`trl.experimental.orpo.ORPOConfig`)."""
        return f"{self.trl_module}.{self.config}"

    @property
    def typed_args(self) -> str:
        """Name of the hand-written class of its typed `training:` fields (in `dpo_cli.config`)."""
        return f"{self.label}TrainingArgs"

    @property
    def section(self) -> str:
        """Name of its generated `training:` section class (DPO's is the plain `TrainingSection`)."""
        return "TrainingSection" if self.name == "dpo" else f"{self.label}TrainingSection"

    @property
    def run_config(self) -> str:
        """Name of its `RunConfig` class (DPO's is `RunConfig` itself)."""
        return "RunConfig" if self.name == "dpo" else f"{self.label}RunConfig"

    def frozen_fields(self) -> dict[str, str]:
        """Every field of its TRL config class with one line of help, as frozen from TRL."""
        from dpo_cli.config import trl_fields

        return getattr(trl_fields, self.fields)

    def frozen_defaults(self) -> dict[str, Any]:
        """Every field's declared default in its TRL config class, as frozen from TRL."""
        from dpo_cli.config import trl_fields

        return getattr(trl_fields, self.fields.removesuffix("_FIELDS") + "_DEFAULTS")

    def default(self, name: str) -> Any:
        """The default of `training.<name>` under this algorithm: the algorithm's own deliberate value,
        else dpo's (`DELIBERATE_DEFAULTS`), else TRL's declared default (frozen)."""
        if name in self.defaults:
            value = self.defaults[name]
        elif name in DELIBERATE_DEFAULTS:
            value = DELIBERATE_DEFAULTS[name]
        else:
            value = self.frozen_defaults()[name]
        return copy.deepcopy(value)  # a list default (DPO's `loss_type`) is never shared

    def trainer_class(self) -> type:
        return getattr(import_trl(self.trl_module), self.trainer)

    def config_class(self) -> type:
        return getattr(import_trl(self.trl_module), self.config)


def import_trl(module: str) -> Any:
    """Import a TRL module; `trl.experimental`'s import warning is silenced (choosing it is the opt-in)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*importing from 'trl.experimental'")
        return importlib.import_module(module)


def expected_initial_loss(
    loss_types: list[str], loss_weights: list[float] | None, beta: float, *, label_smoothing: float = 0.0
) -> float | None:
    """DPO's loss at step 0, when policy == reference and every log-ratio is 0; None if it has no closed form.

    Each value is TRL 1.16's DPO loss with every log-ratio set to 0 (each checked against a real
    first step in tests/integration/test_variants.py). `sft` has none: it is the policy's NLL.
    """
    closed_forms = {
        "sigmoid": LN2,
        "sigmoid_norm": LN2,
        "robust": LN2,  # the label-smoothing terms cancel to ln 2 when the margin is 0
        "aot": LN2,  # both smoothing terms are log-sigmoid(0)
        "aot_unpaired": LN2,
        "hinge": 1.0,
        "ipo": (1.0 / (2.0 * beta)) ** 2,
        "sppo_hard": 2 * (0.5 / beta) ** 2,  # winner and loser are each 1/(2 beta) from their target
        "nca_pair": 2 * LN2,
        "bco_pair": 2 * LN2,
        "apo_zero": 1.0,  # 1 - sigmoid(0) + sigmoid(0)
        "apo_down": 1.0,
        "discopop": (LN2 + 1.0) / 2,  # logistic and exponential parts mixed half and half at 0
    }
    if 0.0 < label_smoothing < 1.0:
        # KL between the uniform model distribution and the (1 - eps, eps) target
        closed_forms["exo_pair"] = -LN2 - 0.5 * math.log(label_smoothing * (1.0 - label_smoothing))
    weights = loss_weights or [1.0] * len(loss_types)
    if any(loss not in closed_forms for loss in loss_types):
        return None
    return sum(w * closed_forms[loss] for loss, w in zip(loss_types, weights, strict=True))


def _dpo_first_loss(cfg: RunConfig) -> float | None:
    t = cfg.training
    if getattr(t, "use_weighting", None):
        return None  # WPO multiplies each pair's loss by its (model-dependent) probability
    return expected_initial_loss(cfg.loss_types(), t.loss_weights, t.beta, label_smoothing=t.label_smoothing)


def _kto_first_loss(cfg: RunConfig) -> float | None:
    t = cfg.training
    if t.desirable_weight != t.undesirable_weight:
        return None  # depends on the batch's label mix
    # Every row's loss is 1 - sigmoid(0) = 0.5 (the KL estimate is 0 too), whatever the batch's label mix.
    return 0.5 * t.desirable_weight


# ORPO, CPO and SimPO have no closed form at step 0: they start from the policy's own NLL / log-probs.
# Order: the order of `algorithm:`'s choices in the JSON Schema, the docs and error messages.
ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm(
            "dpo",
            "DPO",
            "trl",
            "DPOTrainer",
            "DPOConfig",
            "DPO_CONFIG_FIELDS",
            True,
            "beta",
            "DPO's beta: KL strength towards the reference",
            packs=True,
            first_loss=_dpo_first_loss,
        ),
        Algorithm(
            "kto",
            "KTO",
            "trl",
            "KTOTrainer",
            "KTOConfig",
            "KTO_CONFIG_FIELDS",
            True,
            "beta",
            "KTO's beta: KL strength towards the reference",
            paired=False,
            first_loss=_kto_first_loss,
            defaults=MappingProxyType({"train_sampling_strategy": "sequential"}),
            defaults_why="TRL's own KTO default, over dpo's `group_by_length`: the KL estimate pairs rows in a fixed order",
        ),
        Algorithm(
            "orpo",
            "ORPO",
            "trl.experimental.orpo",
            "ORPOTrainer",
            "ORPOConfig",
            "ORPO_CONFIG_FIELDS",
            False,
            "beta",
            "ORPO's lambda (TRL's `beta`): weight of the odds-ratio term against the SFT loss",
        ),
        Algorithm(
            "simpo",
            "SimPO",
            "trl.experimental.cpo",
            "CPOTrainer",
            "CPOConfig",
            "CPO_CONFIG_FIELDS",
            False,
            "beta",
            "SimPO's beta: scale of the length-normalised reward (gamma is the target margin)",
            defaults=MappingProxyType({"loss_type": "simpo", "cpo_alpha": 0.0, "beta": 2.0, "simpo_gamma": 1.0}),
            defaults_why="SimPO is TRL's CPO with the simpo loss and no behaviour-cloning term; beta and gamma as the paper",
        ),
        Algorithm(
            "cpo",
            "CPO",
            "trl.experimental.cpo",
            "CPOTrainer",
            "CPOConfig",
            "CPO_CONFIG_FIELDS",
            False,
            "beta",
            "CPO's beta: scale of the implicit reward",
        ),
    )
}


def algorithm_of(cfg: RunConfig) -> Algorithm:
    return ALGORITHMS[cfg.algorithm]


def reference_free() -> list[str]:
    """The algorithms that load no reference model, in table order."""
    return [a.name for a in ALGORITHMS.values() if not a.reference]


def expected_first_loss(cfg: RunConfig) -> float | None:
    """The loss at step 0 (policy == reference), where the algorithm's loss has a closed form there."""
    first_loss = algorithm_of(cfg).first_loss
    return first_loss(cfg) if first_loss is not None else None


def other_algorithms_with(key: str, algorithm: str) -> list[str]:
    """Algorithms whose TRL config has `key`, for 'did you mean `algorithm: kto`?' hints.

    An algorithm that runs its config class plainly comes before one that presets it (`cpo`
    before `simpo`, which is CPO with dpo's defaults).
    """
    found = [a for a in ALGORITHMS.values() if a.name != algorithm and key in a.frozen_fields()]
    return [a.name for a in sorted(found, key=lambda a: bool(a.defaults))]
