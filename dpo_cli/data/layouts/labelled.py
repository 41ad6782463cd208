"""Layouts where a label or score, not a column name, says which response is preferred: two
responses with a preference label, arena battles, and ranked or scored completions.

Which column wins changes from row to row, so no column mapping can express these; each row is
converted, and rows whose label says tie, or has no label, are dropped and counted (`tie`,
`no_label`). Ranked completions are binarized by one documented rule: the best-scored response
is chosen, the worst-scored rejected, and the row is dropped when their gap is zero or below
`data.min_score_gap`.
"""

from __future__ import annotations

import math
from typing import Any

from dpo_cli.data.layouts.base import Converter, Layout, Match, Options, Sample, match
from dpo_cli.data.layouts.columns import alpaca_prompt, is_messages, prompt_turns
from dpo_cli.data.rows import RowProblem, get_path, messages_field, raw_field, split_dialogues, string_list, text_field

PAIR_RESPONSES = (
    ("output_1", "output_2"),
    ("response_0", "response_1"),
    ("response_a", "response_b"),
    ("response1", "response2"),
    ("answer_a", "answer_b"),
    ("completion_a", "completion_b"),
)
PAIR_LABELS = (
    "preference",
    "better_response_id",
    "winner",
    "choice",
    "preferred",
    "overall_preference",
    "label",
    "safer_response_id",
)
TIES = {"tie", "both", "equal", "same", "tie (bothbad)", "both_bad", "bothbad", "none"}
PROMPT_COLUMNS = ("prompt", "instruction", "question", "query")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if isinstance(value, float) and math.isnan(value) else float(value)


def _prompt_source(sample: Sample) -> tuple[str | None, str]:
    """`(column, kind)`: where the prompt is and whether it is `text`, `alpaca` or `messages`."""
    if is_messages(sample.first("context")):
        return "context", "messages"
    for column in PROMPT_COLUMNS:
        value = sample.first(column)
        if is_messages(value):
            return column, "messages"
        if isinstance(value, str):
            return column, "alpaca" if column == "instruction" else "text"
    return None, "text"


def _prompt(row: dict[str, Any], column: str, kind: str, messages: bool, query: str | None) -> Any:
    if kind == "messages":
        return messages_field(row, column)
    text = alpaca_prompt(row, query) if kind == "alpaca" else text_field(row, column)
    return prompt_turns(text) if messages else text


def _responses(first: Any, second: Any, messages: bool) -> tuple[Any, Any]:
    if not messages:
        return first, second
    return [{"role": "assistant", "content": first}], [{"role": "assistant", "content": second}]


# --- two responses and a label ---------------------------------------------------------------------


def detect_pair_label(sample: Sample) -> Match | None:
    pair = next((p for p in PAIR_RESPONSES if sample.has(p[0]) and sample.has(p[1])), None)
    if pair is None:
        return None
    cols = sample.columns
    labels = (cols.label,) if sample.explicit("label") else PAIR_LABELS
    label = next((c for c in labels if sample.has(c)), None)
    prompt, kind = _prompt_source(sample)
    if label is None or prompt is None or not isinstance(sample.first(pair[0]), str):
        return None
    scheme = "sign" if label == "overall_preference" else pair[0][-1]  # '1' (1/2), '0' (0/1) or 'a' (a/b)
    query = "input" if kind == "alpaca" and sample.has("input") else None
    meaning = {
        "sign": "negative: the first, positive: the second, 0: tie",
        "1": "1 or 2",
        "0": "0 or 1",
        "a": "a or b",
    }[scheme]
    described = (
        f"two responses with a label: `{pair[0]}`/`{pair[1]}`, preferred one named by `{label}` ({meaning}), "
        f"prompt from `{prompt}`" + (" + `input`" if query else "")
    )
    native = "messages" if kind == "messages" else "text"
    return match(
        "pair_label",
        "pairs",
        native,
        described,
        [prompt, query, *pair, label],
        first=pair[0],
        second=pair[1],
        label=label,
        scheme=scheme,
        prompt=prompt,
        prompt_kind=kind,
        query=query,
    )


