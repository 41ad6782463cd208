"""TRL's names and defaults come from TRL: the frozen copy (`dpo_cli/config/trl_fields.py`) against the
installed TRL, transformers and torch, and the config `dpo train` builds against the schema's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpo_cli.config import trl_fields
from dpo_cli.config.algorithms import ALGORITHMS, DECIDED_PER_RUN, DELIBERATE_DEFAULTS
from dpo_cli.config.loader import validate
from tests.conftest import load_script

generator = load_script("gen_trl_fields")
FIX = "run python scripts/gen_trl_fields.py"


@pytest.mark.parametrize(("dict_name", "where"), list(generator.CONFIG_CLASSES.items()))
def test_frozen_names_and_defaults_match_the_installed_trl(dict_name: str, where: tuple[str, str]) -> None:
    # Config validation reads these instead of importing TRL. Names and defaults only: help texts
    # come from transformers' docstrings and change wording between releases.
    module, cls = where
    frozen, installed = set(getattr(trl_fields, dict_name)), set(generator.collect(module, cls))
    assert frozen == installed, f"{cls}: {FIX} ({frozen ^ installed})"
    frozen_defaults = getattr(trl_fields, generator.defaults_name(dict_name))
    installed_defaults = generator.collect_defaults(module, cls)
    changed = {k: (frozen_defaults.get(k), v) for k, v in installed_defaults.items() if frozen_defaults.get(k) != v}
    assert not changed, f"{cls}: {FIX} (frozen, installed): {changed}"


def test_frozen_versions_are_the_installed_ones() -> None:
    import transformers
    import trl

    assert (trl_fields.TRL_VERSION, trl_fields.TRANSFORMERS_VERSION) == (trl.__version__, transformers.__version__), FIX


# What TRL's `__post_init__` turns a declared default into (the value means the same).
NORMALISED = {"bf16": True, "report_to": []}  # bf16 unset: on unless fp16; "none": no trackers


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_the_built_trl_config_has_the_schema_defaults(name: str, tmp_path: Path) -> None:
    from dpo_cli.train.trl_args import to_trainer_config

    raw = {
        "output_dir": str(tmp_path / "run"),
        "algorithm": name,
        "model": {"name_or_path": "m"},
        "data": {"train": "t.jsonl"},
        "training": {"use_cpu": True},
    }  # TRL's bf16 default needs a GPU
    cfg = validate(raw)
    args = to_trainer_config(cfg, tmp_path / "checkpoints")
    assert type(args).__name__ == ALGORITHMS[name].config
    from dpo_cli.config.variants import TYPED_ARGS

    for key, field in TYPED_ARGS[ALGORITHMS[name].typed_args].model_fields.items():
        if field.default is None and key in DECIDED_PER_RUN or not hasattr(args, key) or key == "use_cpu":
            continue
        built = getattr(args, key)
        built = built.value if hasattr(built, "value") else built
        assert built == field.default or (key in NORMALISED and built == NORMALISED[key]), (key, built, field.default)
    for key, value in {**DELIBERATE_DEFAULTS, **ALGORITHMS[name].defaults}.items():
        built = getattr(args, key)
        assert (built.value if hasattr(built, "value") else built) == value or (
            key in NORMALISED and built == NORMALISED[key]
        ), key
