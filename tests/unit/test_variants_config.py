"""`algorithm:` and every DPO loss type: which configs validate, which are rejected and why (no torch)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import yaml

from dpo_cli.config.algorithms import ALGORITHMS, expected_first_loss, expected_initial_loss
from dpo_cli.config.loader import load_config
from dpo_cli.config.schema import DPO_LOSS_TYPES, REFERENCE_FREE, RunConfig
from dpo_cli.config.trl_fields import CPO_CONFIG_FIELDS, DPO_CONFIG_FIELDS, KTO_CONFIG_FIELDS, ORPO_CONFIG_FIELDS
from dpo_cli.config.variants import RUN_CONFIG_CLASSES, TRAINING_SECTIONS
from dpo_cli.errors import ConfigError
from dpo_cli.sweep.runner import Point, expand

MINIMAL = {"output_dir": "runs/x", "model": {"name_or_path": "distilgpt2"}, "data": {"train": "t.jsonl"}}
LN2 = math.log(2)


def load(tmp_path: Path, extra: dict, overrides: list[str] | None = None) -> RunConfig:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, **extra}))
    return load_config(path, overrides)


def problems(tmp_path: Path, extra: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, extra)
    return info.value.problems


# --- DPO loss types ---------------------------------------------------------------------------


@pytest.mark.parametrize("loss", DPO_LOSS_TYPES)
def test_every_dpo_loss_type_validates(tmp_path: Path, loss: str) -> None:
    training = {"loss_type": loss}
    if loss == "exo_pair":
        training["label_smoothing"] = 1e-3
    assert load(tmp_path, {"training": training}).loss_types() == [loss]


def test_dpo_loss_types_match_trl() -> None:
    # TRL's own list, from its help text (frozen with the field names; no TRL import here).
    assert "loss_type" in DPO_CONFIG_FIELDS
    assert {"sigmoid", "hinge", "ipo", "sft", "apo_zero", "discopop", "sigmoid_norm"} <= set(DPO_LOSS_TYPES)


@pytest.mark.parametrize(
    "training",
    [
        {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.2]},  # RPO / MPO style
        {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]},  # MPO's mix
        {"loss_type": "robust", "label_smoothing": 0.2},
        {"loss_type": ["aot", "sft"], "loss_weights": [1.0, 0.5], "label_smoothing": 0.1},
        {"loss_type": "ipo", "f_divergence_type": "js_divergence"},
        {"loss_type": "sigmoid", "use_weighting": True},
    ],
)
def test_valid_loss_combinations(tmp_path: Path, training: dict) -> None:
    load(tmp_path, {"training": training})


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"training": {"loss_type": ["sigmoid", "sigmoid"]}}, "lists a loss twice"),
        ({"training": {"loss_type": "sigmoid", "label_smoothing": 0.1}}, "it would be ignored"),
        ({"training": {"loss_type": "robust", "label_smoothing": 0.5}}, "expected a value < 0.5"),
        ({"training": {"loss_type": "nca_pair", "f_divergence_type": "forward_kl"}}, "need the default `reverse_kl`"),
        ({"training": {"loss_type": ["aot", "sigmoid"], "use_weighting": True}}, "sort the batch"),
        ({"training": {"sync_ref_model": True}, "lora": {}}, "not supported with LoRA"),
        ({"training": {"sync_ref_model": True, "precompute_ref_log_probs": True}}, "exclude each other"),
        ({"training": {"loss_type": "exo_pair"}}, "needs `label_smoothing` > 0"),
        ({"data": {"train": "t.jsonl", "unpair": True}}, "set `algorithm: kto`"),
    ],
)
def test_trl_rules_on_dpo_losses(tmp_path: Path, extra: dict, fragment: str) -> None:
    found = problems(tmp_path, extra)
    assert any(fragment in p for p in found), found


# --- algorithms -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_each_algorithm_validates_with_its_own_section(tmp_path: Path, name: str) -> None:
    cfg = load(tmp_path, {"algorithm": name})
    assert cfg.algorithm == name
    assert type(cfg.training) is TRAINING_SECTIONS[name]
    assert cfg.reference.kind == ("none" if name in REFERENCE_FREE else "policy")


def test_reference_free_algorithms_reject_a_reference(tmp_path: Path) -> None:
    found = problems(tmp_path, {"algorithm": "orpo", "reference": {"kind": "policy"}})
    assert any("reference-free and loads no reference model" in p for p in found), found
    found = problems(tmp_path, {"algorithm": "simpo", "training": {"precompute_ref_log_probs": True}})
    assert any("does not apply" in p for p in found), found
    found = problems(tmp_path, {"algorithm": "kto", "reference": {"kind": "none"}})
    assert any("needs a reference-free algorithm" in p for p in found), found


def test_unknown_keys_name_the_algorithms_config_class(tmp_path: Path) -> None:
    (typo,) = problems(tmp_path, {"algorithm": "kto", "training": {"desirable_wieght": 2.0}})
    assert "not a `trl.KTOConfig` field" in typo and "did you mean `desirable_weight`?" in typo
    (wrong_algorithm,) = problems(tmp_path, {"algorithm": "orpo", "training": {"loss_type": "ipo"}})
    assert "trl.experimental.orpo.ORPOConfig" in wrong_algorithm and "`algorithm: dpo`" in wrong_algorithm
    (kto_key,) = problems(tmp_path, {"training": {"undesirable_weight": 1.5}})
    assert "not a `trl.DPOConfig` field" in kto_key and "`algorithm: kto`" in kto_key
    (reserved,) = problems(tmp_path, {"algorithm": "cpo", "training": {"output_dir": "x"}})
    assert "CPOConfig field that dpo sets for you" in reserved


def test_unknown_algorithm_is_one_clear_error(tmp_path: Path) -> None:
    (found,) = problems(tmp_path, {"algorithm": "dop"})
    assert "algorithm" in found and "did you mean `dpo`?" in found


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"algorithm": "kto", "training": {"per_device_train_batch_size": 1}}, "per_device_train_batch_size` > 1"),
        ({"algorithm": "kto", "training": {"train_sampling_strategy": "random"}}, "breaks KTO's KL estimate"),
        ({"algorithm": "kto", "training": {"sync_ref_model": True}, "lora": {}}, "not supported with LoRA"),
        ({"algorithm": "kto", "training": {"desirable_weight": 0}}, "expected a value > 0"),
        ({"algorithm": "cpo", "training": {"loss_type": "hinge", "label_smoothing": 0.1}}, "is ignored by CPO's"),
        ({"algorithm": "cpo", "training": {"loss_type": "alphapo", "cpo_alpha": 1.0}}, "sets `cpo_alpha` to 0"),
        ({"algorithm": "cpo", "training": {"simpo_gamma": 0.3}}, "only read by the simpo loss"),
        ({"algorithm": "simpo", "training": {"loss_type": "sigmoid"}}, "expected 'simpo'"),
    ],
)
def test_trl_rules_of_other_algorithms(tmp_path: Path, extra: dict, fragment: str) -> None:
    found = problems(tmp_path, extra)
    assert any(fragment in p for p in found), found


def test_apo_zero_unpaired_kto_needs_no_sequential_sampling(tmp_path: Path) -> None:
    training = {"loss_type": "apo_zero_unpaired", "train_sampling_strategy": "random", "per_device_train_batch_size": 1}
    load(tmp_path, {"algorithm": "kto", "training": training})


def test_typed_fields_are_fields_of_the_trl_config() -> None:
    frozen = {
        "dpo": DPO_CONFIG_FIELDS,
        "kto": KTO_CONFIG_FIELDS,
        "orpo": ORPO_CONFIG_FIELDS,
        "cpo": CPO_CONFIG_FIELDS,
        "simpo": CPO_CONFIG_FIELDS,
    }
    for name, section in TRAINING_SECTIONS.items():
        assert ALGORITHMS[name].frozen_fields() is frozen[name]
        # precompute_ref_log_probs is typed for every algorithm but rejected by the reference-free ones
        extra = set(section.model_fields) - set(frozen[name]) - {"precompute_ref_log_probs"}
        assert not extra, (name, extra)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_typed_defaults_are_trls_unless_listed_as_dpos_own(name: str) -> None:
    # The schema never retypes a TRL default: each typed field's default is TRL's declared one (frozen
    # from TRL; tests/integration/test_trl_fields.py checks the frozen values) or one dpo lists, with a reason.
    from dpo_cli.config.algorithms import DECIDED_PER_RUN, DELIBERATE
    from dpo_cli.config.variants import TYPED_ARGS

    row = ALGORITHMS[name]
    trl = row.frozen_defaults()
    differ = set()
    for key, field in TYPED_ARGS[row.typed_args].model_fields.items():
        assert key in trl or key == "precompute_ref_log_probs", key  # rejected by the reference-free ones
        if key in DECIDED_PER_RUN:
            assert field.default is None, key
            continue
        assert field.default == row.default(key), key
        if key in trl and field.default != trl[key]:
            differ.add(key)
    listed = (set(DELIBERATE) | set(row.defaults)) & set(TYPED_ARGS[row.typed_args].model_fields)
    assert differ <= listed, f"typed defaults that differ from TRL's without being listed: {differ - listed}"


def test_every_table_follows_the_algorithm_registry() -> None:
    from dpo_cli.config.schema import Algorithm

    assert list(TRAINING_SECTIONS) == list(RUN_CONFIG_CLASSES) == list(ALGORITHMS) == list(Algorithm.__args__)
    for name, row in ALGORITHMS.items():
        assert TRAINING_SECTIONS[name].__name__ == row.section
        assert RUN_CONFIG_CLASSES[name].__name__ == row.run_config
        assert RUN_CONFIG_CLASSES[name].model_fields["training"].annotation is TRAINING_SECTIONS[name]
    assert REFERENCE_FREE == {"orpo", "simpo", "cpo"}


def test_strength_parameter_of_each_algorithm() -> None:
    assert {a.strength_key for a in ALGORITHMS.values()} == {"training.beta"}  # TRL's name in every config
    assert "lambda" in ALGORITHMS["orpo"].strength_meaning
    assert not ALGORITHMS["orpo"].reference and ALGORITHMS["kto"].reference and not ALGORITHMS["kto"].paired


def test_sweep_points_of_a_reference_free_algorithm_precompute_nothing() -> None:
    from dpo_cli.config.schema import SweepSection

    dpo_point, orpo_point = expand(SweepSection(betas=[0.2]))[0], expand(SweepSection(betas=[0.2]), algorithm="orpo")[0]
    assert "training.precompute_ref_log_probs=true" in dpo_point.overrides(Path("s"))
    assert orpo_point == Point(0.2, None, "orpo")
    assert orpo_point.overrides(Path("s")) == ["training.beta=0.2", "output_dir=s/beta_0.2"]


def test_config_validation_imports_no_torch(tmp_path: Path) -> None:
    import subprocess

    code = (
        "import sys; from dpo_cli.config.loader import validate; "
        "validate({'output_dir': 'x', 'algorithm': 'orpo', 'model': {'name_or_path': 'm'}, 'data': {'train': 't'}}); "
        "import dpo_cli.train.trl_args; assert 'torch' not in sys.modules and 'trl' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- closed forms at step 0 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("losses", "weights", "expected"),
    [
        (["sigmoid"], None, LN2),
        (["ipo"], None, (1 / (2 * 0.2)) ** 2),
        (["hinge"], None, 1.0),
        (["sppo_hard"], None, 0.5 / 0.2**2),
        (["nca_pair"], None, 2 * LN2),
        (["apo_down"], None, 1.0),
        (["discopop"], None, (LN2 + 1) / 2),
        (["sigmoid", "hinge"], [0.5, 2.0], 0.5 * LN2 + 2.0),
        (["sigmoid", "sft"], [1.0, 0.2], None),
    ],
)
def test_expected_initial_loss(losses: list[str], weights: list[float] | None, expected: float | None) -> None:
    found = expected_initial_loss(losses, weights, 0.2)
    assert found == (pytest.approx(expected) if expected is not None else None)


def test_exo_pair_closed_form_depends_on_smoothing() -> None:
    eps = 1e-3
    assert expected_initial_loss(["exo_pair"], None, 0.1, label_smoothing=eps) == pytest.approx(
        -LN2 - 0.5 * math.log(eps * (1 - eps))
    )
    assert expected_initial_loss(["exo_pair"], None, 0.1) is None


def test_expected_first_loss_per_algorithm(tmp_path: Path) -> None:
    assert expected_first_loss(load(tmp_path, {"algorithm": "kto"})) == 0.5
    kto_weighted = load(tmp_path, {"algorithm": "kto", "training": {"desirable_weight": 1.3}})
    assert expected_first_loss(kto_weighted) is None  # depends on the batch's label mix
    assert expected_first_loss(load(tmp_path, {"algorithm": "orpo"})) is None
    assert expected_first_loss(load(tmp_path, {"training": {"use_weighting": True}})) is None
    assert expected_first_loss(load(tmp_path, {})) == pytest.approx(LN2)


def test_variants_doc_covers_every_loss_and_algorithm() -> None:
    # The variants page is written by hand: this keeps its tables in step with the schema.
    doc = (Path(__file__).resolve().parents[2] / "docs" / "variants.md").read_text()
    missing = [loss for loss in DPO_LOSS_TYPES if f"`loss_type: {loss}`" not in doc]
    missing += [name for name in ALGORITHMS if name != "dpo" and f"`algorithm: {name}`" not in doc]
    assert not missing, missing


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: str(p.relative_to(REPO)))
def test_every_config_loads_and_says_how_to_run_it(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# dpo ") and f" {path.relative_to(REPO)}" in first, first
    load_config(path)


def test_generated_config_classes_pickle_by_reference() -> None:
    # `datasets` fingerprints TRL's tokenizing functions, which close over the trainer config, by
    # pickling them; a class pickle cannot find by module and name makes it use a random
    # fingerprint, and the tokenized data is then built again on every run.
    import pickle

    from dpo_cli.config.variants import RUN_CONFIG_CLASSES, TRAINING_SECTIONS

    for cls in (*TRAINING_SECTIONS.values(), *RUN_CONFIG_CLASSES.values()):
        assert pickle.loads(pickle.dumps(cls)) is cls, cls.__name__
    for name, cls in TRAINING_SECTIONS.items():
        assert pickle.loads(pickle.dumps(cls())) == cls(), name
