"""Prompts to sample from, read with `datasets` like every other data file."""

from __future__ import annotations

from typing import Any

from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.generation import Prompt

MAX_LISTED = 10


def load_prompts(spec: str | list[str], column: str, *, limit: int | None = None, key: str) -> list[Prompt]:
    """The prompts of a file, folder or Hub dataset, as chat messages and as text.

    A prompt is a non-empty string (sent as one user message) or a list of role/content
    messages that does not end with an assistant turn.

    Args:
        spec: File(s), folder or Hub id, as `data.train` takes them.
        column: The column holding the prompts.
        limit: Keep only the first `limit` rows.
        key: The config key the prompts came from, for messages.

    Raises:
        DpoError: The source cannot be read, lacks the column, or holds unusable prompts
            (each named by its row, 1-based).
    """
    from dpo_cli.data import load_split, resolve_source

    source = resolve_source(spec)
    dataset = load_split(source, split="train")
    if column not in dataset.column_names:
        raise DpoError(
            f"{source.label}: no column `{column}` (columns: {', '.join(dataset.column_names)})",
            exit_code=EXIT_USAGE,
            details=[f"set the prompt column with `generate.prompt_column` (read from {key})"],
        )
    values = dataset[column] if limit is None else dataset.select(range(min(limit, len(dataset))))[column]
    prompts, problems = [], []
    for index, value in enumerate(values):
        prompt, problem = _as_prompt(index, value)
        if problem:
            problems.append(f"row {index + 1}: `{column}` {problem}")
        else:
            prompts.append(prompt)
    if problems:
        shown = problems[:MAX_LISTED] + (
            [f"... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        )
        raise DpoError(f"{source.label}: {len(problems)} unusable prompt(s)", exit_code=EXIT_USAGE, details=shown)
    if not prompts:
        raise DpoError(f"{source.label}: holds no prompts", exit_code=EXIT_USAGE)
    return prompts


def _as_prompt(index: int, value: Any) -> tuple[Prompt | None, str | None]:
    if isinstance(value, str):
        if not value.strip():
            return None, "is empty"
        return Prompt(index, [{"role": "user", "content": value}], value), None
    if isinstance(value, list) and value:
        if not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        ):
            return None, "is a list but not of {role, content} messages"
        if value[-1]["role"] == "assistant":
            return None, "ends with an assistant message; the model must answer the last turn"
        users = [m["content"] for m in value if m["role"] == "user"]
        messages = [{"role": m["role"], "content": m["content"]} for m in value]
        return Prompt(index, messages, users[-1] if users else value[-1]["content"]), None
    return None, f"is {type(value).__name__}, not a string or a list of messages"
