"""Every preference-optimization variant trains on the tiny model, from the shipped configs.

DPO's loss types are checked against their closed form at step 1 (policy == reference, every
log-ratio 0); KTO trains on unpaired rows; ORPO and SimPO load no reference model at all.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dpo_cli.config.algorithms import expected_first_loss
from dpo_cli.config.loader import load_config
from dpo_cli.config.schema import DPO_LOSS_TYPES
from dpo_cli.rundir import read_metrics
from dpo_cli.train.trainer import build_trainer
from tests.conftest import ROOT, SAMPLE

pytestmark = pytest.mark.integration

VARIANTS = ROOT / "configs" / "variants"
LN2 = math.log(2)
# Short runs: a few steps on a slice of the bundled data, no held-out split, no checkpoints.
SHORT = [
    "training.max_steps=2",
    "training.logging_steps=1",
    "training.max_length=64",
    "training.per_device_train_batch_size=4",
    "training.save_strategy=no",
    "data.max_train_samples=16",
    "data.eval=null",
    "data.eval_fraction=null",
]
# Losses whose default-suite run is enough (closed forms with beta in them, and the combined loss);
# the others are `slow`.
FAST_LOSSES = {"ipo", "hinge"}


def first_steps(config: Path, tiny_model_dir: Path, out: Path, *extra: str):
    """Build the trainer exactly as `dpo train` does, train the short run, return it and its logged steps."""
    cfg = load_config(
        config,
        [
            f"model.name_or_path={tiny_model_dir}",
            f"output_dir={out}",
            f"data.train={SAMPLE / 'train.jsonl'}",
            *SHORT,
            *extra,
        ],
    )
    out.mkdir(parents=True)
    built = build_trainer(cfg, out / "metrics.jsonl")
    built.trainer.train()
    steps = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r and "train_runtime" not in r]
    return cfg, built, steps


def _loss_params():
    for loss in DPO_LOSS_TYPES:
        marks = () if loss in FAST_LOSSES else (pytest.mark.slow,)
        yield pytest.param(loss, marks=marks, id=loss)


@pytest.mark.parametrize("loss", _loss_params())
def test_dpo_loss_type_trains_and_starts_at_its_closed_form(loss: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    extra = [f"training.loss_type={loss}", "training.beta=0.2"]
    if loss == "exo_pair":
        extra.append("training.label_smoothing=0.001")  # TRL's rule; the EXO paper's value
    cfg, _, steps = first_steps(ROOT / "configs" / "smoke.yaml", tiny_model_dir, tmp_path / loss, *extra)
    assert [r["step"] for r in steps] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in steps)
    expected = expected_first_loss(cfg)
    if loss == "sft":
        assert expected is None  # the policy's own NLL: no closed form
    else:
        assert expected is not None
        assert steps[0]["loss"] == pytest.approx(expected, abs=1e-3)


def test_closed_forms_named_in_the_issue() -> None:
    from dpo_cli.config.algorithms import expected_initial_loss

    assert expected_initial_loss(["sigmoid"], None, 0.1) == pytest.approx(LN2)
    assert expected_initial_loss(["ipo"], None, 0.2) == pytest.approx((1 / (2 * 0.2)) ** 2)
    assert expected_initial_loss(["hinge"], None, 0.1) == 1.0


def test_kto_trains_on_unpaired_rows(tiny_model_dir: Path, tmp_path: Path) -> None:
    import json

    rows = [json.loads(line) for line in (SAMPLE / "train.jsonl").read_text().splitlines()[:12]]
    unpaired = tmp_path / "unpaired.jsonl"
    with unpaired.open("w") as handle:
        for i, row in enumerate(rows):  # 2 desirable to 1 undesirable, as thumbs data tends to be
            good = i % 3 != 2
            handle.write(
                json.dumps(
                    {"prompt": row["prompt"], "completion": row["chosen" if good else "rejected"], "label": good}
                )
                + "\n"
            )
    cfg, built, steps = first_steps(VARIANTS / "kto.yaml", tiny_model_dir, tmp_path / "kto", f"data.train={unpaired}")
    assert type(built.trainer).__name__ == "KTOTrainer"
    assert set(built.data.train.column_names) == {"prompt", "completion", "label"}
    assert [r["step"] for r in steps] == [1, 2]
    assert "kl" in steps[0]  # KTO's own metric: its KL estimate
    assert steps[0]["loss"] == pytest.approx(expected_first_loss(cfg), abs=1e-3)  # 0.5: 1 - sigmoid(0)


@pytest.mark.slow
def test_kto_unpairs_preference_pairs_when_asked(tiny_model_dir: Path, tmp_path: Path) -> None:
    _, built, steps = first_steps(VARIANTS / "kto.yaml", tiny_model_dir, tmp_path / "kto", "data.unpair=true")
    labels = built.data.train["label"]
    assert len(labels) == 32 and sum(labels) == 16  # 16 pairs -> 16 desirable + 16 undesirable rows
    assert len(steps) == 2


def _counting_from_pretrained(monkeypatch) -> list[str]:
    """Record every causal-LM load (the real loader still runs)."""
    from transformers import AutoModelForCausalLM

    loads: list[str] = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def counting(cls, source, *args, **kwargs):
        loads.append(str(source))
        return real(cls, source, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(counting))
    return loads


@pytest.mark.parametrize(("name", "trainer"), [("orpo", "ORPOTrainer"), ("simpo", "CPOTrainer")])
def test_reference_free_algorithms_load_no_reference(
    name: str, trainer: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    loads = _counting_from_pretrained(monkeypatch)
    # Full fine-tuning: DPO would load a second copy of the model as its reference here.
    cfg, built, steps = first_steps(VARIANTS / f"{name}.yaml", tiny_model_dir, tmp_path / name, "lora=null")
    assert cfg.reference.kind == "none" and cfg.mode == "full"
    assert type(built.trainer).__name__ == trainer
    assert getattr(built.trainer, "ref_model", None) is None
    assert loads == [str(tiny_model_dir)]  # the policy, and nothing else
    assert [r["step"] for r in steps] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in steps)
    if name == "simpo":
        assert built.trainer.loss_type == "simpo" and built.trainer.cpo_alpha == 0.0


def test_full_dpo_loads_its_reference(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    # The counterpart of the test above, so that its `loads` check can fail.
    loads = _counting_from_pretrained(monkeypatch)
    # Online reference (unset, full fine-tuning precomputes instead and loads the model once).
    first_steps(
        ROOT / "configs" / "smoke.yaml",
        tiny_model_dir,
        tmp_path / "dpo",
        "lora=null",
        "training.precompute_ref_log_probs=false",
    )
    assert loads == [str(tiny_model_dir)] * 2


# What each shipped variant config shows at its first steps, beyond training at all.
EXPECT = {
    "cpo": lambda cfg, built, steps: built.trainer.cpo_alpha == 1.0,
    "ipo": lambda cfg, built, steps: (
        cfg.loss_types() == ["ipo"] and steps[0]["loss"] == pytest.approx((1 / (2 * cfg.training.beta)) ** 2, rel=1e-3)
    ),
    "kto": lambda cfg, built, steps: "kl" in steps[0] and set(built.data.train.column_names) >= {"completion", "label"},
    "orpo": lambda cfg, built, steps: getattr(built.trainer, "ref_model", None) is None,
    # MPO/RPO-style mix: the SFT term adds the policy's NLL to the preference loss.
    "rpo": lambda cfg, built, steps: (
        cfg.loss_types() == ["sigmoid", "sft"] and steps[0]["loss"] > cfg.training.loss_weights[0] * LN2
    ),
    # Robust DPO's smoothing terms cancel to ln 2 at a zero margin.
    "robust": lambda cfg, built, steps: steps[0]["loss"] == pytest.approx(LN2, abs=1e-3),
    "simpo": lambda cfg, built, steps: built.trainer.loss_type == "simpo" and built.trainer.cpo_alpha == 0.0,
}


@pytest.mark.parametrize("config", sorted(VARIANTS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_variant_config_trains(config: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    # Every file in configs/variants/ trains in the default suite, a few steps on the tiny model.
    from dpo_cli.config.algorithms import ALGORITHMS

    cfg, built, steps = first_steps(config, tiny_model_dir, tmp_path / config.stem)
    assert type(built.trainer).__name__ == ALGORITHMS[cfg.algorithm].trainer
    assert [r["step"] for r in steps] == [1, 2] and all(math.isfinite(r["loss"]) for r in steps)
    expected = expected_first_loss(cfg)
    if expected is not None:
        assert steps[0]["loss"] == pytest.approx(expected, abs=1e-3)
    assert EXPECT[config.stem](cfg, built, steps), config.stem


def test_orpo_sweep_sweeps_lambda_and_says_so(tiny_model_dir: Path, tmp_path: Path) -> None:
    from dpo_cli.fsio import read_json
    from dpo_cli.sweep.runner import run_sweep

    overrides = [
        f"model.name_or_path={tiny_model_dir}",
        f"output_dir={tmp_path / 'run'}",
        f"data.train={SAMPLE / 'train.jsonl'}",
        f"data.eval={SAMPLE / 'eval.jsonl'}",
        "training.max_steps=2",
        "training.logging_steps=1",
        "training.max_length=64",
        "training.save_steps=100",
        "data.max_train_samples=16",
        "data.max_eval_samples=8",
    ]
    result = run_sweep(VARIANTS / "orpo.yaml", overrides, betas=[0.05, 0.5], sweep_dir=tmp_path / "sweep")
    assert [r["status"] for r in result.rows] == ["completed", "completed"]
    for row in result.rows:
        cfg = load_config(result.sweep_dir / row["point"] / "config.yaml")
        assert cfg.algorithm == "orpo" and cfg.training.beta == row["beta"]
        assert "precompute_ref_log_probs" not in cfg.training.model_fields_set
        assert row["reward_accuracy"] is not None and row["chosen_logp_shift"] is None
    report = (result.sweep_dir / "results.md").read_text()
    assert "Swept: `training.beta`, ORPO's lambda" in report
    assert "ORPO's lambda" in read_json(result.sweep_dir / "sweep.json")["swept"]


@pytest.mark.parametrize("name", ["kto", "simpo"])
def test_eval_works_for_other_algorithms(name: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    # Train a few steps with a held-out split, then `dpo eval` the run: preference metrics from
    # the algorithm's own trainer, generations and pathology checks from policy and reference.
    from typer.testing import CliRunner

    from dpo_cli.cli.main import app
    from dpo_cli.train.run import train

    out = tmp_path / name
    extra = ["data.unpair=true"] if name == "kto" else []
    overrides = [
        f"model.name_or_path={tiny_model_dir}",
        f"output_dir={out}",
        f"data.train={SAMPLE / 'train.jsonl'}",
        *[o for o in SHORT if not o.startswith("data.eval")],
        f"data.eval={SAMPLE / 'eval.jsonl'}",
        "data.max_eval_samples=16",
        "eval.num_prompts=4",
        "eval.max_new_tokens=8",
        "eval.batch_size=4",
        *extra,
    ]
    train(load_config(VARIANTS / f"{name}.yaml", overrides))
    result = CliRunner().invoke(app, ["eval", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval" / "report.json").read_text())
    policy, reference = report["preference"]["policy"], report["preference"]["reference"]
    assert math.isfinite(policy["dpo_loss"]) and math.isfinite(reference["dpo_loss"])
    assert report["pathology"]["policy"]["n"] == 4 == report["pathology"]["reference"]["n"]
    if name == "kto":
        assert reference["dpo_loss"] == pytest.approx(0.5, abs=1e-3)  # KTO's loss at the reference
