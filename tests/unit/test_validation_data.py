"""`validate_data` end to end without a tokenizer: each check fires on a fixture made to trigger
it and stays silent on clean data; `--write-clean` accounts for every row; "valid" means the
loader `dpo train` uses accepts the data."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dpo_cli.config.schema import DataColumns, DataSection
from dpo_cli.data import load_preference_data
from dpo_cli.errors import DpoError
from dpo_cli.validation import data_section, validate_data
from dpo_cli.validation.report import CleanWriter, report_json

ROOT = Path(__file__).resolve().parents[2]
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
]


def clean_rows(n: int = 120) -> list[dict]:
    """Distinct prompts, clearly different responses, chosen longer in half the pairs."""
    rows = []
    for i in range(n):
        a = " ".join(WORDS[(i + k) % 16] for k in range(8 + i % 5))
        b = " ".join(WORDS[(i * 3 + k) % 16].upper() for k in range(8 + (i + 2) % 5))
        rows.append(
            {
                "prompt": f"Question {i}: tell me about item {i * 7}.",
                "chosen": f"Yes: {a}",
                "rejected": f"No! {b}",
                "id": i,
            }
        )
    return rows


def chat_rows(n: int = 120) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in clean_rows(n)
    ]


def write(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def found(report, split: int = 0) -> dict[str, int]:
    return {f.check.id: f.count for f in report.splits[split].findings}


def test_clean_data_has_no_findings_and_loads_for_training(tmp_path: Path) -> None:
    path = write(tmp_path / "train.jsonl", clean_rows())
    report = validate_data(data_section(str(path)))
    assert found(report) == {}
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 0
    assert report.splits[0].format == "standard" and report.splits[0].ignored_columns == ["id"]
    assert report.splits[0].sources[0].layout == "trl"
    assert len(load_preference_data(DataSection(train=str(path), eval_fraction=None)).train) == 120


def test_clean_conversational_data(tmp_path: Path) -> None:
    report = validate_data(data_section(str(write(tmp_path / "t.jsonl", chat_rows()))))
    assert found(report) == {} and report.splits[0].format == "conversational"


def _set(i: int, key: str, value) -> Callable[[list], list]:
    def mutate(rows: list) -> list:
        rows[i] = {**rows[i], key: value}
        return rows

    return mutate


def _drop(i: int, key: str) -> Callable[[list], list]:
    def mutate(rows: list) -> list:
        rows[i] = {k: v for k, v in rows[i].items() if k != key}
        return rows

    return mutate


def _copy(i: int, j: int, keys: tuple[str, ...]) -> Callable[[list], list]:
    def mutate(rows: list) -> list:
        rows[i] = {**rows[i], **{k: rows[j][k] for k in keys}}
        return rows

    return mutate


def _line(i: int, text: str) -> Callable[[list], list]:
    def mutate(rows: list) -> list:
        rows[i] = text
        return rows

    return mutate


def _lengthen_chosen(rows: list) -> list:
    return [{**r, "chosen": r["chosen"] + " and a much longer explanation follows here"} for r in rows]


def _scores(rows: list) -> list:
    rows = [{**r, "score_chosen": 8.0, "score_rejected": 2.0} for r in rows]
    rows[7] = {**rows[7], "score_chosen": 1.0}
    return rows


# check id -> how to break clean rows so that exactly that check fires on row 8 (line 8).
ROW_CASES = {
    "malformed_line": _line(7, '{"prompt": "p", "chosen": '),
    "missing_field": _drop(7, "rejected"),
    "null_field": _set(7, "chosen", None),
    "wrong_type": _set(7, "prompt", ["not", "a", "string"]),
    "empty_field": _set(7, "rejected", "  "),
    "identical_pair": lambda rows: _set(7, "rejected", rows[7]["chosen"])(rows),
    "duplicate_pair": _copy(7, 3, ("prompt", "chosen", "rejected")),
    "duplicate_prompt": _copy(7, 3, ("prompt",)),
    "near_identical": lambda rows: _set(7, "rejected", rows[7]["chosen"] + ".")(rows),
    "replacement_char": _set(7, "chosen", "Yes: broken \ufffd text here"),
    "control_chars": _set(7, "chosen", "Yes: bell \x07 text here"),
    "score_margin": _scores,
}


@pytest.mark.parametrize("check", sorted(ROW_CASES))
def test_each_row_check_fires_with_line_number(tmp_path: Path, check: str) -> None:
    path = write(tmp_path / "train.jsonl", ROW_CASES[check](clean_rows()))
    report = validate_data(data_section(str(path)))
    finding = report.splits[0].findings.by_id[check]
    assert finding.count == 1
    assert finding.examples[0].startswith(f"{path}:8")
    assert set(found(report)) == {check}  # nothing else fires: the clean rows stay clean
    expected_exit = 2 if finding.check.severity == "error" else 0
    assert report.exit_code() == expected_exit
    assert report.exit_code(strict=True) == (expected_exit or 1)


def test_bad_conversation_structure(tmp_path: Path) -> None:
    rows = chat_rows()
    rows[4] = {**rows[4], "chosen": [{"role": "user", "content": "I am not the assistant"}]}
    rows[5] = {**rows[5], "prompt": rows[5]["prompt"] * 2}
    report = validate_data(data_section(str(write(tmp_path / "t.jsonl", rows))))
    finding = report.splits[0].findings.by_id["bad_conversation"]
    assert finding.count == 2 and "does not start with the assistant" in finding.examples[0]
    assert "two user turns" in finding.examples[1]


def test_mixed_formats_in_one_file(tmp_path: Path) -> None:
    rows = chat_rows()
    rows[2] = {**rows[2], "rejected": "a plain string"}
    rows[3] = {**rows[3], "prompt": "a plain prompt"}
    report = validate_data(data_section(str(write(tmp_path / "t.jsonl", rows))))
    assert found(report) == {"wrong_type": 2}


def test_unused_columns_may_change_type(tmp_path: Path) -> None:
    """Rows are read by our own reader in training too, so a column nobody reads cannot break loading."""
    rows = clean_rows()
    rows[7] = {**rows[7], "id": {"nested": 1}}
    path = write(tmp_path / "t.jsonl", rows)
    assert found(validate_data(data_section(str(path)))) == {}
    assert len(load_preference_data(DataSection(train=str(path), eval_fraction=None)).train) == 120


def test_implicit_prompt_hh_layout(tmp_path: Path) -> None:
    rows = [
        {
            "chosen": f"\n\nHuman: {r['prompt']}\n\nAssistant: {r['chosen']}",
            "rejected": f"\n\nHuman: {r['prompt']}\n\nAssistant: {r['rejected']}",
        }
        for r in clean_rows()
    ]
    rows[9] = {"chosen": "Completely different", "rejected": "Nothing shared"}
    path = write(tmp_path / "hh.jsonl", rows)
    report = validate_data(data_section(str(path)))
    assert report.splits[0].sources[0].layout == "hh"
    assert found(report) == {"no_shared_prompt": 1}
    assert report.splits[0].chars["prompt"].summary()["min"] == 0
    # train's loader extracts the prompt as TRL would (TRL's own function agrees: tests/integration), so
    # TRL gets explicit prompts
    train = load_preference_data(DataSection(train=str(path), eval_fraction=None)).train
    assert train.column_names == ["prompt", "chosen", "rejected"]
    first = clean_rows()[0]
    assert train[0] == {
        "prompt": f"\n\nHuman: {first['prompt']}\n\nAssistant:",
        "chosen": f" {first['chosen']}",
        "rejected": f" {first['rejected']}",
    }
    assert train[9]["prompt"] == ""


def test_implicit_prompt_conversational(tmp_path: Path) -> None:
    rows = [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in chat_rows()]
    report = validate_data(data_section(str(write(tmp_path / "hh.jsonl", rows))))
    assert report.splits[0].sources[0].layout == "dialogue" and found(report) == {}


def test_column_mapping_from_config(tmp_path: Path) -> None:
    rows = [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in clean_rows()]
    path = write(tmp_path / "t.jsonl", rows)
    columns = DataColumns(prompt="question", chosen="good", rejected="bad")
    report = validate_data(DataSection(train=str(path), columns=columns))
    assert found(report) == {}
    unmapped = validate_data(data_section(str(path)))
    assert "layout" in found(unmapped) and unmapped.exit_code() == 2


def test_leakage_between_train_and_eval(tmp_path: Path) -> None:
    rows = clean_rows(150)
    train = write(tmp_path / "train.jsonl", rows[:120])
    eval_rows = rows[120:]
    eval_rows[0] = {**eval_rows[0], "prompt": rows[5]["prompt"].upper()}  # same prompt, case aside
    evals = write(tmp_path / "eval.jsonl", eval_rows)
    report = validate_data(data_section(str(train), str(evals)))
    assert found(report, 0) == {}
    leak = report.splits[1].findings.by_id["leakage"]
    assert leak.count == 1 and f"{train}:6" in leak.examples[0]
    clean = validate_data(data_section(str(train), str(write(tmp_path / "e2.jsonl", rows[121:]))))
    assert "leakage" not in found(clean, 1)


def test_length_bias(tmp_path: Path) -> None:
    report = validate_data(data_section(str(write(tmp_path / "t.jsonl", _lengthen_chosen(clean_rows())))))
    assert found(report) == {"length_bias": 1}
    assert "longer in 100%" in report.splits[0].findings.by_id["length_bias"].message


def test_few_rows_and_no_rows(tmp_path: Path) -> None:
    report = validate_data(data_section(str(write(tmp_path / "t.jsonl", clean_rows(20)))))
    assert found(report) == {"few_rows": 1}
    rows = [{**r, "rejected": r["chosen"]} for r in clean_rows(3)]
    report = validate_data(data_section(str(write(tmp_path / "t2.jsonl", rows))))
    assert found(report) == {"identical_pair": 3, "no_rows": 1}


def test_format_mismatch(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", clean_rows())
    # `conversational` asks for messages: text pairs become a user turn and assistant turns
    report = validate_data(DataSection(train=str(path), format="conversational", eval_fraction=None))
    assert found(report) == {} and report.splits[0].format == "conversational"
    hh = write(tmp_path / "plain.jsonl", [{"chosen": r["chosen"], "rejected": r["rejected"]} for r in clean_rows()])
    report = validate_data(DataSection(train=str(hh), format="conversational", eval_fraction=None))
    assert found(report) == {"format_mismatch": 1}  # implicit-prompt text has no turns to convert
    evals = write(tmp_path / "e.jsonl", chat_rows(10))
    report = validate_data(data_section(str(path), str(evals)))
    assert "format_mismatch" in found(report, 1)


def test_all_lines_malformed(tmp_path: Path) -> None:
    report = validate_data(data_section(str(write(tmp_path / "t.jsonl", ["nope", "{bad"]))))
    assert found(report) == {"malformed_line": 2, "no_rows": 1}


def test_unreadable_source_is_a_dpo_error(tmp_path: Path) -> None:
    with pytest.raises(DpoError, match="not found"):
        validate_data(data_section(str(tmp_path / "missing.jsonl")))


def test_write_clean_accounts_for_every_row(tmp_path: Path) -> None:
    rows = clean_rows()
    rows[7] = {**rows[7], "chosen": None}
    rows[12] = dict(rows[3])
    rows[20] = "{oops"
    rows[30] = {**rows[30], "rejected": rows[30]["chosen"]}
    rows[40] = {**rows[40], "rejected": rows[40]["chosen"] + "."}  # a warning: kept
    train = write(tmp_path / "train.jsonl", rows)
    evals = write(tmp_path / "eval.jsonl", [clean_rows(130)[125], {**clean_rows()[0], "id": 999}])
    out = tmp_path / "clean"
    report = validate_data(data_section(str(train), str(evals)), writer=CleanWriter(out))
    kept = (out / "train.jsonl").read_text().splitlines()
    kept_eval = (out / "eval.jsonl").read_text().splitlines()
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(kept) + len(kept_eval) + len(rejects) == 120 + 2
    reasons = {r["where"]: [x["check"] for x in r["reasons"]] for r in rejects}
    assert reasons == {
        f"{train}:8": ["null_field"],
        f"{train}:13": ["duplicate_pair"],
        f"{train}:21": ["malformed_line"],
        f"{train}:31": ["identical_pair"],
        f"{evals}:2": ["leakage"],
    }
    assert rejects[2]["line"] == "{oops" and rejects[0]["row"]["chosen"] is None
    # kept rows are TRL's rows (the fields TRL reads, nothing else), and train's loader accepts them
    trl_row = {k: clean_rows()[0][k] for k in ("prompt", "chosen", "rejected")}
    assert json.loads(kept[0]) == trl_row and {k: rows[40][k] for k in trl_row} in [json.loads(x) for x in kept]
    assert len(load_preference_data(DataSection(train=str(out / "train.jsonl"), eval_fraction=None)).train) == 116
    assert {s.name: (s.kept, s.dropped) for s in report.splits} == {"train": (116, 4), "eval": (1, 1)}
    assert not list(out.glob(".*.tmp"))


def test_write_clean_refuses_a_used_folder(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(DpoError, match="not empty"):
        CleanWriter(tmp_path)
    CleanWriter(tmp_path, overwrite=True)


def test_write_clean_writes_nothing_for_an_unknown_layout(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", [{"prompt": "p", "completion": "c", "label": True}])
    out = tmp_path / "clean"
    report = validate_data(data_section(str(path)), writer=CleanWriter(out))
    assert report.clean_dir is None and list(out.iterdir()) == []


def test_json_report_shape(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", ROW_CASES["null_field"](clean_rows()))
    data = report_json(validate_data(data_section(str(path))))
    json.dumps(data)
    assert data["exit_code"] == 2 and data["errors"] == 1
    split = data["splits"][0]
    assert split["rows"] == 120 and split["error_rows"] == 1 and split["format"] == "standard"
    assert split["findings"][0]["check"] == "null_field" and split["char_lengths"]["chosen"]["max"] > 0


def test_parquet_and_csv_sources(tmp_path: Path) -> None:
    from datasets import Dataset

    rows = ROW_CASES["null_field"](clean_rows())
    Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]).to_parquet(
        str(tmp_path / "t.parquet")
    )
    report = validate_data(data_section(str(tmp_path / "t.parquet")))
    assert found(report) == {"null_field": 1}
    assert report.splits[0].findings.by_id["null_field"].examples[0].startswith(f"{tmp_path / 't.parquet'} row 8")


def test_no_torch_or_transformers_without_a_tokenizer(tmp_path: Path) -> None:
    """JSON Lines, plain or compressed, are read without `datasets` either (as before compression was read)."""
    import gzip

    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in clean_rows()).encode(), mtime=0))
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from dpo_cli.cli.main import app\n"
        f"result = CliRunner().invoke(app, ['validate-data', '--data', {str(path)!r}])\n"
        "assert result.exit_code == 0, result.output\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
