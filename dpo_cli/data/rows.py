"""What one TRL row must be, and the small readers every layout converter is built from.

A converter reads fields with `text_field`, `messages_field` and friends; each raises
`RowProblem` naming the check and the column when the value cannot be used, so a layout's
converter reads as its happy path. `finish_pair` and `finish_unpaired` then apply the rules
every converted row obeys (chosen differs from rejected; conversations open and alternate the
way chat templates and TRL's loss mask expect).
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

ROLES = {"system", "user", "assistant", "tool"}
# Role names used by the formats we read -> the chat-template role.
ROLE_ALIASES = {
    "user": "user",
    "human": "user",
    "prompter": "user",
    "USER": "user",
    "Human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "ASSISTANT": "assistant",
    "Assistant": "assistant",
    "function_call": "assistant",
    "system": "system",
    "SYSTEM": "system",
    "tool": "tool",
    "observation": "tool",
    "function": "tool",
    "ipython": "tool",
}
ROLE_KEYS = ("role", "from")
CONTENT_KEYS = ("content", "value", "text")
MISSING = object()  # `get_path` of an absent column (None is a value a column can hold)


class RowProblem(Exception):
    """Why a row (or one pair of it) cannot train: a check id from the validation table and a note."""

    def __init__(self, check: str, note: str = ""):
        super().__init__(check, note)
        self.check, self.note = check, note


def get_path(row: dict[str, Any], path: str) -> Any:
    """A column, or a nested field by dotted path (`input.messages`); `MISSING` when absent."""
    value = row.get(path, MISSING)
    if value is not MISSING or "." not in path:
        return value
    value = row
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def has_path(row: dict[str, Any], path: str) -> bool:
    return get_path(row, path) is not MISSING


def raw_field(row: dict[str, Any], column: str) -> Any:
    """The value of a column that must be present and not null."""
    value = get_path(row, column)
    if value is MISSING:
        raise RowProblem("missing_field", f"`{column}`")
    if value is None:
        raise RowProblem("null_field", f"`{column}`")
    return value


def text_field(row: dict[str, Any], column: str, allow_empty: bool = False) -> str:
    """A string column (chosen, rejected, prompt); empty or whitespace-only is an error unless allowed."""
    value = row.get(column, MISSING)
    if value.__class__ is not str:
        if value is MISSING or value is None:
            value = raw_field(row, column)  # raises, or finds a nested (dotted) column
        if not isinstance(value, str):
            raise RowProblem("wrong_type", f"`{column}`: {type(value).__name__}, expected a string")
    if not allow_empty and not value.strip():
        raise RowProblem("empty_field", f"`{column}`")
    return value


def optional_text(row: dict[str, Any], column: str | None) -> str:
    """A string column that may be absent, null or empty (a system prompt, an `input`): '' then."""
    if column is None:
        return ""
    value = get_path(row, column)
    if value is MISSING or value is None:
        return ""
    if not isinstance(value, str):
        raise RowProblem("wrong_type", f"`{column}`: {type(value).__name__}, expected a string")
    return value


def content_text(value: Any, where: str) -> str:
    """Message content as one string: a string, or typed parts `[{type: text, text|value: ...}]` joined.

    Chat templates that accept typed parts render consecutive text parts with nothing between
    them, so the parts are joined the same way.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list) and value:
        texts = []
        for part in value:
            if isinstance(part, str):
                texts.append(part)
                continue
            kind = part.get("type", "text") if isinstance(part, dict) else None
            text = (
                next((part[k] for k in ("text", "value", "content") if isinstance(part.get(k), str)), None)
                if isinstance(part, dict)
                else None
            )
            if kind != "text" or text is None:
                raise RowProblem(
                    "unsupported_content", f"{where}: a {kind or type(part).__name__} part; only text trains"
                )
            texts.append(text)
        return "".join(texts)
    if value is None:
        raise RowProblem("bad_conversation", f"{where} content is null")
    raise RowProblem("bad_conversation", f"{where} content is {type(value).__name__}, not text")


