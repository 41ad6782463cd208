"""Reading rows (plain and compressed files, line numbers, the per-row limit) and recognising
layouts from the first rows, with the messages that explain what is not a layout."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path

import pytest
import zstandard

from dpo_cli.config.schema import DataColumns
from dpo_cli.data.layouts import LayoutError, Sample, detect
from dpo_cli.data.readers import is_json_lines, iter_batches, resolve_source

U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}
B = {"role": "assistant", "content": "go away"}


def layout_of(rows: list[dict], columns: DataColumns | None = None, **kwargs):
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return detect(Sample(keys, rows, columns or DataColumns()), **kwargs)


def test_standard() -> None:
    found = layout_of([{"prompt": "p", "chosen": "a", "rejected": "b", "id": 1}])
    assert (found.layout, found.native, found.implicit, found.get("prompt")) == ("trl", "text", False, "prompt")
    assert found.used == {"prompt", "chosen", "rejected"}


def test_conversational() -> None:
    found = layout_of([{"prompt": [U], "chosen": [A], "rejected": [B]}])
    assert found.layout == "trl" and found.native == "messages" and not found.implicit


@pytest.mark.parametrize(
    ("row", "layout"),
    [
        ({"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: no"}, "hh"),
        ({"chosen": [U, A], "rejected": [U, B]}, "dialogue"),
        ({"chosen": "Completely one text", "rejected": "Completely another"}, "trl"),
    ],
    ids=["hh-text", "dialogue-messages", "plain-text"],
)
def test_implicit_prompt_when_no_prompt_column(row, layout) -> None:
    found = layout_of([row])
    assert found.layout == layout and found.implicit


def test_implicit_prompt_by_config() -> None:
    row = {"prompt": "ignored", "chosen": "Q: hi? A: yes", "rejected": "Q: hi? A: no"}
    assert layout_of([row], DataColumns(prompt=None)).implicit


def test_explicit_prompt_column_must_exist() -> None:
    with pytest.raises(LayoutError, match="missing column `instruction`"):
        layout_of([{"chosen": "a", "rejected": "b"}], DataColumns(prompt="instruction"))


def test_column_mapping_and_nested_paths() -> None:
    columns = DataColumns(prompt="question", chosen="good", rejected="bad")
    found = layout_of([{"question": "q", "good": "a", "bad": "b"}], columns)
    assert (found.get("prompt"), found.get("chosen"), found.get("rejected")) == ("question", "good", "bad")
    nested = layout_of(
        [{"input": {"messages": [U]}, "out": {"good": [A], "bad": [B]}}],
        DataColumns(prompt="input.messages", chosen="out.good", rejected="out.bad"),
    )
    assert nested.layout == "trl" and nested.native == "messages" and nested.used == {"input", "out"}


def test_orca_style_question_and_system_columns() -> None:
    """The issue's Orca CSV: `question` is the prompt and the system turn is kept, never an empty prompt."""
    found = layout_of([{"system": "Be brief.", "question": "q", "chosen": "a", "rejected": "b"}])
    assert (found.get("prompt"), found.get("system"), found.native) == ("question", "system", "messages")


def test_score_columns_found() -> None:
    found = layout_of([{"prompt": "p", "chosen": "a", "rejected": "b", "score_chosen": 8, "score_rejected": 3}])
    assert found.scores == ("score_chosen", "score_rejected")
    assert layout_of([{"prompt": "p", "chosen": "a", "rejected": "b"}]).scores is None


@pytest.mark.parametrize(
    ("row", "fragments"),
    [
        ({"prompt": "p", "completion": "c", "label": True}, ["unpaired", "KTO", "label=true"]),
        ({"messages": [U, A]}, ["SFT layout"]),
        ({"prompt": "p", "response": "r", "helpfulness": 3, "correctness": 4}, ["scalar scores", "`helpfulness`"]),
        ({"prompt": "p", "response": "r", "is_safe": False}, ["safety labels", "data.columns.label: is_safe"]),
        (
            {"question": "q", "response_chosen": "a", "response_rejected": "b"},
            ["missing column", "data.columns.chosen: response_chosen; data.columns.rejected: response_rejected"],
        ),
    ],
    ids=["unpaired", "sft", "reward-scores", "safety-labels", "other-names"],
)
def test_other_layouts_explained(row, fragments) -> None:
    with pytest.raises(LayoutError) as info:
        layout_of([row])
    for fragment in fragments:
        assert fragment in str(info.value)


def test_no_suggestion_that_would_not_work() -> None:
    """An OASST-like row without ranks offers no mapping (once dpo suggested `rejected: tree_state`)."""
    with pytest.raises(LayoutError) as info:
        layout_of([{"message_tree_id": "t", "tree_state": "ready_for_export", "prompt_text": "x"}])
    assert "data.columns" not in str(info.value).split("columns found")[0]
    assert "data.columns.rejected: tree_state" not in str(info.value)


