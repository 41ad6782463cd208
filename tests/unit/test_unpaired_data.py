"""KTO's unpaired rows in the loader and in `validate-data`: label balance, weight advice, layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpo_cli.config.schema import DataSection
from dpo_cli.data import load_preference_data
from dpo_cli.errors import DpoError
from dpo_cli.validation import validate_data
from dpo_cli.validation.checks import kto_weight_advice

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"]


def thumbs_rows(desirable: int, undesirable: int) -> list[dict]:
    rows = []
    for i in range(desirable + undesirable):
        text = " ".join(WORDS[(i + k) % 12] for k in range(6 + i % 4))
        rows.append(
            {
                "prompt": f"Question {i}: about item {i * 7}?",
                "completion": f"Answer {i}: {text}",
                "label": i < desirable,
            }
        )
    return rows


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ids(report, severity: str | None = None) -> set[str]:
    return {f.check.id for s in report.splits for f in s.findings if severity is None or f.check.severity == severity}


@pytest.mark.parametrize(
    ("counts", "weights", "advice"),
    [
        ((100, 100), (1.0, 1.0), None),
        ((120, 100), (1.0, 1.0), None),  # ratio 1.2 is inside [1, 4/3]
        ((100, 300), (1.0, 1.0), "desirable_weight in [3.00, 4.00]"),
        ((300, 100), (1.0, 1.0), "undesirable_weight in [2.25, 3.00]"),
        ((100, 300), (3.5, 1.0), None),  # already balanced by the weight
        ((50, 0), (1.0, 1.0), "no undesirable (label false) rows"),
    ],
)
def test_kto_weight_advice(counts: tuple[int, int], weights: tuple[float, float], advice: str | None) -> None:
    found = kto_weight_advice(*counts, *weights)
    assert (found is None) if advice is None else (advice in found), found


def test_balanced_unpaired_rows_are_clean(tmp_path: Path) -> None:
    section = DataSection(train=str(write(tmp_path / "t.jsonl", thumbs_rows(60, 60))), eval_fraction=None)
    report = validate_data(section, kto_weights=(1.0, 1.0))
    assert report.errors == 0 and "label_balance" not in ids(report)
    assert report.splits[0].kind == "unpaired" and "KTO" in report.splits[0].sources[0].described


def test_unbalanced_rows_get_a_weight_suggestion(tmp_path: Path) -> None:
    section = DataSection(train=str(write(tmp_path / "t.jsonl", thumbs_rows(90, 30))), eval_fraction=None)
    report = validate_data(section, kto_weights=(1.0, 1.0))
    (finding,) = [f for f in report.splits[0].findings if f.check.id == "label_balance"]
    assert "90 desirable vs 30 undesirable" in finding.message
    assert "undesirable_weight in [2.25, 3.00]" in finding.message
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 1
    # The suggested weight silences it.
    assert "label_balance" not in ids(validate_data(section, kto_weights=(1.0, 2.5)))


def test_bad_unpaired_rows_are_errors(tmp_path: Path) -> None:
    rows = thumbs_rows(30, 30)
    rows[3]["label"] = "yes"
    rows[4]["completion"] = "  "
    del rows[5]["label"]
    rows.append(dict(rows[0]))
    section = DataSection(train=str(write(tmp_path / "t.jsonl", rows)), eval_fraction=None)
    report = validate_data(section, kto_weights=(1.0, 1.0))
    assert {"wrong_type", "empty_field", "missing_field"} <= ids(report, "error")
    assert "duplicate_pair" in ids(report, "warning")
    assert report.splits[0].error_rows == 3


def test_pairs_for_kto_need_unpair(tmp_path: Path) -> None:
    pairs = [{"prompt": f"q{i}", "chosen": f"good answer {i}", "rejected": f"bad reply {i * 3}"} for i in range(40)]
    path = write(tmp_path / "p.jsonl", pairs)
    report = validate_data(DataSection(train=str(path), eval_fraction=None), kto_weights=(1.0, 1.0))
    assert "layout" in ids(report, "error")
    assert "data.unpair: true" in report.splits[0].findings.by_id["layout"].message
    ok = validate_data(DataSection(train=str(path), eval_fraction=None, unpair=True), kto_weights=(1.0, 1.0))
    assert ok.errors == 0


def test_dpo_still_rejects_unpaired_rows(tmp_path: Path) -> None:
    section = DataSection(train=str(write(tmp_path / "t.jsonl", thumbs_rows(30, 30))), eval_fraction=None)
    report = validate_data(section)
    assert "layout" in ids(report, "error")
    assert "algorithm: kto" in report.splits[0].findings.by_id["layout"].message


def test_loader_reads_unpaired_rows_for_kto_only(tmp_path: Path) -> None:
    rows = thumbs_rows(20, 10)
    for r in rows:
        r["extra"] = 1
    section = DataSection(train=str(write(tmp_path / "t.jsonl", rows)), eval_fraction=0.2)
    data = load_preference_data(section, unpaired=True)
    assert data.train.column_names == ["prompt", "completion", "label"] and data.ignored_columns == ["extra"]
    assert len(data.train) + len(data.eval) == 30
    with pytest.raises(DpoError, match="train these rows with KTO"):
        load_preference_data(section)


def test_loader_refuses_non_boolean_labels_and_unasked_pairs(tmp_path: Path) -> None:
    rows = [{**r, "label": int(r["label"])} for r in thumbs_rows(5, 5)]
    section = DataSection(train=str(write(tmp_path / "t.jsonl", rows)), eval_fraction=None)
    with pytest.raises(DpoError, match="no training rows"):  # every row is dropped: its label is no boolean
        load_preference_data(section, unpaired=True)
    report = validate_data(section, kto_weights=(1.0, 1.0))
    assert report.splits[0].findings.by_id["wrong_type"].count == 10
    assert "expected true or false" in report.splits[0].findings.by_id["wrong_type"].examples[0]
    pairs = write(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}] * 3)
    with pytest.raises(DpoError, match="preference pairs, but `algorithm: kto`") as info:
        load_preference_data(DataSection(train=str(pairs), eval_fraction=None), unpaired=True)
    assert "data.unpair: true" in info.value.message
