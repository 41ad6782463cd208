"""YAML file + `--set` overrides -> one frozen, validated `RunConfig`.

Every problem is collected and reported at once, one line each, as
`FILE:LINE: dotted.key: what was expected, what was found (did you mean ...?)`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dpo_cli.config.algorithms import ALGORITHMS, other_algorithms_with
from dpo_cli.config.rules import cross_field_problems
from dpo_cli.config.schema import RESERVED_TRAINING_FIELDS, RunConfig
from dpo_cli.config.variants import algorithm_of_class, run_config_class
from dpo_cli.config.yaml_safe import MAX_BYTES, load_yaml
from dpo_cli.errors import ConfigError


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read, override and validate a run config.

    Args:
        path: YAML file.
        overrides: `dotted.key=value` strings; values are parsed as YAML (`0.2`, `true`, `[a, b]`).

    Returns:
        The validated, immutable config.

    Raises:
        ConfigError: With every problem found, one per line.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError(source, [f"{source}: config file not found"])
    if path.stat().st_size > MAX_BYTES:
        raise ConfigError(source, [f"{source}: {path.stat().st_size:,} bytes; a config is at most {MAX_BYTES:,}"])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    raw, root = load_yaml(text, source)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            source, [f"{source}: the top level must be a mapping of sections, found {type(raw).__name__}"]
        )
    problems: list[str] = []
    for override in overrides or []:
        try:
            apply_override(raw, override)
        except ValueError as exc:
            problems.append(f"--set {override}: {exc}")
    if problems:
        raise ConfigError(source, problems)
    origins = {o.partition("=")[0].strip(): f"--set {o}" for o in overrides or []}
    return validate(raw, source=source, yaml_root=root, origins=origins)


def validate(
    raw: dict[str, Any],
    source: str = "<config>",
    yaml_root: yaml.Node | None = None,
    origins: dict[str, str] | None = None,
) -> RunConfig:
    """Validate an already parsed config mapping (see `load_config`).

    `origins` maps dotted keys set on the command line to the `--set` text that set them, so
    that their errors point there instead of into the file.
    """
    config_class = run_config_class(raw.get("algorithm", "dpo"))
    try:
        cfg = config_class.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, format_errors(exc, source, yaml_root, origins or {}, config_class)) from None
    problems = cross_field_problems(cfg)
    if problems:
        raise ConfigError(source, [f"{source}: {p}" for p in problems])
    return cfg


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set `a.b.c=value` inside the nested mapping, creating sections as needed."""
    key, sep, value_text = override.partition("=")
    if not sep or not key.strip():
        raise ValueError("expected KEY=VALUE, e.g. training.beta=0.2")
    try:
        value = load_yaml(value_text, "--set")[0] if value_text.strip() else None
    except ConfigError as exc:
        if "invalid YAML" not in exc.problems[0]:
            raise ValueError(exc.problems[0].removeprefix("--set: ")) from None  # an alias bomb, not a plain string
        value = value_text
    set_dotted(raw, key.strip(), value)


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set `raw[a][b][c] = value` for the dotted key `a.b.c`, creating sections as needed."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def with_updates(cfg: RunConfig, updates: Mapping[str, Any], *, source: str = "<derived config>") -> RunConfig:
    """`cfg` with dotted-key updates over the values it was given, validated again (rules included).

    What internal callers (a sweep's points, an iterate round) use instead of `--set` strings
    parsed again: the updates are typed values. Keys the config was not given keep their
    defaults, so `training_overrides()` is what it would be with the same `--set` on the command line.

    Raises:
        ConfigError: The updated config is invalid; the problems name `source`.
    """
    raw = cfg.model_dump(mode="json", exclude_unset=True)
    for key, value in updates.items():
        set_dotted(raw, key, str(value) if isinstance(value, Path) else value)
    return validate(raw, source=source)


