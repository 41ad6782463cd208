"""Diagnosis of logged metrics: closed-form initial losses and the failure patterns."""

from __future__ import annotations

import math

import pytest

from dpo_cli.config.algorithms import LN2, expected_initial_loss
from dpo_cli.train.diagnose import diagnose, summarize


@pytest.mark.parametrize(
    ("losses", "weights", "beta", "expected"),
    [
        (["sigmoid"], None, 0.1, LN2),
        (["robust"], None, 0.1, LN2),
        (["hinge"], None, 0.1, 1.0),
        (["ipo"], None, 0.1, 25.0),
        (["ipo"], None, 0.5, 1.0),
        (["sigmoid", "hinge"], [0.5, 2.0], 0.1, 0.5 * LN2 + 2.0),
        (["sigmoid", "sft"], None, 0.1, None),
    ],
)
def test_expected_initial_loss(losses, weights, beta, expected) -> None:
    got = expected_initial_loss(losses, weights, beta)
    assert got == expected if expected is None else math.isclose(got, expected)


def rec(step: int, loss: float, acc: float = 0.5, chosen: float = 0.0, rejected: float = 0.0) -> dict:
    return {
        "step": step,
        "loss": loss,
        "rewards/accuracies": acc,
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
    }


def test_healthy_run_is_ok() -> None:
    records = [rec(1, LN2), rec(5, 0.6, 0.7, 0.1, -0.1), rec(10, 0.5, 0.8, 0.2, -0.3)]
    findings = diagnose(records, expected_loss=LN2)
    assert [f.level for f in findings] == ["ok"]


def test_reference_mismatch() -> None:
    findings = diagnose([rec(1, 0.9), rec(2, 0.8)], expected_loss=LN2)
    assert any("reference mismatch" in f.message for f in findings)


def test_nothing_learned() -> None:
    records = [rec(1, LN2), rec(2, LN2), rec(3, LN2), rec(4, LN2)]
    findings = diagnose(records, expected_loss=LN2)
    assert findings[0].level == "error" and "nothing is being learned" in findings[0].message


def test_overfitting() -> None:
    records = [rec(1, LN2), rec(2, 0.1, 1.0, 1.0, -2.0), {"step": 2, "eval_loss": 0.1, "eval_rewards/accuracies": 0.99}]
    assert any("above 0.95" in f.message for f in diagnose(records, expected_loss=LN2))


def test_both_rewards_falling() -> None:
    records = [rec(1, LN2, 0.5, 0.0, 0.0), rec(2, 0.6, 0.7, -0.5, -0.8), rec(3, 0.5, 0.8, -1.0, -1.6)]
    assert any("both falling" in f.message for f in diagnose(records, expected_loss=LN2))


def test_accuracy_stuck_near_chance() -> None:
    records = [rec(i, LN2 - 0.001 * i, 0.5, 0.01 * i, 0.01 * i) for i in range(1, 8)]
    assert any("stuck near 0.5" in f.message for f in diagnose(records, expected_loss=LN2))


def test_nan_is_an_error() -> None:
    findings = diagnose([rec(1, LN2), rec(2, float("nan"))], expected_loss=LN2)
    assert findings[0].level == "error" and "NaN" in findings[0].message


def test_summary_numbers() -> None:
    records = [
        rec(1, LN2),
        rec(10, 0.4, 0.9),
        {"step": 10, "eval_loss": 0.45, "eval_rewards/accuracies": 0.8, "eval_rewards/margins": 0.7},
    ]
    s = summarize(records)
    assert s["initial_loss"] == LN2 and s["final_loss"] == 0.4 and s["steps"] == 10
    assert s["eval_reward_accuracy"] == 0.8 and s["eval_reward_margin"] == 0.7
