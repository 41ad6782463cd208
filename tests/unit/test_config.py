"""Config schema and loader: every problem at once, one line each, with the key path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from dpo_cli.config.loader import apply_override, load_config
from dpo_cli.config.schema import RESERVED_TRAINING_FIELDS, RunConfig
from dpo_cli.config.trl_fields import DPO_CONFIG_FIELDS
from dpo_cli.errors import EXIT_USAGE, ConfigError

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("**/*.yaml"))

MINIMAL = {
    "output_dir": "runs/x",
    "model": {"name_or_path": "distilgpt2"},
    "data": {"train": "data/sample/train.jsonl"},
}


def write(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def problems(tmp_path: Path, data: dict | str, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data), overrides)
    assert info.value.exit_code == EXIT_USAGE
    return info.value.problems


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS])
def test_every_shipped_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.output_dir
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# dpo "), f"{path.name} must start with the command that runs it"


def test_shipped_configs_exist() -> None:
    names = {p.name for p in CONFIGS}
    assert {"smoke.yaml", "mistral.yaml", "demo.yaml"} <= names


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.mode == "full"
    assert cfg.training.beta == 0.1
    assert cfg.reference.kind == "policy"
    assert cfg.training_overrides() == {}


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(ValidationError, match="frozen"):
        cfg.training.beta = 0.5  # type: ignore[misc]


def test_modes(tmp_path: Path) -> None:
    lora = load_config(write(tmp_path, {**MINIMAL, "lora": {"r": 8}}))
    assert lora.mode == "lora"
    qlora = load_config(write(tmp_path, {**MINIMAL, "lora": {}, "quantization": {}}))
    assert qlora.mode == "qlora"
    assert qlora.quantization.bnb_4bit_quant_type == "nf4"


def test_typo_gets_dotted_path_line_and_suggestion(tmp_path: Path) -> None:
    text = "output_dir: r\nmodel:\n  name_or_path: m\ndata:\n  train: t.jsonl\ntraining:\n  betta: 0.1\n"
    (line,) = problems(tmp_path, text)
    assert ":7:" in line
    assert "training.betta" in line
    assert "did you mean `beta`" in line


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    bad = {
        "output_dir": "r",
        "modle": {},
        "data": {"train": "t.jsonl", "formt": "standard"},
        "lora": {"r": 0},
        "training": {"beta": -1, "loss_type": "sigmod", "per_device_train_batch_size": "two"},
    }
    found = problems(tmp_path, bad)
    joined = "\n".join(found)
    assert "modle: unknown key (did you mean `model`?)" in joined
    assert "model: required key is missing" in joined
    assert "data.formt" in joined and "did you mean `format`" in joined
    assert "lora.r: expected a value >= 1, found 0" in joined
    assert "training.beta: expected a value > 0" in joined
    assert "did you mean `sigmoid`" in joined
    assert "training.per_device_train_batch_size" in joined
    assert len(found) == 7


def test_unknown_dpo_config_field_is_rejected_but_real_ones_pass(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, {**MINIMAL, "training": {"warmup_ratio": 0.1}})
    assert "not a `trl.DPOConfig` field" in line
    cfg = load_config(write(tmp_path, {**MINIMAL, "training": {"eval_accumulation_steps": 2, "ld_alpha": 0.5}}))
    assert cfg.training_overrides() == {"eval_accumulation_steps": 2, "ld_alpha": 0.5}


def test_every_dpo_config_field_is_accepted_or_owned_elsewhere() -> None:
    fields = set(RunConfig.model_fields["training"].annotation.model_fields)
    for name in DPO_CONFIG_FIELDS:
        assert name in fields or name in RESERVED_TRAINING_FIELDS, name


@pytest.mark.parametrize("name", sorted(RESERVED_TRAINING_FIELDS))
def test_reserved_training_fields_point_to_their_home(tmp_path: Path, name: str) -> None:
    (line,) = problems(tmp_path, {**MINIMAL, "training": {name: "x"}})
    assert RESERVED_TRAINING_FIELDS[name] in line


def test_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    cfg = load_config(path, ["training.beta=0.2", "lora.r=4", "training.loss_type=[sigmoid, sft]"])
    assert cfg.training.beta == 0.2
    assert cfg.lora.r == 4
    assert cfg.loss_types() == ["sigmoid", "sft"]


def test_bad_override_points_at_the_flag(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, MINIMAL, ["training.beta=-3"])
    assert line.startswith("--set training.beta=-3:")
    (line,) = problems(tmp_path, MINIMAL, ["no_equals_sign"])
    assert "expected KEY=VALUE" in line


def test_apply_override_replaces_null_section() -> None:
    raw = {"lora": None}
    apply_override(raw, "lora.r=8")
    assert raw == {"lora": {"r": 8}}


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"quantization": {}}, "`quantization` without `lora`"),
        ({"training": {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}}, "loss_weights` has 1 values"),
        ({"training": {"loss_type": "exo_pair"}}, "needs `label_smoothing` > 0"),
        ({"training": {"bf16": True, "fp16": True}}, "both true"),
        ({"reference": {"kind": "none"}}, "reference-free"),
        ({"training": {"max_steps": 0}}, "nothing would be trained"),
        ({"model": {"name_or_path": "m", "adapter": "sft"}, "lora": {}}, "remove the `lora:` section"),
        (
            {
                "lora": {},
                "quantization": {"bnb_4bit_quant_storage": "uint8"},
                "launch": {"deepspeed": {"zero_stage": 3}},
            },
            "bnb_4bit_quant_storage` must equal",
        ),
    ],
)
def test_cross_field_rules(tmp_path: Path, extra: dict, fragment: str) -> None:
    found = problems(tmp_path, {**MINIMAL, **extra})
    assert any(fragment in p for p in found), found


def test_reference_model_needs_a_path(tmp_path: Path) -> None:
    found = problems(tmp_path, {**MINIMAL, "reference": {"kind": "model"}})
    assert any("needs `reference.name_or_path`" in p for p in found)


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, "output_dir: r\nmodel: [unclosed\n")
    assert "invalid YAML" in line and "run.yaml:" in line


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("does/not/exist.yaml")
    assert "config file not found" in str(info.value)


def test_json_schema_covers_sections_and_trl_fields() -> None:
    schema = RunConfig.model_json_schema()
    text = json.dumps(schema)
    for section in ("model", "reference", "quantization", "lora", "data", "training", "launch"):
        assert section in schema["properties"]
    assert "precompute_ref_batch_size" in text  # a pass-through DPOConfig field, with its TRL help
    assert schema["additionalProperties"] is False


def test_importing_cli_and_loading_config_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "import dpo_cli.cli.main\n"
        "from dpo_cli.config.loader import load_config\n"
        f"cfg = load_config({str(ROOT / 'configs' / 'mistral.yaml')!r}, ['training.report_to=[tensorboard,trackio,wandb]'])\n"
        "from dpo_cli.errors import DpoError\n"
        "from dpo_cli.train.tracking import check_trackers\n"
        "try:\n"
        "    check_trackers(cfg.training.report_to)  # looks the packages up without importing them\n"
        "except DpoError:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'bitsandbytes', 'deepspeed', 'datasets',"
        " 'tensorboard', 'tensorboardX', 'trackio', 'wandb', 'mlflow') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_yaml_bare_no_means_the_strategy_no(tmp_path: Path) -> None:
    text = "output_dir: r\nmodel:\n  name_or_path: m\ndata:\n  train: t.jsonl\ntraining:\n  save_strategy: no\n"
    cfg = load_config(write(tmp_path, text), ["training.eval_strategy=no"])
    assert cfg.training.save_strategy == "no" and cfg.training.eval_strategy == "no"