def yaml_scalar(value: Any) -> str:
    """`value` as the text of a `--set KEY=VALUE` that reads back as the same value."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        # YAML 1.1 reads "1e-05" as a string; "1.0e-05" is a float.
        text = repr(value)
        mantissa, sep, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if sep and "." not in mantissa else text
    if isinstance(value, (int, str, Path)):
        text = str(value)
        if isinstance(value, int) or _reads_back(text, text):
            return text
        return json.dumps(text)  # quoted: a path YAML would read otherwise (`a: b`, `#x`, `true`, `1.5`)
    return json.dumps(value)  # lists and mappings: JSON is YAML flow style


def _reads_back(text: str, value: Any) -> bool:
    try:
        return load_yaml(text, "--set")[0] == value
    except ConfigError:
        return False


def set_strings(updates: Mapping[str, Any]) -> list[str]:
    """The same updates as `--set KEY=VALUE` texts for another process (the inverse of `apply_override`)."""
    return [f"{key}={yaml_scalar(value)}" for key, value in updates.items()]


def format_errors(
    exc: ValidationError,
    source: str,
    yaml_root: yaml.Node | None,
    origins: dict[str, str] | None = None,
    config_class: type[RunConfig] = RunConfig,
) -> list[str]:
    """One line per problem, deduplicated across union members, with line numbers and suggestions."""
    found: dict[str, tuple[int, str]] = {}
    for error in exc.errors():
        loc = _clean_loc(error["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if dotted in found:
            continue
        origin = next(
            (text for key, text in (origins or {}).items() if dotted == key or dotted.startswith(key + ".")), None
        )
        line = None if origin else _line_of(yaml_root, loc)
        where = origin or (f"{source}:{line}" if line else source)
        found[dotted] = (line or 0, f"{where}: {dotted}: {_describe(error, loc, config_class)}")
    return [text for _, text in sorted(found.values(), key=lambda item: item[0])]


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic adds union member tags such as "literal['sigmoid', ...]" or "list[...]" to the path.
    return tuple(p for p in loc if isinstance(p, int) or ("[" not in p and not p.startswith("function-")))


def _describe(error: dict[str, Any], loc: tuple[Any, ...], config_class: type[RunConfig] = RunConfig) -> str:
    kind = error["type"]
    found = error.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(loc, config_class)
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        hint = _closest(str(found), _literal_choices(expected)) if isinstance(found, str) else ""
        return f"expected {expected}, found {found!r}{hint}"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(error.get("ctx", {}).values()), "?")
        return f"expected a value {bounds[kind]} {limit}, found {found!r}"
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind.endswith(("_type", "_parsing")):
        return f"expected {message.removeprefix('Input should be ')}, found {found!r}"
    return message


def _unknown_key(loc: tuple[Any, ...], config_class: type[RunConfig] = RunConfig) -> str:
    *parent, key = loc
    key = str(key)
    algorithm = algorithm_of_class(config_class)
    trl_class = ALGORITHMS[algorithm].config_path
    if tuple(parent) == ("training",) and key in RESERVED_TRAINING_FIELDS:
        return f"is a {trl_class.rsplit('.', 1)[-1]} field that dpo sets for you: {RESERVED_TRAINING_FIELDS[key]}"
    valid = _valid_keys(tuple(parent), config_class)
    if tuple(parent) == ("training",):
        others = other_algorithms_with(key, algorithm)
        hint = f" (a `{ALGORITHMS[others[0]].config_path}` field, read with `algorithm: {others[0]}`)" if others else ""
        hint = hint or _closest(key, valid)
        return f"unknown key: not a `{trl_class}` field (`algorithm: {algorithm}`){hint}"
    return f"unknown key{_closest(key, valid)}"


def _valid_keys(parent: tuple[Any, ...], config_class: type[RunConfig] = RunConfig) -> list[str]:
    model: type[BaseModel] | None = config_class
    for part in parent:
        if model is None or isinstance(part, int):
            break
        field = model.model_fields.get(str(part))
        model = _model_of(field.annotation) if field else None
    if model is None:
        return []
    keys = list(model.model_fields)
    if parent == ("training",):
        keys = sorted(set(keys) | set(ALGORITHMS[algorithm_of_class(config_class)].frozen_fields()))
    return keys


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found:
            return found
    return None


def _literal_choices(expected: str) -> list[str]:
    return [c.strip().strip("'\"") for c in expected.replace(" or ", ",").split(",") if c.strip()]


def _closest(word: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean `{match[0]}`?)" if match else ""


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest YAML node along `loc` that exists."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def config_record(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config as plain data: every section in full, `training:` as the keys that were set.

    What a run saves as `config.yaml` (TRL's defaults stay TRL's: unset training keys are not
    written), and what `--resume` compares with it.
    """
    data = cfg.model_dump(mode="json", exclude_unset=False)
    data["training"] = cfg.training_overrides()
    return data


def config_to_yaml(cfg: RunConfig) -> str:
    """`config_record` as YAML, in the schema's key order (`config.yaml`, `dpo config show`)."""
    return yaml.safe_dump(config_record(cfg), sort_keys=False)
