"""Every format sample in data/formats/, converted field by field, as `validate-data --write-clean`
writes it and exactly as `dpo train` loads it; the samples are what their generator writes."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import re
from pathlib import Path

import pytest
import zstandard

from dpo_cli.config.schema import DataColumns, DataSection
from dpo_cli.data import load_preference_data
from dpo_cli.validation import validate_data
from dpo_cli.validation.report import CleanWriter
from tests.conftest import ROOT, load_script

FORMATS = ROOT / "data" / "formats"
samples = load_script("make_format_samples")
Q, GOOD, BAD = (lambda i: samples.q(i)), (lambda i: samples.good(i)), (lambda i: samples.bad(i))
SYSTEM = samples.SYSTEM
KTO = {"kto_unpaired.jsonl", "kto_messages.jsonl", "kto_alpaca.json"}
REFUSED = {"helpsteer_scores.jsonl", "safety_labels.jsonl", "sft_conversations.jsonl"}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def system() -> dict:
    return {"role": "system", "content": SYSTEM}


def convert(tmp_path: Path, name: str, **data) -> tuple[list[dict], list[dict], object]:
    """(kept rows, rejects, report) of one sample, through `validate_data` and `--write-clean`."""
    section = DataSection(train=str(FORMATS / name), eval_fraction=None, **data)
    out = tmp_path / "clean"
    report = validate_data(
        section, writer=CleanWriter(out, overwrite=True), kto_weights=(1.0, 1.0) if name in KTO else None
    )
    kept = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    return kept, rejects, report


def reasons(rejects: list[dict]) -> list[str]:
    return [r["reasons"][0]["check"] for r in rejects]


def _decompressed(path: Path) -> bytes:
    data = path.read_bytes()
    opener = {
        ".gz": gzip.decompress,
        ".bz2": bz2.decompress,
        ".xz": lzma.decompress,
        ".zst": lambda b: zstandard.ZstdDecompressor().decompress(b),
    }.get(path.suffix)
    return opener(data) if opener else data


def test_samples_are_up_to_date(tmp_path: Path) -> None:
    written = samples.write_samples(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in FORMATS.iterdir())
    for path in written:
        # compare content (a compressor's bytes may change with the library version)
        assert _decompressed(path) == _decompressed(FORMATS / path.name), (
            f"run scripts/make_format_samples.py ({path.name})"
        )
    gz = tmp_path / "hh_rlhf.jsonl.gz"
    assert gz.read_bytes() == samples.hh_rlhf()  # mtime=0: the same bytes every time


@pytest.mark.parametrize("name", sorted(p.name for p in FORMATS.iterdir() if p.name not in REFUSED))
def test_train_loads_exactly_the_clean_rows(tmp_path: Path, name: str) -> None:
    """What `dpo train` hands TRL is what `--write-clean` writes, for every format."""
    kept, rejects, report = convert(tmp_path, name)
    data = load_preference_data(
        DataSection(train=str(FORMATS / name), eval_fraction=None), unpaired=name in KTO, excluded=report.excluded()
    )
    assert list(data.train) == kept and kept
    assert len(kept) + len(rejects) == report.splits[0].rows
    # and the clean file itself is TRL's format that dpo train accepts as it stands
    again = load_preference_data(
        DataSection(train=str(tmp_path / "clean" / "train.jsonl"), eval_fraction=None), unpaired=name in KTO
    )
    assert list(again.train) == kept


def test_trl_standard(tmp_path: Path) -> None:
    kept, rejects, report = convert(tmp_path, "trl_standard.jsonl")
    assert kept[0] == {"prompt": Q(0), "chosen": GOOD(0), "rejected": BAD(0)} and len(kept) == 6 and not rejects
    assert report.splits[0].char_pairs.margin_summary()["min"] == 5.0


def test_trl_conversational_keeps_system_and_earlier_turns(tmp_path: Path) -> None:
    kept, _, _ = convert(tmp_path, "trl_conversational.jsonl")
    assert kept[0]["prompt"] == [system(), user(Q(0))] and kept[0]["chosen"] == [assistant(GOOD(0))]
    assert [m["role"] for m in kept[2]["prompt"]] == ["system", "user", "assistant", "user"]


def test_hh_rlhf_gzip_as_trl_extracts_it(tmp_path: Path) -> None:
    kept, _, report = convert(tmp_path, "hh_rlhf.jsonl.gz")
    assert report.splits[0].sources[0].layout == "hh" and report.splits[0].format == "standard"
    assert kept[0] == {"prompt": f"\n\nHuman: {Q(0)}\n\nAssistant:", "chosen": f" {GOOD(0)}", "rejected": f" {BAD(0)}"}
    assert kept[1]["prompt"].startswith("\n\nHuman: Hi, quick question.\n\nAssistant: Sure, what is it?")


def test_hh_rlhf_parsed_into_turns_when_conversational(tmp_path: Path) -> None:
    kept, _, _ = convert(tmp_path, "hh_rlhf.jsonl.gz", format="conversational")
    assert kept[0] == {"prompt": [user(Q(0))], "chosen": [assistant(GOOD(0))], "rejected": [assistant(BAD(0))]}
    assert kept[1]["prompt"] == [user("Hi, quick question."), assistant("Sure, what is it?"), user(Q(1))]


def test_dialogue_pairs_share_their_opening_and_flatten_typed_parts(tmp_path: Path) -> None:
    kept, _, report = convert(tmp_path, "dialogue_ultrafeedback.jsonl")
    assert kept[0] == {"prompt": [user(Q(0))], "chosen": [assistant(GOOD(0))], "rejected": [assistant(BAD(0))]}
    assert kept[4]["prompt"] == [user(Q(4))]  # [{type: text, text: ...}] -> text
    assert report.splits[0].sources[0].ignored_columns == [
        "prompt",
        "prompt_id",
        "messages",
        "score_chosen",
        "score_rejected",
    ]


def test_sharegpt_ranking(tmp_path: Path) -> None:
    kept, _, report = convert(tmp_path, "sharegpt_ranking.json")
    assert report.splits[0].sources[0].layout == "sharegpt"
    assert kept[0]["prompt"] == [system(), user(Q(0))] and kept[0]["chosen"] == [assistant(GOOD(0))]
    assert kept[0]["rejected"] == [assistant(BAD(0))]
    assert kept[1]["prompt"] == [
        user("I have a household question."),
        assistant("Happy to help. What is it?"),
        user(Q(1)),
    ]
    assert [m["role"] for m in kept[5]["prompt"]].count("system") == 1  # system turn and column not doubled
    kept, _, _ = convert(tmp_path, "sharegpt_messages.jsonl")
    assert kept[2] == {"prompt": [user(Q(2))], "chosen": [assistant(GOOD(2))], "rejected": [assistant(BAD(2))]}


def test_openai_preference(tmp_path: Path) -> None:
    kept, rejects, _ = convert(tmp_path, "openai_preference.jsonl")
    assert not rejects and kept[0]["prompt"] == [system(), user(Q(0))]
    assert kept[0]["chosen"] == [assistant(GOOD(0))] and kept[0]["rejected"] == [assistant(BAD(0))]
    assert kept[3]["prompt"][0] == assistant("Hello, how can I help today?")
    assert kept[4]["prompt"][1] == user(Q(4))


def test_context_pairs(tmp_path: Path) -> None:
    kept, _, report = convert(tmp_path, "context_pairs.jsonl")
    assert kept[2]["prompt"] == [user("Morning!"), assistant("Good morning."), user(Q(2))]
    assert kept[2]["chosen"] == [assistant(GOOD(2))] and report.splits[0].ignored_columns == ["id", "source"]


def test_oasst_trees_pair_ranked_siblings_under_every_prompt(tmp_path: Path) -> None:
    kept, rejects, report = convert(tmp_path, "oasst_trees.jsonl")
    first = [user(Q(0))]
    assert kept[0] == {
        "prompt": first,
        "chosen": [assistant(GOOD(0))],
        "rejected": [assistant("About five minutes, give or take.")],
    }
    assert kept[1] == {"prompt": first, "chosen": [assistant(GOOD(0))], "rejected": [assistant(BAD(0))]}
    assert kept[2]["prompt"] == [user(Q(0)), assistant(GOOD(0)), user("And for black tea?")]
    assert kept[2]["chosen"] == [assistant("Three to five minutes in boiling water.")]
    assert kept[3]["prompt"] == [user(Q(1))] and len(kept) == 4  # the deleted reply never pairs
    assert reasons(rejects) == ["no_pairs"] and report.splits[0].sources[0].rows == 3


def test_alpaca_pairs_keep_input_system_and_history(tmp_path: Path) -> None:
    kept, _, _ = convert(tmp_path, "alpaca_pairs.json")
    assert kept[0]["prompt"] == [system(), user(Q(0))] and kept[0]["chosen"] == [assistant(GOOD(0))]
    assert kept[1]["prompt"] == [user(f"{Q(1)}\nI live in a small flat.")]
    assert kept[2]["prompt"] == [user("Hello there."), assistant("Hi! What can I do for you?"), user(Q(2))]


def test_orca_csv_takes_question_as_prompt_and_keeps_the_system_turn(tmp_path: Path) -> None:
    kept, _, report = convert(tmp_path, "orca_pairs.csv")
    assert kept[0] == {
        "prompt": [system(), user(Q(0))],
        "chosen": [assistant(GOOD(0))],
        "rejected": [assistant(BAD(0))],
    }
    assert kept[1]["prompt"] == [user(Q(1))]  # an empty system cell adds no turn
    assert report.splits[0].ignored_columns == [] and not [
        f for f in report.splits[0].findings if f.check.id != "few_rows"
    ]


def test_stack_exchange_bz2(tmp_path: Path) -> None:
    kept, _, _ = convert(tmp_path, "stack_exchange.jsonl.bz2")
    assert kept[3] == {"prompt": Q(3), "chosen": GOOD(3), "rejected": BAD(3)}


def test_alpacafarm_label_picks_the_preferred_output_and_drops_no_preference(tmp_path: Path) -> None:
    kept, rejects, _ = convert(tmp_path, "alpacafarm_pairs.jsonl")
    assert [r["chosen"] for r in kept] == [GOOD(i) for i in range(5)]
    assert [r["rejected"] for r in kept] == [BAD(i) for i in range(5)]
    assert reasons(rejects) == ["tie"] and rejects[0]["where"].endswith(":6")


def test_pku_saferlhf_xz_by_either_label(tmp_path: Path) -> None:
    kept, _, _ = convert(tmp_path, "pku_saferlhf.jsonl.xz")
    assert [r["chosen"] for r in kept] == [GOOD(i) for i in range(5)]
    kept, _, _ = convert(tmp_path, "pku_saferlhf.jsonl.xz", columns=DataColumns(label="safer_response_id"))
    assert kept[3]["chosen"] == BAD(3) and kept[2]["chosen"] == GOOD(2)  # row 3: the safer one is response_0


def test_helpsteer3_sign_of_overall_preference(tmp_path: Path) -> None:
    kept, rejects, _ = convert(tmp_path, "helpsteer3_preference.jsonl")
    assert [r["chosen"] for r in kept] == [[assistant(GOOD(i))] for i in (0, 1, 2, 4, 5)]
    assert kept[0]["prompt"] == [user(Q(0))] and reasons(rejects) == ["tie"]


def test_arena_kaggle_csv_with_json_turn_lists(tmp_path: Path) -> None:
    kept, rejects, report = convert(tmp_path, "arena_kaggle.csv")
    assert kept[0] == {"prompt": [user(Q(0))], "chosen": [assistant(GOOD(0))], "rejected": [assistant(BAD(0))]}
    assert kept[1]["chosen"] == [assistant(GOOD(1))]  # model_b won
    assert kept[2]["prompt"] == [user(Q(3))]  # two turns: the pair diverges at the first answer
    assert kept[2]["chosen"] == [
        assistant(GOOD(3)),
        user("Thanks. Anything else?"),
        assistant("Only that consistency matters more than any single trick."),
    ]
    assert sorted(reasons(rejects)) == ["empty_field", "tie"]  # a tie, and a battle with a null answer
    assert report.splits[0].error_rows == 1


def test_arena_conversations_zst(tmp_path: Path) -> None:
    kept, rejects, _ = convert(tmp_path, "arena_conversations.jsonl.zst")
    assert [r["chosen"] for r in kept] == [[assistant(GOOD(i))] for i in (0, 1, 3)]
    assert reasons(rejects) == ["tie", "tie"]


def test_ultrafeedback_raw_binarized_best_against_worst(tmp_path: Path) -> None:
    kept, rejects, _ = convert(tmp_path, "ultrafeedback_raw.jsonl")
    assert kept[0] == {"prompt": Q(0), "chosen": GOOD(0), "rejected": BAD(0)}
    assert kept[1] == {"prompt": Q(1), "chosen": GOOD(1), "rejected": f"{GOOD(1)} Mostly."}  # first of a tied best
    assert kept[2] == {"prompt": Q(3), "chosen": GOOD(3), "rejected": BAD(3)}  # the N/A score is not ranked
    assert reasons(rejects) == ["tie"]
    kept, rejects, _ = convert(tmp_path, "ultrafeedback_raw.jsonl", min_score_gap=5.6)
    assert len(kept) == 1 and reasons(rejects) == ["small_gap", "small_gap", "tie"]


def test_nectar_ranks_lower_is_better(tmp_path: Path) -> None:
    kept, _, _ = convert(tmp_path, "nectar_ranked.jsonl")
    assert kept[0] == {"prompt": f"\n\nHuman: {Q(0)}\n\nAssistant:", "chosen": GOOD(0), "rejected": BAD(0)}
    kept, _, _ = convert(tmp_path, "nectar_ranked.jsonl", format="conversational")
    assert kept[0]["prompt"] == [user(Q(0))]


def test_responses_with_parallel_scores(tmp_path: Path) -> None:
    kept, rejects, _ = convert(tmp_path, "responses_scores.jsonl", min_score_gap=0.1)
    assert kept[0]["chosen"] == GOOD(0) and kept[0]["rejected"] == BAD(0) and reasons(rejects) == ["small_gap"]


def test_kto_rows_in_three_layouts(tmp_path: Path) -> None:
    kept, _, report = convert(tmp_path, "kto_unpaired.jsonl")
    assert kept[1] == {"prompt": Q(0), "completion": BAD(0), "label": False} and report.splits[0].kind == "unpaired"
    kept, _, _ = convert(tmp_path, "kto_messages.jsonl")
    assert kept[0] == {"prompt": [user(Q(0))], "completion": [assistant(GOOD(0))], "label": True}
    kept, _, _ = convert(tmp_path, "kto_alpaca.json")
    assert kept[0] == {"prompt": Q(0), "completion": BAD(0), "label": False}


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("helpsteer_scores.jsonl", "scalar scores"),
        ("safety_labels.jsonl", "safety labels"),
        ("sft_conversations.jsonl", "SFT layout"),
    ],
)
def test_data_without_pairs_is_refused_with_what_it_is(name: str, fragment: str) -> None:
    report = validate_data(DataSection(train=str(FORMATS / name), eval_fraction=None))
    finding = report.splits[0].findings.by_id["layout"]
    assert fragment in finding.message and "DPO needs" in finding.message and report.exit_code() == 2


def _suggestions(message: str) -> dict[str, str]:
    return dict(re.findall(r"data\.columns\.(\w+): ([\w.]+)", message))


@pytest.mark.parametrize(
    "rows",
    [
        [{"q": f"Question {i}?", "good_answer": f"Yes {i}.", "bad_answer": f"No {i * 3}!"} for i in range(30)],
        [
            {"question": f"Q{i}", "response_chosen": f"fine {i}", "response_rejected": f"poor {i * 7}"}
            for i in range(30)
        ],
        [{"user_request": f"Question {i}?", "chosen": f"Yes {i}", "rejected": f"No {i * 7}"} for i in range(30)],
        [
            {"instruction_text": f"Do {i}", "preferred": f"Done {i}.", "dispreferred": f"Nope {i * 5}"}
            for i in range(30)
        ],
    ],
    ids=["names", "prefixed", "empty-prompt", "words"],
)
def test_every_printed_mapping_is_valid_for_its_file(tmp_path: Path, rows: list[dict]) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = validate_data(DataSection(train=str(path), eval_fraction=None))
    message = report.splits[0].findings.by_id["layout"].message
    mapping = _suggestions(message)
    assert mapping, message
    fixed = validate_data(DataSection(train=str(path), eval_fraction=None, columns=DataColumns(**mapping)))
    assert fixed.errors == 0, [f.message for f in fixed.splits[0].findings]
    assert all(
        r["prompt"]
        for r in load_preference_data(
            DataSection(train=str(path), eval_fraction=None, columns=DataColumns(**mapping))
        ).train
    )


def test_the_kto_mapping_offered_for_safety_labels_is_valid() -> None:
    section = DataSection(train=str(FORMATS / "safety_labels.jsonl"), eval_fraction=None)
    mapping = _suggestions(validate_data(section).splits[0].findings.by_id["layout"].message)
    assert mapping == {"completion": "response", "label": "is_safe"}
    fixed = DataSection(train=str(FORMATS / "safety_labels.jsonl"), eval_fraction=None, columns=DataColumns(**mapping))
    assert validate_data(fixed, kto_weights=(1.0, 1.0)).errors == 0


def test_docs_formats_table_is_generated_and_every_example_is_its_layout() -> None:
    import csv

    from dpo_cli.data.layouts import LAYOUTS, Sample, detect, render_formats_table

    page = (ROOT / "docs" / "data-formats.md").read_text()
    assert render_formats_table() in page, "run: python scripts/gen_config_reference.py"
    for layout in LAYOUTS.values():
        lines = layout.example.splitlines()
        assert len(lines) == 3, layout.name
        rows = list(csv.DictReader(lines)) if layout.name == "arena" else [json.loads(layout.example)]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        found = detect(Sample(keys, rows, DataColumns()), unpaired=layout.kinds == ("unpaired",))
        assert found.layout == layout.name


def test_every_process_finds_the_same_cached_table(tmp_path: Path) -> None:
    # The ranks of a launched run each load the data; they must land on one cached table (TRL's
    # reference precompute exchanges its results through a file beside it), and so must a rerun.
    # String hashes are salted per process, so a fingerprint built from a set's repr would differ.
    import os
    import subprocess
    import sys

    code = (
        "import sys; from dpo_cli.config.schema import DataSection; from dpo_cli.data import load_preference_data; "
        f"d = load_preference_data(DataSection(train={str(FORMATS / 'orca_pairs.csv')!r}, eval_fraction=None)); "
        "print(d.train.cache_files[0]['filename'])"
    )
    found = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "HF_DATASETS_CACHE": str(tmp_path), "PYTHONPATH": str(ROOT)}
        log = tmp_path / f"seed-{seed}.log"
        with log.open("w") as out:
            code_ = subprocess.call(
                [sys.executable, "-c", code], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        assert code_ == 0, log.read_text()[-2000:]
        found.append(log.read_text().strip().splitlines()[-1])
    assert found[0] == found[1]
