"""YAML for configs, capped: `safe_load` semantics, with aliases and size bounded.

`yaml.safe_load` never runs code (`!!python/...` tags are refused), but it happily builds an
"alias bomb": nine lines of `&a [*b, *b, ...]` describe 10^9 values. PyYAML itself shares one
object per alias, so the file loads in microseconds; the blow-up comes later, in whatever
walks the data (pydantic copying a free-form `training.*` value grew past 6 GB). So the
composed node graph is measured before anything is constructed: every node counted as many
times as aliases repeat it, with the count stopping at the cap. The walk is linear in the
number of distinct nodes, so a bomb is refused in milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dpo_cli.errors import ConfigError

# A real run config has a few hundred values; even long lists (target modules, sweep grids,
# prompt lists inlined in YAML) stay far below this.
MAX_VALUES = 100_000
MAX_BYTES = 4 << 20


class _TooBig(Exception):
    pass


def expanded_size(root: yaml.Node | None, limit: int = MAX_VALUES) -> int:
    """How many values `root` stands for once every alias is expanded (stops counting past `limit`).

    Raises:
        ValueError: An alias refers to a node that contains it (a recursive structure).
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ValueError("an alias refers to the structure that contains it (recursive YAML)")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                raise _TooBig
        active.discard(key)
        sizes[key] = total
        return total

    if root is None:
        return 0
    try:
        return size(root)
    except _TooBig:
        return limit + 1


def load_yaml(text: str, source: str = "<yaml>") -> tuple[Any, yaml.Node | None]:
    """Parse `text` like `yaml.safe_load`, refusing documents that are too large or expand too far.

    Returns:
        The data and its composed node tree (for line numbers in error messages).

    Raises:
        ConfigError: Invalid YAML, a `!!python/...` (or other unknown) tag, a document over
            `MAX_BYTES`, or one that expands to more than `MAX_VALUES` values through aliases.
    """
    if len(text) > MAX_BYTES:
        raise ConfigError(source, [f"{source}: {len(text):,} characters; a config is at most {MAX_BYTES:,}"])
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
            count = expanded_size(root)
            if count > MAX_VALUES:
                problem = (
                    f"{source}: expands to more than {MAX_VALUES:,} values through aliases (`*name` repeating "
                    "`&name`); refused (a YAML alias bomb, or a config far larger than any run needs)"
                )
                raise ConfigError(source, [problem])
            data = loader.construct_document(root) if root is not None else None
        except ValueError as exc:
            raise ConfigError(source, [f"{source}: {exc}"]) from None
        except RecursionError:
            raise ConfigError(source, [f"{source}: nested too deeply to be a config"]) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{source}:{mark.line + 1}" if mark else source
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(source, [f"{where}: invalid YAML: {problem}"]) from None
    finally:
        loader.dispose()
    return data, root


def load_yaml_file(path: Path) -> Any:
    """`load_yaml` of a file, for YAML written by dpo or handed to it (run configs, accelerate files)."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(str(path), [f"{path}: {size:,} bytes; a config is at most {MAX_BYTES:,}"])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"{path}: unreadable: {exc}"]) from None
    return load_yaml(text, str(path))[0]