def test_empty_prompts_with_a_likely_prompt_column_is_an_error() -> None:
    rows = [{"user_request": f"Question {i}?", "chosen": f"Yes {i}", "rejected": f"No {i * 7}"} for i in range(20)]
    with pytest.raises(LayoutError, match="data.columns.prompt: user_request"):
        layout_of(rows)
    assert layout_of(rows, DataColumns(prompt="user_request")).get("prompt") == "user_request"


def test_pairs_for_kto_need_unpair() -> None:
    row = {"prompt": "p", "chosen": "a", "rejected": "b"}
    with pytest.raises(LayoutError, match="data.unpair: true"):
        layout_of([row], unpaired=True)
    assert layout_of([row], unpaired=True, unpair=True).kind == "pairs"


def test_named_layout_that_does_not_match() -> None:
    with pytest.raises(LayoutError, match="`format: sharegpt`"):
        layout_of([{"prompt": "p", "chosen": "a", "rejected": "b"}], forced="sharegpt")


def test_jsonl_stream_keeps_line_numbers_and_survives_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{broken\n[1, 2]\n{"a": 2}\n', encoding="utf-8")
    [batch] = list(iter_batches(resolve_source(str(path)), split="train", subset=None))
    assert [r.number for r in batch] == [1, 3, 4, 5]  # the blank line is skipped, as `datasets` does
    assert [r.index for r in batch] == [0, 1, 2, 3]
    assert batch[1].data is None and "invalid JSON" in batch[1].error[1] and batch[1].where == f"{path}:3"
    assert "not an object" in batch[2].error[1] and batch[1].text == "{broken"
    assert batch[3].data == {"a": 2}


def test_invalid_utf8_and_deep_nesting_are_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": "\xff\xfe"}\n' + b"[" * 100_000 + b"\n" + b'{"a": 1}\n')
    [batch] = list(iter_batches(resolve_source(str(path)), split="train", subset=None))
    assert batch[0].error and "nested too deeply" in batch[1].error[1] and batch[2].data == {"a": 1}


def test_line_over_the_per_row_limit_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    big = json.dumps({"prompt": "p", "chosen": "x" * 300_000, "rejected": "y"})
    path.write_text(f'{{"a": 1}}\n{big}\n{{"a": 2}}\n', encoding="utf-8")
    [batch] = list(iter_batches(resolve_source(str(path)), split="train", subset=None, max_row_bytes=100_000))
    assert [r.number for r in batch] == [1, 2, 3]
    assert batch[1].error[0] == "row_too_long" and "over the per-row limit" in batch[1].error[1]
    assert batch[2].data == {"a": 2}


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
def test_compressed_jsonl_streams_with_line_numbers(tmp_path: Path, suffix: str) -> None:
    text = b'{"a": 1}\n{bad\n{"a": 3}\n'
    compress = {
        ".gz": lambda b: gzip.compress(b, mtime=0),
        ".bz2": bz2.compress,
        ".xz": lzma.compress,
        ".zst": zstandard.ZstdCompressor().compress,
    }[suffix]
    path = tmp_path / f"d.jsonl{suffix}"
    path.write_bytes(compress(text))
    source = resolve_source(str(path))
    assert source.builder == "json"
    [batch] = list(iter_batches(source, split="train", subset=None))
    assert [r.number for r in batch] == [1, 2, 3] and batch[1].where == f"{path}:2" and batch[2].data == {"a": 3}


def test_compressed_json_array_and_csv_go_through_datasets(tmp_path: Path) -> None:
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "c", "rejected": "d"}]
    array = tmp_path / "d.json.gz"
    array.write_bytes(gzip.compress(json.dumps(rows).encode(), mtime=0))
    assert not is_json_lines(str(array))
    [batch] = list(iter_batches(resolve_source(str(array)), split="train", subset=None))
    assert [r.data for r in batch] == rows and batch[1].where == f"{array} row 2"
    csv = tmp_path / "d.csv.xz"
    csv.write_bytes(lzma.compress(b"prompt,chosen,rejected\np,a,b\nq,,d\n"))
    [batch] = list(iter_batches(resolve_source(str(csv)), split="train", subset=None))
    assert batch[1].data["chosen"] is None


def test_folders_include_compressed_files_and_refuse_compressed_parquet(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(b'{"a": 1}\n', mtime=0))
    (tmp_path / "b.jsonl").write_text('{"a": 2}\n')
    (tmp_path / "notes.txt").write_text("x")
    assert len(resolve_source(str(tmp_path)).files) == 2
    (tmp_path / "c.parquet.gz").write_bytes(b"x")
    from dpo_cli.errors import DpoError

    with pytest.raises(DpoError, match="unsupported file type"):
        resolve_source(str(tmp_path / "c.parquet.gz"))


def test_jsonl_named_json_is_streamed(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"a": 1}\n{"a": 2}\n', encoding="utf-8")
    assert is_json_lines(str(path))
