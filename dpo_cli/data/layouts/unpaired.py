"""KTO's unpaired rows: one response with a boolean label (true: desirable), as TRL's
`prompt`/`completion`/`label`, as a conversation plus a label, or alpaca-style with a `kto_tag`."""

from __future__ import annotations

from typing import Any

from dpo_cli.data.layouts.base import Converter, Layout, LayoutError, Match, Options, Sample, match
from dpo_cli.data.layouts.columns import alpaca_prompt, is_messages, prompt_turns
from dpo_cli.data.rows import RowProblem, get_path, messages_field, raw_field, response_messages, text_field

LABELS = ("kto_tag", "is_desirable")
CONVERSATIONS = ("messages", "conversations")


def _label_column(sample: Sample) -> str | None:
    cols = sample.columns
    wanted = (cols.label,) if sample.explicit("label") else (cols.label, *LABELS)
    return next((c for c in wanted if sample.has(c)), None)


def detect_kto(sample: Sample) -> Match | None:
    label = _label_column(sample)
    if label is None:
        return None
    cols = sample.columns
    if sample.has(cols.completion):
        prompt = cols.prompt or "prompt"
        if not sample.has(prompt):
            raise LayoutError(f"unpaired rows need a prompt column `{prompt}`; columns found: {', '.join(sample.keys)}")
        native = "messages" if is_messages(sample.first(cols.completion)) else "text"
        described = f"unpaired rows (KTO): prompt `{prompt}`, completion `{cols.completion}`, boolean label `{label}`"
        return match(
            "kto",
            "unpaired",
            native,
            described,
            [prompt, cols.completion, label],
            form="columns",
            prompt=prompt,
            completion=cols.completion,
            label=label,
        )
    conversation = next((c for c in CONVERSATIONS if is_messages(sample.first(c))), None)
    if conversation:
        described = (
            f"unpaired conversations (KTO): `{conversation}` up to its last turn is the prompt, the last "
            f"(assistant) turn the completion, boolean label `{label}`"
        )
        return match(
            "kto",
            "unpaired",
            "messages",
            described,
            [conversation, label],
            form="conversation",
            conversation=conversation,
            label=label,
        )
    if isinstance(sample.first("instruction"), str) and sample.has("output"):
        query = "input" if sample.has("input") else None
        described = (
            f"alpaca-style unpaired rows (KTO): prompt `instruction`{' + `input`' if query else ''}, "
            f"completion `output`, boolean label `{label}`"
        )
        return match(
            "kto",
            "unpaired",
            "text",
            described,
            ["instruction", query, "output", label],
            form="alpaca",
            query=query,
            label=label,
        )
    return None


def _label(row: dict[str, Any], column: str) -> bool:
    value = raw_field(row, column)
    if not isinstance(value, bool):
        raise RowProblem("wrong_type", f"`{column}`: {value!r}, expected true or false")
    return value


def build_kto(m: Match, messages: bool, options: Options) -> Converter:
    form, label = m.get("form"), m.get("label")

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        if form == "columns":
            prompt_column, completion_column = m.get("prompt"), m.get("completion")
            if m.native == "messages":
                value = get_path(row, prompt_column)
                prompt = (
                    prompt_turns(text_field(row, prompt_column))
                    if isinstance(value, str)
                    else messages_field(row, prompt_column)
                )
                completion = response_messages(row, completion_column)
            else:
                prompt, completion = text_field(row, prompt_column), text_field(row, completion_column)
        elif form == "conversation":
            turns = messages_field(row, m.get("conversation"))
            if len(turns) < 2 or turns[-1]["role"] != "assistant":
                raise RowProblem("bad_conversation", "the conversation does not end with an assistant turn")
            prompt, completion = turns[:-1], turns[-1:]
        else:
            prompt, completion = alpaca_prompt(row, m.get("query")), text_field(row, "output")
        out = {"prompt": prompt, "completion": completion, "label": _label(row, label)}
        if messages and isinstance(out["prompt"], str):
            out["prompt"] = prompt_turns(out["prompt"])
            out["completion"] = [{"role": "assistant", "content": out["completion"]}]
        return out

    return convert


KTO = Layout(
    "kto",
    "Unpaired rows for KTO (TRL, conversations, alpaca with `kto_tag`)",
    "`prompt`/`completion` (`data.columns`) with a boolean `label`; or `messages` whose last assistant turn is rated "
    "by `label`/`kto_tag`; or `instruction`/`output` with `kto_tag`. Trains with `algorithm: kto`",
    '{"prompt": "Suggest a weekend hobby.",\n "completion": "Try sketching in a park.",\n "label": true}',
    detect_kto,
    build_kto,
    kinds=("unpaired",),
    builds_messages=True,
)
