"""Checks of KTO's unpaired rows (prompt, completion, boolean label), for `algorithm: kto` configs.

The row checks mirror the pair checks (fields, conversations, duplicates, leakage, text); the
split-level check is KTO's own: are desirable and undesirable rows balanced for the configured
`desirable_weight` / `undesirable_weight`? Token checks are not replayed for unpaired rows.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from dpo_cli.validation.checks import (
    conversation_problem,
    digest,
    kto_weight_advice,
    normalized,
    text_of,
    text_problems,
)
from dpo_cli.validation.formats import Layout, LayoutError, detect_layout

if TYPE_CHECKING:
    from dpo_cli.config.schema import DataColumns

Problem = tuple[str, str]


def detect_kto_layout(columns: DataColumns, keys: list[str], sample: list[dict[str, Any]], unpair: bool) -> Layout:
    """The layout of a KTO split: unpaired rows, or pairs when `data.unpair` will split them.

    Raises:
        LayoutError: Pairs without `data.unpair`, or neither layout.
    """
    if columns.completion in keys and columns.label in keys:
        prompt = columns.prompt or "prompt"
        if prompt not in keys:
            raise LayoutError(f"unpaired rows need a prompt column `{prompt}`; columns found: {', '.join(keys)}")
        first = next((row[columns.completion] for row in sample if row.get(columns.completion) is not None), None)
        conversational = isinstance(first, list) and all(isinstance(m, dict) and "role" in m for m in first)
        return Layout(conversational, False, prompt, columns.completion, columns.label, unpaired=True)
    layout = detect_layout(columns, keys, sample)  # pairs, or LayoutError naming what was found
    if not unpair:
        raise LayoutError(
            "preference pairs, but `algorithm: kto` trains on unpaired rows (prompt, completion, label); set "
            "`data.unpair: true` to split each pair into a desirable and an undesirable row"
        )
    return layout


class UnpairedRows:
    """Per-row checks and label counts of one unpaired split; used by the runner's split checker."""

    def __init__(self) -> None:
        self.desirable = 0
        self.undesirable = 0
        self.row_index: dict[int, int] = {}

    def check(self, checker: Any, raw: Any) -> tuple[Any, tuple | None, list[Problem]]:
        """Like the pair check: `(raw, (prompt, completion, completion) or None, problems)`."""
        layout: Layout = checker.layout
        row = raw.data
        problems: list[Problem] = []
        values = checker.field_values(raw, [("prompt", layout.prompt), ("completion", layout.chosen)], problems)
        label = row.get(layout.rejected)
        if layout.rejected not in row:
            problems.append(("missing_field", f"`{layout.rejected}`"))
        elif label is None:
            problems.append(("null_field", f"`{layout.rejected}`"))
        elif not isinstance(label, bool):
            problems.append(("wrong_type", f"`{layout.rejected}`: {label!r}, expected true or false"))
        if problems and any(c in ("missing_field", "null_field", "wrong_type", "empty_field", "bad_conversation")
                            for c, _ in problems):
            return raw, None, problems
        prompt, completion = values["prompt"], values["completion"]
        if layout.conversational:
            issue = conversation_problem(prompt, completion)
            if issue:
                return raw, None, [*problems, ("bad_conversation", f"completion: {issue}")]
        prompt_text, completion_text = text_of(prompt), text_of(completion)
        problems += [(c, "") for c in text_problems([prompt_text, completion_text])]
        ref = checker._ref(raw)
        key = json.dumps([prompt, completion, label], sort_keys=True, ensure_ascii=False)
        first = self.row_index.setdefault(digest(key), ref)
        if first != ref:
            problems.append(("duplicate_pair", f"same row as {checker._where(first)}"))
        # The same prompt with several rated completions is KTO's normal case: no duplicate_prompt here.
        prompt_key = digest(normalized(prompt_text))
        checker.prompt_index.setdefault(prompt_key, ref)
        leaked = checker.train.prompt_index.get(prompt_key) if checker.train is not None else None
        if leaked is not None:
            problems.append(("leakage", f"prompt of {checker.train._where(leaked)}"))
        if first == ref:
            if label:
                self.desirable += 1
            else:
                self.undesirable += 1
        lengths = checker.report.chars
        lengths["prompt"].add(len(prompt_text))
        lengths["chosen" if label else "rejected"].add(len(completion_text))
        return raw, (prompt, completion, completion), problems

    def finish(self, findings: Any, weights: tuple[float, float]) -> None:
        advice = kto_weight_advice(self.desirable, self.undesirable, *weights)
        if advice:
            findings.note("label_balance", advice)
