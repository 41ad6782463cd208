"""Conversation layouts: ShareGPT ranking files, OpenAI's preference fine-tuning format,
context-style pairs and OpenAssistant message trees. All of them are conversational: the rows
become role/content messages, rendered by the tokenizer's chat template inside TRL."""

from __future__ import annotations

from typing import Any

from dpo_cli.data.layouts.base import Converter, Layout, Match, Options, Sample, match
from dpo_cli.data.layouts.columns import is_messages
from dpo_cli.data.rows import (
    ROLE_ALIASES,
    RowProblem,
    content_text,
    get_path,
    message,
    messages_field,
    optional_text,
    response_messages,
)


def _single_message(value: Any) -> bool:
    return isinstance(value, dict) and any(k in value for k in ("from", "role", "value", "content"))


# --- ShareGPT ranking (LLaMA-Factory) --------------------------------------------------------------


def detect_sharegpt(sample: Sample) -> Match | None:
    cols = sample.columns
    conversation = next((c for c in ("conversations", "messages") if is_messages(sample.first(c))), None)
    if conversation is None or not (_single_message(sample.first(cols.chosen)) and sample.has(cols.rejected)):
        return None
    system = sample.optional("system")
    tags = "from/value" if "from" in sample.first(conversation)[0] else "role/content"
    described = (
        f"ShareGPT ranking pairs: prompt `{conversation}` ({tags} turns), chosen `{cols.chosen}`, "
        f"rejected `{cols.rejected}`" + (f"; system turn from `{system}`" if system else "")
    )
    return match(
        "sharegpt",
        "pairs",
        "messages",
        described,
        [conversation, cols.chosen, cols.rejected, system],
        conversation=conversation,
        chosen=cols.chosen,
        rejected=cols.rejected,
        system=system,
    )


def build_sharegpt(m: Match, messages: bool, options: Options) -> Converter:
    conversation, chosen, rejected, system = m.get("conversation"), m.get("chosen"), m.get("rejected"), m.get("system")

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        prompt = messages_field(row, conversation)
        system_text = optional_text(row, system)
        if system_text.strip() and not (prompt and prompt[0]["role"] == "system"):
            prompt = [{"role": "system", "content": system_text}, *prompt]
        return {
            "prompt": prompt,
            "chosen": response_messages(row, chosen),
            "rejected": response_messages(row, rejected),
        }

    return convert


SHAREGPT = Layout(
    "sharegpt",
    "ShareGPT ranking (LLaMA-Factory)",
    "`conversations` (`from`: system/human/gpt, `value`) or `messages` (`role`/`content`) with `chosen` and "
    "`rejected` single messages; a `system` column is kept",
    '{"conversations": [{"from": "human", "value": "Suggest a name for a cat."}],\n'
    ' "chosen": {"from": "gpt", "value": "How about Miso?"},\n "rejected": {"from": "gpt", "value": "Cat."}}',
    detect_sharegpt,
    build_sharegpt,
)


# --- OpenAI / Azure preference fine-tuning ---------------------------------------------------------


def detect_openai(sample: Sample) -> Match | None:
    if not (sample.has("input.messages") and sample.has("preferred_output") and sample.has("non_preferred_output")):
        return None
    described = "OpenAI preference fine-tuning: prompt `input.messages`, chosen `preferred_output`, rejected `non_preferred_output`"
    return match("openai", "pairs", "messages", described, ["input", "preferred_output", "non_preferred_output"])


def build_openai(m: Match, messages: bool, options: Options) -> Converter:
    def convert(row: dict[str, Any]) -> dict[str, Any]:
        if get_path(row, "input.tools"):
            raise RowProblem("unsupported_content", "`input.tools`: tool definitions are not passed to training")
        return {
            "prompt": messages_field(row, "input.messages"),
            "chosen": response_messages(row, "preferred_output"),
            "rejected": response_messages(row, "non_preferred_output"),
        }

    return convert


OPENAI = Layout(
    "openai",
    "OpenAI / Azure preference fine-tuning",
    "`input.messages`, `preferred_output` and `non_preferred_output` (lists holding one assistant message)",
    '{"input": {"messages": [{"role": "user", "content": "Is 17 prime?"}]},\n'
    ' "preferred_output": [{"role": "assistant", "content": "Yes."}],\n'
    ' "non_preferred_output": [{"role": "assistant", "content": "No."}]}',
    detect_openai,
    build_openai,
)


# --- context-style pairs ---------------------------------------------------------------------------

CONTEXT_RESPONSES = (("chosen", "rejected"), ("answer_w", "answer_l"))


