"""The registry of source layouts: how each is detected and converted to TRL's format.

Every source is converted by exactly one entry of `LAYOUTS`, the same in `dpo validate-data`
and `dpo train`. Auto-detection tries the entries in registry order (the most specific shapes
first) on the source's first rows; `data.format` (or a source's own `format`) names one
instead. A detector claims a source only on columns that are distinctive for its format, so
the order decides only between shapes that cannot both be meant.

`detect` raises `LayoutError` with a message that says what the rows look like and, where a
column mapping would fix it, the mapping, after checking that the mapping does fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dpo_cli.data.layouts.base import Layout, LayoutError, Match, Options, Sample
from dpo_cli.data.layouts.chat import CONTEXT, OASST, OPENAI, SHAREGPT
from dpo_cli.data.layouts.columns import ALPACA, DIALOGUE, HH, STACK_EXCHANGE, TRL
from dpo_cli.data.layouts.labelled import ARENA, PAIR_LABEL, RANKED
from dpo_cli.data.layouts.refusals import explain_no_pairs, explain_unpaired_for_pairs
from dpo_cli.data.layouts.unpaired import KTO
from dpo_cli.data.rows import RowProblem, as_messages, finish_pair, finish_unpaired

if TYPE_CHECKING:
    from dpo_cli.config.schema import DataColumns

__all__ = [
    "LAYOUTS",
    "LAYOUT_NAMES",
    "Layout",
    "LayoutError",
    "Match",
    "Options",
    "Sample",
    "converter_for",
    "detect",
    "render_formats_table",
]

LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        OPENAI,
        OASST,
        SHAREGPT,
        ARENA,
        CONTEXT,
        STACK_EXCHANGE,
        HH,
        DIALOGUE,
        ALPACA,
        TRL,
        PAIR_LABEL,
        RANKED,
        KTO,
    )
}
LAYOUT_NAMES = tuple(LAYOUTS)
# `data.format` values that choose the representation (strings or messages) rather than a layout.
REPRESENTATIONS = ("standard", "conversational")
# Share of the sampled rows that must convert for a suggested mapping to be printed.
SUGGESTION_MIN_SHARE = 0.5
PROMPT_WORDS = ("prompt", "question", "instruction", "input", "query", "context", "problem", "request", "task")
ROLE_WORDS = {
    "prompt": PROMPT_WORDS,
    "chosen": ("chosen", "preferred", "better", "good", "win", "accepted", "positive"),
    "rejected": ("rejected", "dispreferred", "worse", "bad", "lose", "los", "negative"),
}


def detect(sample: Sample, *, forced: str | None = None, unpaired: bool = False, unpair: bool = False) -> Match:
    """The layout of a source from its first rows.

    Args:
        sample: The first parsed rows and the column mapping.
        forced: A layout name from `data.format`; None detects.
        unpaired: The algorithm trains on unpaired rows (KTO).
        unpair: `data.unpair`: pairs are accepted for KTO and split in two.

    Raises:
        LayoutError: Not a layout that can train here; the message explains and suggests.
    """
    layouts = [LAYOUTS[forced]] if forced else list(LAYOUTS.values())
    found = next((m for m in (layout.detect(sample) for layout in layouts) if m is not None), None)
    if found is None:
        if forced:
            layout = LAYOUTS[forced]
            raise LayoutError(
                f"`format: {forced}` ({layout.title}) expects {layout.rule}; "
                f"columns found: {', '.join(sample.keys) or 'none'}"
            )
        raise LayoutError(explain_no_pairs(sample) or _missing_columns(sample, unpaired))
    if found.kind == "unpaired" and not unpaired:
        raise LayoutError(explain_unpaired_for_pairs(sample, found.described), unpaired=True)
    if found.kind == "pairs" and unpaired and not unpair:
        raise LayoutError(
            f"{found.described}: preference pairs, but `algorithm: kto` trains on unpaired rows (prompt, completion, "
            "label); set `data.unpair: true` to split each pair into a desirable and an undesirable row"
        )
    if found.kind == "pairs":
        _check_prompts(sample, found, unpaired, unpair)
    return found


def converter_for(found: Match, messages: bool, options: Options) -> Callable[[dict[str, Any]], list]:
    """Row -> list of TRL rows (or `RowProblem`s for pairs of it that cannot train).

    Raises:
        RowProblem: The row as a whole cannot train (a missing field, a tie, ...).
    """
    layout = LAYOUTS[found.layout]
    convert = layout.build(found, messages, options)
    finish = finish_pair if found.kind == "pairs" else finish_unpaired
    wrap = messages and found.native == "text" and not layout.builds_messages

    def run(row: dict[str, Any]) -> list:
        out = convert(row)
        if out.__class__ is dict:
            return [finish(as_messages(out, found.kind) if wrap else out, messages)]
        results = []
        for item in out:
            try:
                results.append(finish(as_messages(item, found.kind) if wrap else item, messages))
            except RowProblem as problem:
                results.append(problem)
        return results

    return run


# --- explanations and suggestions ------------------------------------------------------------------


def _missing_columns(sample: Sample, unpaired: bool) -> str:
    cols = sample.columns
    missing = [f"`{getattr(cols, r)}` (for {r})" for r in ("chosen", "rejected") if not sample.has(getattr(cols, r))]
    text = f"missing column {', '.join(missing) or '(none)'}; columns found: {', '.join(sample.keys) or 'none'}"
    suggestion = _suggest(sample, unpaired)
    if suggestion:
        return f"{text}. Map them in the config: {suggestion}"
    return f"{text}. Map them with `data.columns` in the config (see the formats table in docs/data-formats.md)"


def _candidates(sample: Sample, role: str) -> list[str]:
    keys = [k for k in sample.keys if k not in _taken(sample)]
    name = getattr(sample.columns, role) or role
    close = difflib.get_close_matches(role, keys, n=3, cutoff=0.5) + difflib.get_close_matches(
        name, keys, n=3, cutoff=0.5
    )
    worded = [k for k in keys if any(w in k.lower() for w in ROLE_WORDS[role])]
    return list(dict.fromkeys(close + worded))


def _taken(sample: Sample) -> set[str]:
    cols = sample.columns
    return {c for c in (cols.prompt, cols.chosen, cols.rejected) if c and sample.has(c)}


def _suggest(sample: Sample, unpaired: bool) -> str | None:
    """A `data.columns` mapping that makes the sample convert, checked before it is offered."""
    cols = sample.columns
    roles = [r for r in ("chosen", "rejected") if not sample.has(getattr(cols, r))]
    options = {r: _candidates(sample, r) for r in roles}
    if not all(options.values()):
        return None
    # Prompt: a likely-named column, else any other text column (a file's names can be anything).
    texts = [k for k in sample.keys if isinstance(sample.first(k), str) and k not in _taken(sample)]
    prompt_options = (
        [None] if sample.has(cols.prompt) else [*dict.fromkeys([*_candidates(sample, "prompt")[:3], *texts[:4]]), None]
    )
    for chosen in options.get("chosen", [cols.chosen])[:3]:
        for rejected in options.get("rejected", [cols.rejected])[:3]:
            if chosen == rejected:
                continue
            for prompt in prompt_options:
                if prompt in (chosen, rejected):
                    continue
                update = {k: v for k, v in (("chosen", chosen), ("rejected", rejected)) if k in roles}
                if prompt is not None:
                    update["prompt"] = prompt
                if _works(sample, update, unpaired):
                    flags = " ".join(f"--{k}-column {v}" for k, v in update.items())
                    return "; ".join(f"data.columns.{k}: {v}" for k, v in update.items()) + f" (with --data: {flags})"
    return None


def _with_columns(columns: DataColumns, update: dict[str, Any]) -> DataColumns:
    explicit = {name: getattr(columns, name) for name in columns.model_fields_set}
    return type(columns)(**{**explicit, **update})


def _works(sample: Sample, update: dict[str, Any], unpaired: bool, unpair: bool = False) -> bool:
    trial = Sample(sample.keys, sample.rows, _with_columns(sample.columns, update))
    try:
        found = detect(trial, unpaired=unpaired, unpair=unpair)
    except LayoutError:
        return False
    run = converter_for(found, found.native == "messages", Options())
    good = 0
    for row in trial.rows:
        try:
            results = run(row)
        except RowProblem:
            continue
        good += any(isinstance(r, dict) and _has_prompt(r) for r in results)
    return good >= SUGGESTION_MIN_SHARE * len(trial.rows)


def _has_prompt(row: dict[str, Any]) -> bool:
    prompt = row["prompt"]
    return bool(prompt.strip()) if isinstance(prompt, str) else any(m["content"].strip() for m in prompt)


def _check_prompts(sample: Sample, found: Match, unpaired: bool, unpair: bool) -> None:
    """Most rows with an empty prompt while a likely prompt column sits unused: a mapping mistake.

    Raises:
        LayoutError: Giving the mapping that fixes it (checked on the sample).
    """
    run = converter_for(found, found.native == "messages", Options())
    empty = total = 0
    for row in sample.rows:
        try:
            results = run(row)
        except RowProblem:
            continue
        for result in results:
            if isinstance(result, dict):
                total += 1
                empty += not _has_prompt(result)
    if not total or empty <= total / 2:
        return
    for column in _candidates(sample, "prompt"):
        if column in found.used or not any(
            isinstance(r.get(column), (str, list)) and r.get(column) for r in sample.rows
        ):
            continue
        if _works(sample, {"prompt": column}, unpaired, unpair):
            raise LayoutError(
                f"{found.described}: {empty} of {total} sampled rows would train with an empty prompt, while column "
                f"`{column}` looks like the prompt. Map it: data.columns.prompt: {column} (with --data: "
                f"--prompt-column {column})"
            )


FORMATS_BEGIN = "<!-- BEGIN FORMATS TABLE (generated from dpo_cli/data/layouts by scripts/gen_config_reference.py) -->"
FORMATS_END = "<!-- END FORMATS TABLE -->"


def render_formats_table() -> str:
    """The formats table of `docs/data-formats.md`, from the registry: name, what it is, how it is found, an example."""
    lines = [
        FORMATS_BEGIN,
        "",
        "| `format` | source layout and how it is recognised | example (three lines) |",
        "|---|---|---|",
    ]
    for layout in LAYOUTS.values():
        example = "<br>".join(f"<code>{_html(line)}</code>" for line in layout.example.splitlines())
        lines.append(f"| `{layout.name}` | **{layout.title}**: {layout.rule.replace('|', '&#124;')} | {example} |")
    return "\n".join([*lines, "", FORMATS_END])


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "&#124;")
