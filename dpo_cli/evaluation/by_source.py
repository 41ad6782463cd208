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
KEYS = {
    "rewards/accuracies": "reward_accuracy",
    "rewards/margins": "reward_margin",
    "loss": "loss",
    "logps/chosen": "logp_chosen",
    "logps/rejected": "logp_rejected",
    "kl": "kl",
}


def evaluate_by_source(trainer: Any, datasets: dict[str, Any], tokenizer: Any, prefix: str = "eval") -> dict[str, Any]:
    """`{source: {reward_accuracy, reward_margin, loss, ..., rows}}` for each eval source.

    TRL's trainers log their reward metrics under `eval_` whatever the prefix, so each
    source's numbers are read from the log record its evaluation writes; `metrics.jsonl`
    (whose `eval_*` records describe the combined eval set) is left out of it meanwhile.
    A setup TRL cannot evaluate on new rows after training (full fine-tuning with precomputed
    reference log-probs and no reference model kept) gives `{"unavailable": reason}`.
    """
    from transformers import TrainerCallback

    from dpo_cli.train.callbacks import MetricsWriter

    class Capture(TrainerCallback):
        def __init__(self) -> None:
            self.records: list[dict[str, Any]] = []

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            self.records.append(dict(logs or {}))

    prepared = {name: _prepared(trainer, ds, tokenizer) for name, ds in datasets.items()}
    writers = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, MetricsWriter)]
    capture = Capture()
    for writer in writers:
        trainer.remove_callback(writer)
    trainer.add_callback(capture)
    try:
        trainer.evaluate(eval_dataset=prepared, metric_key_prefix=prefix)
    except ValueError as exc:
        reason = str(exc).splitlines()[0][:200]
        print(f"warning: held-out metrics per source unavailable: {reason}", file=sys.stderr)
        return {"unavailable": reason}
    finally:
        trainer.remove_callback(capture)
        for writer in writers:
            trainer.add_callback(writer)
    out: dict[str, Any] = {}
    for name, ds in datasets.items():
        own = f"{prefix}_{name}_"
        record = next((r for r in capture.records if f"{own}loss" in r or f"{own}runtime" in r), {})
        values = {
            k[len(own) :] if k.startswith(own) else k[len("eval_") :]: v
            for k, v in record.items()
            if k.startswith((own, "eval_"))
        }
        row = {label: float(values[key]) for key, label in KEYS.items() if key in values}
        row["rows"] = len(ds)
        out[name] = row
    return out


def _prepared(trainer: Any, dataset: Any, tokenizer: Any) -> Any:
    if not hasattr(trainer, "tokenize_row"):
        return dataset  # DPOTrainer / KTOTrainer: `evaluate` prepares raw rows
    from trl.data_utils import maybe_apply_chat_template, maybe_extract_prompt

    dataset = dataset.map(maybe_extract_prompt)
    dataset = dataset.map(maybe_apply_chat_template, fn_kwargs={"processing_class": tokenizer})
    return dataset.map(trainer.tokenize_row)
