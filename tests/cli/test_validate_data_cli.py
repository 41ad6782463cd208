"""`dpo validate-data` and `dpo train`'s data gate: exit codes, messages, report and clean files."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dpo_cli.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
runner = CliRunner()


def rows(n: int = 120) -> list[dict]:
    return [
        {"prompt": f"Question {i}?", "chosen": f"Answer {i} in a few words.", "rejected": f"No idea about {i * 3}!"}
        for i in range(n)
    ]


def write(path: Path, items: list) -> Path:
    path.write_text("\n".join(i if isinstance(i, str) else json.dumps(i) for i in items) + "\n", encoding="utf-8")
    return path


def test_clean_data_exits_0() -> None:
    result = runner.invoke(app, ["validate-data", "--data", str(SAMPLE / "train.jsonl")])
    assert result.exit_code == 0, result.output
    assert "400 rows, standard" in result.output and "no problems" in result.output


def test_errors_exit_2_with_line_numbers(tmp_path: Path) -> None:
    data = rows()
    data[4] = "{broken"
    data[9] = {**data[9], "rejected": data[9]["chosen"]}
    path = write(tmp_path / "t.jsonl", data)
    result = runner.invoke(app, ["validate-data", "--data", str(path)])
    assert result.exit_code == 2
    assert f"{path}:5" in result.output and "malformed_line" in result.output
    assert f"{path}:10" in result.output and "identical_pair" in result.output


def test_warnings_pass_unless_strict(tmp_path: Path) -> None:
    data = rows()
    data[9] = dict(data[2])
    path = write(tmp_path / "t.jsonl", data)
    assert runner.invoke(app, ["validate-data", "--data", str(path)]).exit_code == 0
    result = runner.invoke(app, ["validate-data", "--data", str(path), "--strict"])
    assert result.exit_code == 1 and "duplicate_pair" in result.output


def test_report_and_write_clean(tmp_path: Path) -> None:
    data = rows()
    data[3] = {**data[3], "chosen": None}
    path = write(tmp_path / "t.jsonl", data)
    report, clean = tmp_path / "r.json", tmp_path / "clean"
    args = ["validate-data", "--data", str(path), "--report", str(report), "--write-clean", str(clean)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    saved = json.loads(report.read_text())
    assert saved["exit_code"] == 2 and saved["splits"][0]["findings"][0]["check"] == "null_field"
    assert len((clean / "train.jsonl").read_text().splitlines()) == 119
    [reject] = [json.loads(x) for x in (clean / "rejects.jsonl").read_text().splitlines()]
    assert reject["where"] == f"{path}:4" and reject["reasons"][0]["check"] == "null_field"
    # nothing is overwritten without --overwrite
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "file exists" in again.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 2
    cleaned = runner.invoke(app, ["validate-data", "--data", str(clean / "train.jsonl")])
    assert cleaned.exit_code == 0, cleaned.output


def test_kto_rows_are_named_as_such(tmp_path: Path) -> None:
    path = write(
        tmp_path / "kto.jsonl", [{"prompt": f"p{i}", "completion": f"c{i}", "label": i % 2 == 0} for i in range(10)]
    )
    alone = runner.invoke(app, ["validate-data", "--data", str(path)])  # no config: validated as the KTO data it is
    assert alone.exit_code == 0 and "10 rows, standard (unpaired rows, KTO)" in alone.output
    for_dpo = runner.invoke(
        app,
        [
            "validate-data",
            str(ROOT / "configs" / "smoke.yaml"),
            "--no-tokens",
            "--set",
            f"data.train={path}",
            "--set",
            "data.eval=null",
        ],
    )
    assert for_dpo.exit_code == 2 and "unpaired rows" in for_dpo.output and "algorithm: kto" in for_dpo.output


def test_column_options(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", [{"q": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in rows()])
    args = [
        "validate-data",
        "--data",
        str(path),
        "--prompt-column",
        "q",
        "--chosen-column",
        "good",
        "--rejected-column",
        "bad",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


def test_config_without_tokens() -> None:
    result = runner.invoke(
        app,
        [
            "validate-data",
            str(ROOT / "configs" / "smoke.yaml"),
            "--no-tokens",
            "--set",
            f"data.train={SAMPLE / 'train.jsonl'}",
            "--set",
            f"data.eval={SAMPLE / 'eval.jsonl'}",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "eval" in result.output


def test_usage_errors(tmp_path: Path) -> None:
    neither = runner.invoke(app, ["validate-data"])
    assert neither.exit_code == 2 and "either CONFIG or --data" in neither.output
    missing = runner.invoke(app, ["validate-data", "--data", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "not found" in missing.output and "Traceback" not in missing.output


def test_train_drops_a_few_bad_rows_and_refuses_many_before_loading_a_model(tmp_path: Path) -> None:
    data = rows()
    data[4] = "{broken"
    few = write(tmp_path / "few.jsonl", data)
    many = write(tmp_path / "many.jsonl", [row if i % 6 else "{broken" for i, row in enumerate(rows())])
    evals = write(tmp_path / "eval.jsonl", [{**r, "prompt": f"Held out {i}?"} for i, r in enumerate(rows(20))])
    out = tmp_path / "run"
    tokenizer = "model.tokenizer_name_or_path=" + str(_tokenizer_dir(tmp_path))

    def train(path: Path, *extra: str):
        args = [
            "train",
            str(ROOT / "configs" / "smoke.yaml"),
            "--set",
            f"output_dir={out}",
            "--set",
            f"data.train={path}",
            "--set",
            f"data.eval={evals}",
            "--set",
            "model.name_or_path=/nonexistent",
        ]
        return runner.invoke(app, [*args, *extra])

    # 20 of 120 rows (17%) is past data.max_drop_fraction (10%): a mapping mistake, not noise
    refused = train(many, "--set", tokenizer)
    assert refused.exit_code == 2, refused.output
    assert "20 of 120 train rows (16.7%) have errors" in refused.output and "nothing was trained" in refused.output
    assert "malformed_line" in refused.output and "Traceback" not in refused.output and not out.exists()
    # one bad line is dropped and counted; the run goes on (to the model, which does not exist here)
    dropped = train(few, "--set", tokenizer)
    assert "dropped: 1 of 120 train rows (malformed_line x1), 119 left" in dropped.output, dropped.output
    assert "nothing was trained" not in dropped.output and "/nonexistent" in dropped.output
    # --strict stops on any row error
    strict = train(few, "--set", tokenizer, "--strict")
    assert strict.exit_code == 2 and "--strict: 1 row error(s)" in strict.output
    # --skip-validation: the loader still drops the line by itself, and says so
    skipped = train(few, "--skip-validation")
    assert "1 row(s) left out (malformed_line x1)" in skipped.output, skipped.output
    assert "nothing was trained" not in skipped.output


def test_a_launched_train_checks_the_data_once_before_spawning_ranks(tmp_path: Path, monkeypatch) -> None:
    """The launching process checks the data: bad rows fail before any rank starts, and the ranks
    get the saved check (`--data-check`) instead of checking again each."""
    from dpo_cli.train import launch

    launched: list[list[str]] = []
    monkeypatch.setattr(launch, "run_forwarding_signals", lambda argv, env: launched.append(argv) or 0)
    many = write(tmp_path / "many.jsonl", [row if i % 6 else "{broken" for i, row in enumerate(rows())])
    data = rows()
    data[4] = "{broken"
    few = write(tmp_path / "few.jsonl", data)
    out = tmp_path / "run"

    def train(path: Path):
        args = ["train", str(ROOT / "configs" / "smoke.yaml"), "--num-processes", "2"]
        for item in (
            f"output_dir={out}",
            f"data.train={path}",
            "data.eval=null",
            "model.name_or_path=/nonexistent",
            f"model.tokenizer_name_or_path={_tokenizer_dir(tmp_path)}",
        ):
            args += ["--set", item]
        return runner.invoke(app, args)

    refused = train(many)
    assert refused.exit_code == 2, refused.output
    assert refused.output.count("20 of 120 train rows (16.7%) have errors") == 1 and "Traceback" not in refused.output
    assert launched == [] and not out.exists()  # nothing written, no launch file, no rank started

    started = train(few)
    assert started.exit_code == 0, started.output
    assert "dropped: 1 of 120 train rows (malformed_line x1), 119 left" in started.output
    (args,) = launched
    assert args[args.index("--data-check") + 1] == str(out / "launch")
    assert "--skip-validation" not in args
    check = json.loads((out / "launch" / "data" / "check.json").read_text())
    assert check["train"]["dropped"] == 1


def _tokenizer_dir(tmp_path: Path) -> Path:
    """A small fast tokenizer with a chat template, trained here offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([r["chosen"] + r["rejected"] for r in rows()], trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    out = tmp_path / "tok"
    wrapped.save_pretrained(out)
    return out


def test_one_huge_line_is_an_error_naming_it_in_bounded_memory(tmp_path: Path) -> None:
    """Issue 15: a 50 MB line took 10.9 GB; now it is skipped in chunks under the 4 MiB per-row limit."""
    import subprocess
    import sys

    path = tmp_path / "big.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows(120))
        handle.write(json.dumps({"prompt": "p", "chosen": "word " * 10_000_000, "rejected": "x"}) + "\n")  # 50 MB
        handle.write(json.dumps(rows(1)[0] | {"prompt": "After the big one?"}) + "\n")
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from dpo_cli.cli.main import app\n"
        f"result = CliRunner().invoke(app, ['validate-data', '--data', {str(path)!r}])\n"
        "print(result.output)\n"
        # VmHWM is this process's own peak (ru_maxrss would carry pytest's peak over the fork)
        "peak = next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM'))\n"
        "print('exit', result.exit_code, 'peak_kb', peak)\n"
    )
    log = tmp_path / "out.txt"
    with open(log, "w") as out:
        subprocess.run(
            [sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, timeout=120, check=True
        )
    text = log.read_text()
    exit_code, peak_kb = text.split("exit ")[-1].split(" peak_kb ")
    assert int(exit_code) == 2 and f"{path}:121 (line is 47.7 MiB, over the per-row limit of 4.0 MiB" in text, text
    assert "Traceback" not in text and "122 rows" in text
    assert int(peak_kb) / 1024 < 300, text  # a bound on memory (the 50 MB line is never held whole), not a timing


def test_bad_input_is_one_clear_message(tmp_path: Path) -> None:
    import gzip

    broken = tmp_path / "cut.jsonl.gz"
    broken.write_bytes(gzip.compress(("".join(json.dumps(r) + "\n" for r in rows(2000))).encode(), mtime=0)[:3000])
    result = runner.invoke(app, ["validate-data", "--data", str(broken)])
    assert result.exit_code == 2 and f"{broken}: cannot read after line" in result.output
    bad_format = runner.invoke(app, ["validate-data", "--data", str(SAMPLE / "train.jsonl"), "--format", "sharegtp"])
    assert bad_format.exit_code == 2 and "--format sharegtp: not a layout" in bad_format.output
    wrong_layout = runner.invoke(app, ["validate-data", "--data", str(SAMPLE / "train.jsonl"), "--format", "sharegpt"])
    assert (
        wrong_layout.exit_code == 2
        and "`format: sharegpt` (ShareGPT ranking (LLaMA-Factory)) expects" in wrong_layout.output
    )
    for out in (result, bad_format, wrong_layout):
        assert "Traceback" not in out.output


def test_mixtures_name_the_sources_that_cannot_mix(tmp_path: Path) -> None:
    plain = write(tmp_path / "plain.jsonl", [{"chosen": f"Yes {i}", "rejected": f"No way {i}"} for i in range(20)])
    mixture = json.dumps([{"path": str(SAMPLE / "train_chat.jsonl"), "name": "chat"}, {"path": str(plain)}])
    args = [
        "validate-data",
        str(ROOT / "configs" / "smoke.yaml"),
        "--no-tokens",
        "--set",
        f"data.train={mixture}",
        "--set",
        "data.eval=null",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "format_mismatch" in result.output
    assert "chat (" in result.output and "plain" in result.output and "implicit prompt" in result.output
    missing = json.dumps([str(SAMPLE / "train.jsonl"), {"path": str(tmp_path / "gone.jsonl")}])
    gone = runner.invoke(app, [*args[:4], f"data.train={missing}"])
    assert gone.exit_code == 2 and "gone.jsonl: data file not found" in gone.output
    typo = runner.invoke(app, [*args[:4], f'data.train=[{{"path": "{plain}", "fractoin": 0.5}}]'])
    assert typo.exit_code == 2 and "fractoin" in typo.output and "fraction" in typo.output
    for out in (result, gone, typo):
        assert "Traceback" not in out.output


def test_mixture_report_counts_rows_per_source(tmp_path: Path) -> None:
    mixture = json.dumps(
        [
            {"path": str(SAMPLE / "train_chat.jsonl"), "fraction": 0.5, "name": "chat"},
            {"path": str(ROOT / "data" / "formats" / "sharegpt_ranking.json")},
        ]
    )
    result = runner.invoke(
        app,
        [
            "validate-data",
            str(ROOT / "configs" / "smoke.yaml"),
            "--no-tokens",
            "--set",
            f"data.train={mixture}",
            "--set",
            "data.eval=null",
            "--write-clean",
            str(tmp_path / "clean"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        "source chat: trl:" in result.output
        and "400 input rows -> 400 pairs, 0 dropped, 400 kept, 200 taken" in result.output
    )
    assert "source sharegpt_ranking: sharegpt:" in result.output
    assert len((tmp_path / "clean" / "train.jsonl").read_text().splitlines()) == 206