def which_one(value: Any, scheme: str, first: str, second: str, label: str) -> int | None:
    """0 for the first response, 1 for the second, None for a tie; raises for no or a bad label."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        raise RowProblem("no_label", f"`{label}` is empty")
    if isinstance(value, str):
        name = value.strip().lower()
        if name in TIES:
            return None
        if name in {first.lower(), "model_" + first[-1], first[-1]}:
            return 0
        if name in {second.lower(), "model_" + second[-1], second[-1]}:
            return 1
    number = _number(value)
    if number is not None:
        if scheme == "sign":
            return None if number == 0 else (0 if number < 0 else 1)
        base = 1 if scheme == "1" else 0
        if number in (base, base + 1):
            return int(number) - base
        if scheme == "1" and number == 0:
            return None  # AlpacaFarm-style 0: no preference
    raise RowProblem("bad_label", f"`{label}` is {value!r}, which names neither `{first}` nor `{second}`")


def build_pair_label(m: Match, messages: bool, options: Options) -> Converter:
    first, second, label, scheme = m.get("first"), m.get("second"), m.get("label"), m.get("scheme")
    prompt, kind, query = m.get("prompt"), m.get("prompt_kind"), m.get("query")

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        winner = which_one(get_path(row, label), scheme, first, second, label)
        if winner is None:
            raise RowProblem("tie", f"`{label}` is {get_path(row, label)!r}")
        a, b = text_field(row, first), text_field(row, second)
        chosen, rejected = (a, b) if winner == 0 else (b, a)
        chosen, rejected = _responses(chosen, rejected, messages)
        return {"prompt": _prompt(row, prompt, kind, messages, query), "chosen": chosen, "rejected": rejected}

    return convert


PAIR_LABEL = Layout(
    "pair_label",
    "Two responses with a preference label (AlpacaFarm, PKU-SafeRLHF, HelpSteer3)",
    "two response columns (`output_1`/`output_2`, `response_0`/`response_1`, `response_a`/`response_b`, "
    "`response1`/`response2`, ...) and a label naming the better one (`preference`, `better_response_id`, "
    "`winner`, `overall_preference` by sign, or `data.columns.label`); ties and empty labels are dropped",
    '{"instruction": "Give a synonym of quick.", "input": "",\n "output_1": "Slow.", "output_2": "Fast.",\n'
    ' "preference": 2}',
    detect_pair_label,
    build_pair_label,
    builds_messages=True,
)


# --- arena battles ---------------------------------------------------------------------------------


def detect_arena(sample: Sample) -> Match | None:
    if all(sample.has(c) for c in ("response_a", "response_b", "winner_model_a", "winner_model_b")):
        described = (
            "arena battles: `prompt` turns answered by `response_a`/`response_b` (JSON lists of turns are "
            "read), winner from `winner_model_a`/`winner_model_b`/`winner_tie`; ties dropped"
        )
        return match(
            "arena",
            "pairs",
            "messages",
            described,
            ["prompt", "response_a", "response_b", "winner_model_a", "winner_model_b", "winner_tie"],
            form="kaggle",
        )
    if all(sample.has(c) for c in ("conversation_a", "conversation_b", "winner")):
        described = (
            "arena battles: `conversation_a`/`conversation_b` with `winner` (model_a, model_b, tie); ties dropped"
        )
        return match(
            "arena",
            "pairs",
            "messages",
            described,
            ["conversation_a", "conversation_b", "winner"],
            form="conversations",
        )
    return None


def _flag(row: dict[str, Any], column: str) -> bool:
    value = row.get(column)
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return False
    return bool(_number(value))


def _battle(row: dict[str, Any], side: str) -> list[dict[str, str]]:
    prompts = string_list(raw_field(row, "prompt"), "prompt")
    answers = string_list(raw_field(row, f"response_{side}"), f"response_{side}")
    if len(prompts) != len(answers):
        raise RowProblem("bad_conversation", f"{len(prompts)} prompt turns but {len(answers)} in `response_{side}`")
    turns = []
    for i, (question, answer) in enumerate(zip(prompts, answers)):
        for text, role, column in ((question, "user", "prompt"), (answer, "assistant", f"response_{side}")):
            if not isinstance(text, str) or not text.strip():
                raise RowProblem("empty_field", f"`{column}` turn {i + 1} is {'empty' if text == '' else repr(text)}")
            turns.append({"role": role, "content": text})
    return turns


def build_arena(m: Match, messages: bool, options: Options) -> Converter:
    kaggle = m.get("form") == "kaggle"

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        if kaggle:
            a_won, b_won = _flag(row, "winner_model_a"), _flag(row, "winner_model_b")
            if _flag(row, "winner_tie") or (a_won and b_won):
                raise RowProblem("tie", "winner_tie")
            if not (a_won or b_won):
                raise RowProblem("no_label", "no winner_model_a, winner_model_b or winner_tie set")
            a, b = _battle(row, "a"), _battle(row, "b")
        else:
            verdict = which_one(row.get("winner"), "a", "model_a", "model_b", "winner")
            if verdict is None:
                raise RowProblem("tie", f"`winner` is {row.get('winner')!r}")
            a_won = verdict == 0
            a, b = messages_field(row, "conversation_a"), messages_field(row, "conversation_b")
        chosen, rejected = (a, b) if a_won else (b, a)
        prompt, chosen, rejected = split_dialogues(chosen, rejected)
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}

    return convert


ARENA = Layout(
    "arena",
    "Arena battles (Chatbot Arena, its Kaggle export)",
    "`prompt`, `response_a`, `response_b` (text, or JSON-encoded lists of turns in CSV cells) with "
    "`winner_model_a`/`winner_model_b`/`winner_tie`, or `conversation_a`/`conversation_b` with `winner`; "
    "multi-turn battles become whole-dialogue pairs; ties are dropped",
    "id,prompt,response_a,response_b,winner_model_a,winner_model_b,winner_tie\n"
    '7,"[""Hi"", ""Name a color""]","[""Hello!"", ""Teal""]","[""Hey"", ""No""]",1,0,0\n'
    '8,"[""Is ice hot?""]","[""No""]","[""No, it is cold.""]",0,1,0',
    detect_arena,
    build_arena,
)


# --- ranked or scored completions ------------------------------------------------------------------

RESPONSE_LISTS = ("completions", "responses", "answers", "outputs", "generations", "candidates")
SCORE_LISTS = ("scores", "ratings", "rewards", "ranks", "ranking")
TEXT_KEYS = ("response", "text", "content", "answer", "output", "completion")
SCORE_KEYS = ("overall_score", "score", "rating", "reward", "fine-grained_score", "rank")


def detect_ranked(sample: Sample) -> Match | None:
    responses = next((c for c in RESPONSE_LISTS if isinstance(sample.first(c), list)), None)
    prompt, kind = _prompt_source(sample)
    if responses is None or prompt is None:
        return None
    entries = sample.first(responses)
    cols = sample.columns
    if entries and isinstance(entries[0], dict):
        keys = entries[0]
        text = next((k for k in TEXT_KEYS if k in keys), None)
        wanted = (cols.score,) if cols.score else SCORE_KEYS
        score = next((k for k in wanted if k in keys), None)
        scores_column = None
        if text is None or score is None:
            return None
    else:
        text = None
        wanted = (cols.score,) if cols.score else SCORE_LISTS
        scores_column = next((c for c in wanted if isinstance(sample.first(c), list)), None)
        score = None
        if scores_column is None:
            return None
    lower_better = (score or scores_column) in ("rank", "ranks", "ranking")
    where = f"`{responses}[].{text}` scored by `{score}`" if text else f"`{responses}` scored by `{scores_column}`"
    direction = "lowest rank" if lower_better else "highest score"
    described = (
        f"ranked completions: {where}; chosen = {direction}, rejected = the other end; "
        "ties and gaps below data.min_score_gap dropped"
    )
    query = "input" if kind == "alpaca" and sample.has("input") else None
    native = "messages" if kind == "messages" else "text"
    return match(
        "ranked",
        "pairs",
        native,
        described,
        [prompt, query, responses, scores_column],
        responses=responses,
        text=text,
        score=score,
        score_list=scores_column,
        lower_better=lower_better,
        prompt=prompt,
        prompt_kind=kind,
        query=query,
    )


def build_ranked(m: Match, messages: bool, options: Options) -> Converter:
    responses, text_key, score_key = m.get("responses"), m.get("text"), m.get("score")
    scores_column = m.get("score_list")
    lower_better, gap_min = m.get("lower_better"), options.min_score_gap
    prompt, kind, query = m.get("prompt"), m.get("prompt_kind"), m.get("query")

    def scored(row: dict[str, Any]) -> list[tuple[float, str]]:
        entries = raw_field(row, responses)
        if not isinstance(entries, list):
            raise RowProblem("wrong_type", f"`{responses}`: expected a list of responses")
        if text_key is None:
            values = raw_field(row, scores_column)
            if not isinstance(values, list) or len(values) != len(entries):
                raise RowProblem("wrong_type", f"`{scores_column}`: expected one score per response")
            pairs = list(zip(values, entries))
        else:
            pairs = [(e.get(score_key), e.get(text_key)) for e in entries if isinstance(e, dict)]
        found = []
        for value, text in pairs:
            number = _number(value)
            if number is None:
                continue  # unscored (e.g. UltraFeedback's "N/A"): not ranked
            if not isinstance(text, str) or not text.strip():
                raise RowProblem("empty_field", f"`{responses}`: a scored response is empty")
            found.append((-number if lower_better else number, text))
        return found

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        found = scored(row)
        if len(found) < 2:
            raise RowProblem("no_pairs", f"{len(found)} scored response(s) in `{responses}`")
        best = max(found, key=lambda item: item[0])
        worst = min(found, key=lambda item: item[0])
        gap = best[0] - worst[0]
        if gap <= 0:
            raise RowProblem("tie", f"all {len(found)} responses scored {abs(best[0])}")
        if gap < gap_min:
            raise RowProblem("small_gap", f"score gap {gap:g} < data.min_score_gap {gap_min:g}")
        chosen, rejected = _responses(best[1], worst[1], messages)
        return {"prompt": _prompt(row, prompt, kind, messages, query), "chosen": chosen, "rejected": rejected}

    return convert


RANKED = Layout(
    "ranked",
    "Ranked or scored completions (UltraFeedback raw, Nectar)",
    "a list of responses (`completions`, `responses`, `answers`, ...) with scores (per entry: `overall_score`, "
    "`score`, `rating`, `reward`, or `rank` (lower is better); or a parallel `scores`/`ratings`/`ranks` list); "
    "chosen = best, rejected = worst; ties and gaps below `data.min_score_gap` are dropped",
    '{"instruction": "Name a planet.",\n "completions": [{"response": "Mars.", "overall_score": 8.5},\n'
    '  {"response": "The sun.", "overall_score": 2.0}]}',
    detect_ranked,
    build_ranked,
    builds_messages=True,
)
