"""The configuration reference page (`docs/reference/configuration.md`), generated from the schema.

Never written by hand: `scripts/gen_config_reference.py` writes it, and a test fails when it is stale.
"""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from dpo_cli.config.schema import DPOTrainingArgs, RunConfig

PAGE = "reference/configuration.md"  # under docs/

_INTRO = """\
# Configuration reference

<!-- Generated from dpo_cli/config/schema.py by scripts/gen_config_reference.py: do not edit by hand. -->

Every section and key of a run config, with its type, default, range and description, generated from the
pydantic schema (`dpo_cli/config/schema.py`) by `scripts/gen_config_reference.py` (`make docs`). How a
config is read and checked, and how to print one with every default filled in, is on the
[Configuration](../configuration.md) page.
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is list:
        (inner,) = typing.get_args(annotation) or (Any,)
        return f"list[{_type_name(inner)}]"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    if field.default_factory is not None:
        return "(section defaults)"
    return f"`{json.dumps(field.default)}`"


def _constraints(field: Any) -> str:
    parts = []
    for meta in field.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sym} {value}")
    return f" ({', '.join(parts)})" if parts else ""


def _table(model: type[BaseModel], prefix: str, fields: list[str] | None = None) -> list[str]:
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for name in fields or list(model.model_fields):
        field = model.model_fields[name]
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(
            f"| `{prefix}{name}` | {_type_name(field.annotation)} | {_default(field)} | {desc}{_constraints(field)} |"
        )
    return rows


def _section_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_model(arg)
        if found:
            return found
    return None


def _in_list(annotation: Any) -> bool:
    """The section appears as an item of a list (`data.train: [{path: ...}, ...]`)."""
    if typing.get_origin(annotation) is list:
        return True
    return any(_in_list(arg) for arg in typing.get_args(annotation))


def render_page() -> str:
    """The whole reference page: every section and key of a run config, as Markdown."""
    lines = [_INTRO, "## Top level", ""]
    top = [n for n, f in RunConfig.model_fields.items() if _section_model(f.annotation) is None]
    lines += _table(RunConfig, "", top)
    for name, field in RunConfig.model_fields.items():
        model = _section_model(field.annotation)
        if model is None:
            continue
        intro = (model.__doc__ or "").strip().splitlines()[0]
        if field.description:
            intro = f"{intro} {field.description}"
        lines += ["", f"## `{name}:`", "", intro, ""]
        if name == "training":
            common = list(DPOTrainingArgs.model_fields)
            lines += _table(model, "training.", common)
            others = sorted(set(model.model_fields) - set(common))
            lines += [
                "",
                f"Every other `trl.DPOConfig` field ({len(others)} more) is accepted under its TRL name and "
                "checked by TRL when the run is built: " + ", ".join(f"`{o}`" for o in others) + ".",
            ]
            lines += _algorithm_tables()
            lines += _deliberate_table()
            continue
        lines += _table(model, f"{name}.")
        # Sub-sections; one table per model, so `data.train` and `data.eval` share their source table.
        keys_of: dict[type[BaseModel], list[str]] = {}
        for sub_name, sub_field in model.model_fields.items():
            sub_model = _section_model(sub_field.annotation)
            if sub_model is not None:
                item = "[]" if _in_list(sub_field.annotation) else ""
                keys_of.setdefault(sub_model, []).append(f"{name}.{sub_name}{item}")
        for sub_model, keys in keys_of.items():
            if keys[0].endswith("[]"):
                intro = (sub_model.__doc__ or "").strip().splitlines()[0]
                lines += ["", f"### {' and '.join(f'`{k}`' for k in keys)}:", "", intro, ""]
            else:
                lines += ["", f"### `{keys[0]}:`", ""]
            lines += _table(sub_model, f"{keys[0]}.")
    return "\n".join(lines) + "\n"


def _algorithm_tables() -> list[str]:
    """`training:` under the other algorithms: the keys each adds to (or changes from) DPO's common ones."""
    from dpo_cli.config.algorithms import ALGORITHMS
    from dpo_cli.config.schema import TrainerArgs
    from dpo_cli.config.variants import TYPED_ARGS

    lines: list[str] = []
    shared = TrainerArgs.model_fields
    for algorithm, row in ALGORITHMS.items():
        if algorithm == "dpo":
            continue
        typed = TYPED_ARGS[row.typed_args]
        own = [n for n in typed.model_fields if n not in shared or repr(typed.model_fields[n]) != repr(shared[n])]
        config = row.config_path
        lines += ["", f"### `training:` with `algorithm: {algorithm}` (`{config}`)", ""]
        lines += _table(typed, "training.", own)
        lines += [
            "",
            (
                f"The shared keys above (except the DPO loss keys) apply too; any other `{config}` field "
                "is accepted by name."
            ),
        ]
    return lines


def _deliberate_table() -> list[str]:
    """Where dpo's defaults differ from TRL's, from the algorithm table (every other default is TRL's)."""
    from dpo_cli.config.algorithms import ALGORITHMS, DECIDED_PER_RUN, DELIBERATE

    lines = [
        "",
        "### Defaults that differ from TRL's",
        "",
        (
            "Every other `training:` default above is TRL's own, read from TRL (frozen in "
            "`dpo_cli/config/trl_fields.py`, checked against the installed TRL by the tests)."
        ),
        "",
        "| key | algorithms | dpo's default | why |",
        "| --- | --- | --- | --- |",
    ]
    for name, (value, why) in DELIBERATE.items():
        lines.append(f"| `training.{name}` | all | `{json.dumps(value)}` | {why} |")
    for algorithm in ALGORITHMS.values():
        for name, value in algorithm.defaults.items():
            lines.append(f"| `training.{name}` | {algorithm.name} | `{json.dumps(value)}` | {algorithm.defaults_why} |")
    for name, why in DECIDED_PER_RUN.items():
        lines.append(f"| `training.{name}` | dpo | unset: chosen per run | {why} |")
    return lines
