"""Reading rows and recognising layouts: every format real preference data comes in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpo_cli.config.schema import DataColumns
from dpo_cli.data import resolve_source
from dpo_cli.validation.formats import LayoutError, detect_layout, is_json_lines, iter_batches

U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}
B = {"role": "assistant", "content": "go away"}


def layout_of(rows: list[dict], columns: DataColumns | None = None):
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return detect_layout(columns or DataColumns(), keys, rows)


def test_standard() -> None:
    layout = layout_of([{"prompt": "p", "chosen": "a", "rejected": "b", "id": 1}])
    assert (layout.format, layout.implicit, layout.prompt) == ("standard", False, "prompt")
    assert layout.columns() == {"prompt", "chosen", "rejected"}


def test_conversational() -> None:
    layout = layout_of([{"prompt": [U], "chosen": [A], "rejected": [B]}])
    assert layout.format == "conversational" and not layout.implicit


@pytest.mark.parametrize(
    "row",
    [
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: no"},
        {"chosen": [U, A], "rejected": [U, B]},
    ],
    ids=["hh-text", "hh-messages"],
)
def test_implicit_prompt_when_no_prompt_column(row) -> None:
    layout = layout_of([row])
    assert layout.implicit and layout.prompt is None
    assert "implicit prompt" in layout.describe()


def test_implicit_prompt_by_config() -> None:
    layout = layout_of([{"prompt": "ignored", "chosen": "a", "rejected": "b"}], DataColumns(prompt=None))
    assert layout.implicit


def test_explicit_prompt_column_must_exist() -> None:
    with pytest.raises(LayoutError, match="missing column `question`"):
        layout_of([{"chosen": "a", "rejected": "b"}], DataColumns(prompt="question"))


def test_column_mapping() -> None:
    columns = DataColumns(prompt="question", chosen="good", rejected="bad")
    layout = layout_of([{"question": "q", "good": "a", "bad": "b"}], columns)
    assert (layout.prompt, layout.chosen, layout.rejected) == ("question", "good", "bad")


def test_score_columns_found() -> None:
    layout = layout_of([{"prompt": "p", "chosen": "a", "rejected": "b", "score_chosen": 8, "score_rejected": 3}])
    assert layout.scores == ("score_chosen", "score_rejected")
    assert layout_of([{"prompt": "p", "chosen": "a", "rejected": "b"}]).scores is None


@pytest.mark.parametrize(
    ("row", "fragments"),
    [
        ({"prompt": "p", "completion": "c", "label": True}, ["unpaired", "KTO", "label=true"]),
        ({"prompt": "p", "responses": ["a", "b"], "scores": [1, 2]}, ["ranked or scored", "`responses`", "`scores`"]),
        ({"instruction": "p", "completions": [{"response": "a", "overall_score": 3}]}, ["ranked or scored"]),
        ({"prompt": "p", "response_0": "a", "response_1": "b", "better_response_id": 1}, ["preference label"]),
        ({"messages": [U, A]}, ["SFT layout"]),
        ({"question": "q", "response_chosen": "a", "response_rejected": "b"}, ["missing column", "data.columns"]),
    ],
    ids=["unpaired", "ranked", "ultrafeedback-raw", "labelled-pair", "sft", "other-names"],
)
def test_other_layouts_explained(row, fragments) -> None:
    with pytest.raises(LayoutError) as info:
        layout_of([row])
    for fragment in fragments:
        assert fragment in str(info.value)


def test_close_column_names_are_suggested() -> None:
    with pytest.raises(LayoutError, match="data.columns.chosen: chosen_response"):
        layout_of([{"prompt": "p", "chosen_response": "a", "rejected_response": "b"}])


def test_jsonl_stream_keeps_line_numbers_and_survives_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{broken\n[1, 2]\n{"a": 2}\n', encoding="utf-8")
    [batch] = list(iter_batches(resolve_source(str(path)), split="train", subset=None))
    assert [r.number for r in batch] == [1, 3, 4, 5]  # the blank line is skipped, as `datasets` does
    assert batch[1].data is None and "invalid JSON" in batch[1].error and batch[1].where == f"{path}:3"
    assert "not an object" in batch[2].error
    assert batch[3].data == {"a": 2}


def test_invalid_utf8_is_a_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": "\xff\xfe"}\n{"a": 1}\n')
    [batch] = list(iter_batches(resolve_source(str(path)), split="train", subset=None))
    assert batch[0].error and batch[1].data == {"a": 1}


def test_json_array_and_csv_go_through_datasets(tmp_path: Path) -> None:
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "c", "rejected": "d"}]
    array = tmp_path / "d.json"
    array.write_text(json.dumps(rows), encoding="utf-8")
    assert not is_json_lines(str(array))
    [batch] = list(iter_batches(resolve_source(str(array)), split="train", subset=None))
    assert [r.data for r in batch] == rows and batch[1].where == f"{array} row 2"
    csv = tmp_path / "d.csv"
    csv.write_text("prompt,chosen,rejected\np,a,b\nq,,d\n", encoding="utf-8")
    [batch] = list(iter_batches(resolve_source(str(csv)), split="train", subset=None))
    assert batch[1].data["chosen"] is None


def test_jsonl_named_json_is_streamed(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"a": 1}\n{"a": 2}\n', encoding="utf-8")
    assert is_json_lines(str(path))
