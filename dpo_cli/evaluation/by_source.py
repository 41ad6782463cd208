"""Held-out metrics per eval source, for a mixture given as a list of eval sources.

The combined eval set is what training evaluates on as it goes; at the end (and in
`dpo eval`) each source is evaluated on its own by the same trainer, so a mixture shows which
source the model learned. DPO's and KTO's trainers prepare raw rows passed to `evaluate`
themselves; ORPO's and CPO's do not, so their rows are tokenized here with the trainer's own
public steps, exactly as their `__init__` prepares an eval set.
"""

from __future__ import annotations

import sys
from typing import Any

# TRL's eval keys (without the prefix) -> report names.
KEYS = {"rewards/accuracies": "reward_accuracy", "rewards/margins": "reward_margin", "loss": "loss",
        "logps/chosen": "logp_chosen", "logps/rejected": "logp_rejected", "kl": "kl"}


def evaluate_by_source(trainer: Any, datasets: dict[str, Any], tokenizer: Any, prefix: str = "eval") -> dict[str, Any]:
    """`{source: {reward_accuracy, reward_margin, loss, ..., rows}}` for each eval source.

    A setup TRL cannot evaluate on new rows after training (full fine-tuning with precomputed
    reference log-probs and no reference model kept) gives `{"unavailable": reason}`.
    """
    prepared = {name: _prepared(trainer, ds, tokenizer) for name, ds in datasets.items()}
    try:
        raw = trainer.evaluate(eval_dataset=prepared, metric_key_prefix=prefix)
    except ValueError as exc:
        reason = str(exc).splitlines()[0][:200]
        print(f"warning: held-out metrics per source unavailable: {reason}", file=sys.stderr)
        return {"unavailable": reason}
    out: dict[str, Any] = {}
    for name, ds in datasets.items():
        row = {label: float(raw[f"{prefix}_{name}_{key}"]) for key, label in KEYS.items()
               if f"{prefix}_{name}_{key}" in raw}
        row["rows"] = len(ds)
        out[name] = row
    return out


def _prepared(trainer: Any, dataset: Any, tokenizer: Any) -> Any:
    if not hasattr(trainer, "tokenize_row"):
        return dataset  # DPOTrainer / KTOTrainer: `evaluate` prepares raw rows
    from trl.data_utils import maybe_apply_chat_template, maybe_extract_prompt

    dataset = dataset.map(maybe_extract_prompt)
    dataset = dataset.map(maybe_apply_chat_template, fn_kwargs={"tokenizer": tokenizer})
    return dataset.map(trainer.tokenize_row)
