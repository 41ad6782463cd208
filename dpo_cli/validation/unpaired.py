"""Checks of KTO's unpaired rows (prompt, completion, boolean label), for `algorithm: kto` configs.

The rows come out of the same converters as pairs (`dpo_cli.data.layouts`, layout `kto`), which
already refuse missing fields and non-boolean labels. The row checks here mirror the pair
checks (duplicates, leakage, text); the split-level check is KTO's own: are desirable and
undesirable rows balanced for the configured `desirable_weight` / `undesirable_weight`?
Token checks are not replayed for unpaired rows.
"""

from __future__ import annotations

import json
from typing import Any

from dpo_cli.data.rows import text_of
from dpo_cli.validation.checks import digest, kto_weight_advice, normalized, text_problems

Problem = tuple[str, str]


class UnpairedRows:
    """Per-row checks and label counts of one unpaired split; used by the runner's split checker."""

    def __init__(self) -> None:
        self.desirable = 0
        self.undesirable = 0
        self.row_index: dict[int, int] = {}

    def check(self, checker: Any, raw: Any, row: dict[str, Any]) -> list[Problem]:
        """The problems of one converted row (`prompt`, `completion`, `label`)."""
        prompt, completion, label = row["prompt"], row["completion"], row["label"]
        prompt_text, completion_text = text_of(prompt), text_of(completion)
        problems: list[Problem] = [(c, "") for c in text_problems([prompt_text, completion_text])]
        ref = checker.ref(raw)
        key = json.dumps([prompt, completion, label], sort_keys=True, ensure_ascii=False)
        first = self.row_index.setdefault(digest(key), ref)
        if first != ref:
            problems.append(("duplicate_pair", f"same row as {checker.where(first)}"))
        # The same prompt with several rated completions is KTO's normal case: no duplicate_prompt here.
        prompt_key = digest(normalized(prompt_text))
        checker.prompt_index.setdefault(prompt_key, ref)
        leaked = checker.train.prompt_index.get(prompt_key) if checker.train is not None else None
        if leaked is not None:
            problems.append(("leakage", f"prompt of {checker.train.where(leaked)}"))
        if first == ref:
            if label:
                self.desirable += 1
            else:
                self.undesirable += 1
        lengths = checker.report.chars
        lengths["prompt"].add(len(prompt_text))
        lengths["chosen" if label else "rejected"].add(len(completion_text))
        return problems

    def finish(self, findings: Any, weights: tuple[float, float]) -> None:
        advice = kto_weight_advice(self.desirable, self.undesirable, *weights)
        if advice:
            findings.note("label_balance", advice)