def message(value: Any, where: str, default_role: str | None = None) -> dict[str, str]:
    """One message as `{role, content}`, from `role`/`from` and `content`/`value`/`text` keys."""
    if isinstance(value, str) and default_role:
        return {"role": default_role, "content": value}
    if not isinstance(value, dict):
        raise RowProblem("bad_conversation", f"{where} is {type(value).__name__}, not a message")
    role = next((value[k] for k in ROLE_KEYS if k in value), default_role)
    if not isinstance(role, str):
        raise RowProblem("bad_conversation", f"{where} has no role")
    content = next((value[k] for k in CONTENT_KEYS if k in value and value[k] is not None), None)
    if value.get("tool_calls"):
        raise RowProblem("unsupported_content", f"{where}: tool calls; only text trains")
    return {"role": ROLE_ALIASES.get(role, role), "content": content_text(content, where)}


def messages_field(row: dict[str, Any], column: str, allow_empty: bool = False) -> list[dict[str, str]]:
    """A list of messages (role/content or from/value); a JSON string holding one is read too."""
    value = raw_field(row, column)
    if isinstance(value, str) and value.startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            raise RowProblem("wrong_type", f"`{column}`: text, expected a list of messages") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise RowProblem("wrong_type", f"`{column}`: {type(value).__name__}, expected a list of messages")
    if not value and not allow_empty:
        raise RowProblem("empty_field", f"`{column}`: no messages")
    return [message(m, f"`{column}` message {i}") for i, m in enumerate(value)]


def response_messages(row: dict[str, Any], column: str) -> list[dict[str, str]]:
    """A response given as a string, one message, or a list of messages: always assistant-led messages."""
    value = raw_field(row, column)
    if isinstance(value, str):
        if not value.strip():
            raise RowProblem("empty_field", f"`{column}`")
        return [{"role": "assistant", "content": value}]
    if isinstance(value, dict):
        return [message(value, f"`{column}`", default_role="assistant")]
    return messages_field(row, column)


def string_list(value: Any, column: str) -> list[Any]:
    """A list, or a JSON-encoded list in a text cell (CSV exports of multi-turn data), or one string."""
    if isinstance(value, str):
        stripped = value.lstrip()
        if stripped.startswith("["):
            try:
                parsed = json.loads(stripped)
            except ValueError:
                return [value]
            if isinstance(parsed, list):
                return parsed
        return [value]
    if isinstance(value, list):
        return value
    raise RowProblem("wrong_type", f"`{column}`: {type(value).__name__}, expected text or a list")


# --- whole rows ---------------------------------------------------------------------------------


def conversation_problem(prompt: list[dict], response: list[dict]) -> str | None:
    """Roles and turn order that chat templates and TRL's loss mask rely on.

    The prompt may open with a system turn, then alternates user/assistant (tool messages may
    follow an assistant turn) and ends on a user or tool turn; the response starts with the
    assistant. An opening assistant greeting is allowed (OpenAI's format has them).
    """
    roles = [m["role"] for m in prompt]
    unknown = next((r for r in roles + [m["role"] for m in response] if r not in ROLES), None)
    if unknown is not None:
        return f"unknown role {unknown!r}"
    if "system" in roles[1:]:
        return "system message after the first turn"
    turns = [r for r in roles if r != "system"]
    for before, after in itertools.pairwise(turns):
        if before == after and before != "tool":
            return f"two {before} turns in a row"
    if turns and turns[-1] == "assistant":
        return "prompt ends with an assistant turn"
    if not response or response[0]["role"] != "assistant":
        return "response does not start with the assistant"
    return None