def detect_context(sample: Sample) -> Match | None:
    if not is_messages(sample.first("context")):
        return None
    cols = sample.columns
    for chosen, rejected in ((cols.chosen, cols.rejected), *CONTEXT_RESPONSES):
        if sample.has(chosen) and sample.has(rejected):
            described = (
                f"context-style pairs: prompt `context` (earlier turns), chosen `{chosen}`, rejected `{rejected}`"
            )
            return match(
                "context",
                "pairs",
                "messages",
                described,
                ["context", chosen, rejected],
                chosen=chosen,
                rejected=rejected,
            )
    return None


def build_context(m: Match, messages: bool, options: Options) -> Converter:
    chosen, rejected = m.get("chosen"), m.get("rejected")

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "prompt": messages_field(row, "context"),
            "chosen": response_messages(row, chosen),
            "rejected": response_messages(row, rejected),
        }

    return convert


CONTEXT = Layout(
    "context",
    "Context-style pairs",
    "a `context` list of turns (`from`/`role`, `content`) with `chosen`/`rejected` (or `answer_w`/`answer_l`) "
    "as turn lists, single turns or text",
    '{"context": [{"from": "user", "content": "Plan a short walk."}],\n'
    ' "chosen": [{"from": "assistant", "content": "Try the river path."}],\n'
    ' "rejected": [{"from": "assistant", "content": "Walking is boring."}]}',
    detect_context,
    build_context,
)


# --- OpenAssistant message trees -------------------------------------------------------------------


def _tree_root(row: dict[str, Any]) -> dict[str, Any] | None:
    prompt = row.get("prompt")
    if isinstance(prompt, dict) and "replies" in prompt:
        return prompt
    if "replies" in row and "text" in row and "role" in row:
        return row
    return None


def detect_oasst(sample: Sample) -> Match | None:
    if not sample.rows or _tree_root(sample.rows[0]) is None:
        return None
    top = "prompt" if isinstance(sample.rows[0].get("prompt"), dict) else None
    described = (
        "OpenAssistant message trees: under every prompt, the best-ranked reply is paired with each "
        "lower-ranked sibling; the prompt is the conversation path to them"
    )
    return match("oasst", "pairs", "messages", described, [top] if top else sample.keys)


def _usable(node: Any) -> bool:
    return (
        isinstance(node, dict)
        and isinstance(node.get("text"), str)
        and bool(node["text"].strip())
        and not node.get("deleted")
        and node.get("review_result") is not False
    )


def tree_pairs(root: dict[str, Any]) -> list[dict[str, Any]]:
    """Pairs of ranked sibling replies, depth first; ranks are OASST's (0 is best)."""
    pairs: list[dict[str, Any]] = []
    stack: list[tuple[dict[str, Any], list[dict[str, str]]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        if not _usable(node):
            continue
        role = ROLE_ALIASES.get(node.get("role"), node.get("role"))
        here = [*path, {"role": role, "content": content_text(node["text"], "message text")}]
        replies = [r for r in node.get("replies") or [] if _usable(r)]
        if role == "user":
            ranked = sorted((r for r in replies if isinstance(r.get("rank"), (int, float))), key=lambda r: r["rank"])
            for worse in ranked[1:]:
                if worse["rank"] > ranked[0]["rank"]:
                    pairs.append(
                        {
                            "prompt": here,
                            "chosen": [message(ranked[0], "reply", "assistant")],
                            "rejected": [message(worse, "reply", "assistant")],
                        }
                    )
        stack.extend((reply, here) for reply in reversed(replies))
    return pairs


def build_oasst(m: Match, messages: bool, options: Options) -> Converter:
    def convert(row: dict[str, Any]) -> list[dict[str, Any]]:
        root = _tree_root(row)
        if root is None:
            raise RowProblem("missing_field", "`prompt`: no message tree")
        pairs = tree_pairs(root)
        if not pairs:
            raise RowProblem("no_pairs", "no prompt in the tree has two replies of different rank")
        return pairs

    return convert


OASST = Layout(
    "oasst",
    "OpenAssistant message trees (export format)",
    "a tree per row (`prompt` with nested `replies`, each with `role`, `text` and `rank`); deleted or "
    "rejected-in-review messages are skipped",
    '{"message_tree_id": "t1", "prompt": {"role": "prompter", "text": "Why is the sky blue?", "replies": [\n'
    '  {"role": "assistant", "text": "Air scatters blue light most.", "rank": 0, "replies": []},\n'
    '  {"role": "assistant", "text": "Because it is.", "rank": 1, "replies": []}]}}',
    detect_oasst,
    build_oasst,
)
