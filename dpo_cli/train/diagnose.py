"""Read a run's logged metrics and say, in words, whether the run is healthy.

Pure functions over the records of `metrics.jsonl`, so they are tested without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# A first loss further than this from its closed form means policy and reference differ at step 0.
INITIAL_LOSS_TOLERANCE = 0.05


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "warning" or "error"
    message: str


def train_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if "loss" in r and "train_runtime" not in r]


def eval_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if "eval_loss" in r]


def is_bad_number(value: Any) -> bool:
    return isinstance(value, float) and (math.isnan(value) or math.isinf(value))


def diagnose(records: list[dict[str, Any]], *, expected_loss: float | None) -> list[Finding]:
    """Findings about a finished or stopped run, worst first."""
    train = train_records(records)
    if not train:
        return [Finding("warning", "no training step was logged; nothing to diagnose")]
    findings: list[Finding] = []
    first, last = train[0], train[-1]
    bad = next((r for r in train if any(is_bad_number(v) for v in r.values())), None)
    if bad is not None:
        findings.append(Finding("error", f"NaN/inf in the logged metrics at step {bad.get('step')}"))
    if expected_loss is not None and not is_bad_number(first["loss"]):
        gap = abs(first["loss"] - expected_loss)
        if gap > INITIAL_LOSS_TOLERANCE:
            findings.append(
                Finding(
                    "warning",
                    f"first loss {first['loss']:.4f} is far from its expected {expected_loss:.4f}: the policy and "
                    "the reference differ before training (reference mismatch: wrong reference model, an adapter "
                    "applied to one side only, or dropout left on)",
                )
            )
        else:
            findings.append(Finding("ok", f"first loss {first['loss']:.4f} matches the expected {expected_loss:.4f}"))
    if len(train) >= 3 and _nothing_learned(train[1:]):
        findings.append(
            Finding(
                "error",
                "nothing is being learned: after the first steps the loss stays at exactly its starting value and the "
                "rewards are zero (frozen weights, a learning rate of 0, or adapters that are not trainable)",
            )
        )
    acc = _last(records, "eval_rewards/accuracies") or last.get("rewards/accuracies")
    if acc is not None and acc > 0.95:
        findings.append(
            Finding(
                "warning",
                f"reward accuracy {acc:.2f} is above 0.95: likely overfitting or a trivially separable preference; "
                "compare with held-out pairs, raise beta or train less",
            )
        )
    chosen = [r["rewards/chosen"] for r in train if "rewards/chosen" in r]
    rejected = [r["rewards/rejected"] for r in train if "rewards/rejected" in r]
    if len(chosen) >= 3 and chosen[-1] < chosen[0] and rejected[-1] < rejected[0] and chosen[-1] < 0:
        findings.append(
            Finding(
                "warning",
                "chosen and rejected rewards are both falling: the model lowers the likelihood of the good answers "
                "too; consider a larger beta, a lower learning rate, or adding the SFT term (loss_type: [sigmoid, sft])",
            )
        )
    accs = [r["rewards/accuracies"] for r in train[1:] if "rewards/accuracies" in r]
    if len(accs) >= 3 and max(accs[len(accs) // 2 :]) <= 0.6:
        findings.append(
            Finding(
                "warning",
                "reward accuracy is stuck near 0.5: the preference is not being learned; check that chosen and "
                "rejected are not swapped, and the learning rate",
            )
        )
    order = {"error": 0, "warning": 1, "ok": 2}
    return sorted(findings, key=lambda f: order[f.level])


def _nothing_learned(records: list[dict[str, Any]]) -> bool:
    return all(
        abs(r.get("loss", 0.0) - records[0].get("loss", 0.0)) < 1e-6
        and abs(r.get("rewards/chosen", 0.0)) < 1e-8
        and abs(r.get("rewards/rejected", 0.0)) < 1e-8
        for r in records
    )


def _last(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if key in r]
    return values[-1] if values else None


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline numbers of a run."""
    train = train_records(records)
    evals = eval_records(records)
    summary: dict[str, Any] = {
        "steps": train[-1]["step"] if train else 0,
        "initial_loss": train[0]["loss"] if train else None,
        "final_loss": train[-1]["loss"] if train else None,
        "final_train_reward_accuracy": train[-1].get("rewards/accuracies") if train else None,
    }
    if evals:
        summary["eval_loss"] = evals[-1]["eval_loss"]
        summary["eval_reward_accuracy"] = evals[-1].get("eval_rewards/accuracies")
        summary["eval_reward_margin"] = evals[-1].get("eval_rewards/margins")
    return summary