def common_prefix_len(a: str | list, b: str | list) -> int:
    """Length of the shared prefix of two strings or lists.

    A binary search over slice comparisons: each comparison runs in C, so long shared
    prompts (the HH layout) cost a few slices instead of a Python loop over characters.
    """
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:  # the usual case: one is a prefix of the other
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def split_implicit_prompt(chosen: str | list, rejected: str | list) -> tuple[Any, Any, Any]:
    """Split whole dialogues into (prompt, chosen, rejected) exactly as TRL's `extract_prompt`.

    TRL cuts at the first differing character or message and, for text, moves one space from
    the prompt to the responses. When one response is a prefix of the other, TRL leaves the
    last element of the shorter one as the response; this mirrors that too.
    """
    n = min(len(chosen), len(rejected))
    if n == 0:
        return chosen[:0], chosen, rejected
    shared = common_prefix_len(chosen, rejected)
    if shared < n:
        idx = shared
        if isinstance(chosen, str) and chosen[idx - 1] == " ":
            idx -= 1
    else:
        idx = n - 1
    return chosen[:idx], chosen[idx:], rejected[idx:]


def split_dialogues(chosen: list[dict], rejected: list[dict]) -> tuple[list, list, list]:
    """Whole conversations -> (shared opening, chosen rest, rejected rest), cut at the first differing message."""
    shared = common_prefix_len(chosen, rejected)
    if shared >= min(len(chosen), len(rejected)):
        shared = min(len(chosen), len(rejected)) - 1  # one is a prefix of the other: as TRL, keep a response
    if shared <= 0:
        raise RowProblem("bad_conversation", "the two conversations share no opening turn")
    return chosen[:shared], chosen[shared:], rejected[shared:]


_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant|H|A):[ ]?")


def is_transcript(text: Any) -> bool:
    """Anthropic HH-style text: `\\n\\nHuman: ...\\n\\nAssistant: ...`."""
    return isinstance(text, str) and "Human:" in text and "\n\nAssistant:" in text


def parse_transcript(text: str, column: str) -> list[dict[str, str]]:
    """An HH transcript as user/assistant messages (text before the first turn is a system turn)."""
    parts = _HH_TURN.split(text)
    messages = []
    head = parts[0].strip()
    if head:
        messages.append({"role": "system", "content": head})
    for speaker, content in zip(parts[1::2], parts[2::2]):
        messages.append({"role": "user" if speaker in ("Human", "H") else "assistant", "content": content})
    if not messages:
        raise RowProblem("bad_conversation", f"`{column}`: no Human/Assistant turns")
    return messages


def text_of(value: str | list[dict]) -> str:
    """The plain text of a field: the string, or the message contents joined."""
    if isinstance(value, str):
        return value
    return "\n".join(m["content"] for m in value)


def finish_pair(row: dict[str, Any], messages: bool) -> dict[str, Any]:
    """The rules every converted pair obeys; raises `RowProblem` when it cannot train."""
    chosen, rejected = row["chosen"], row["rejected"]
    if chosen == rejected:
        raise RowProblem("identical_pair")
    if messages:
        for label in ("chosen", "rejected"):
            issue = conversation_problem(row["prompt"], row[label])
            if issue:
                raise RowProblem("bad_conversation", f"{label}: {issue}")
            if not any(m["content"].strip() for m in row[label]):
                raise RowProblem("empty_field", f"{label}: no text")
    return row


def finish_unpaired(row: dict[str, Any], messages: bool) -> dict[str, Any]:
    if messages:
        issue = conversation_problem(row["prompt"], row["completion"])
        if issue:
            raise RowProblem("bad_conversation", f"completion: {issue}")
    return row


def as_messages(row: dict[str, Any], kind: str) -> dict[str, Any]:
    """A text row as messages: the prompt becomes a user turn, each response an assistant turn."""
    prompt = row["prompt"]
    out = {"prompt": [{"role": "user", "content": prompt}] if prompt else []}
    for key in ("chosen", "rejected") if kind == "pairs" else ("completion",):
        out[key] = [{"role": "assistant", "content": row[key]}]
    if kind != "pairs":
        out["label"] = row["label"]
    return out
