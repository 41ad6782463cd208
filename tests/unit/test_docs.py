"""The docs: a short README that names every command, a manual in docs/ that builds with
`mkdocs build --strict`, generated pages that are current, and command lines that exist."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
import yaml

from dpo_cli.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 250


def leaf_commands() -> list[str]:
    """Every command a user can run, as typed after `dpo` (`train`, `config show`, ...)."""
    paths: list[str] = []

    def walk(group, prefix: str) -> None:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, f"{prefix}{name} ")
            else:
                paths.append(f"{prefix}{name}")

    walk(typer.main.get_command(app), "")
    return sorted(paths)


def commands_table() -> dict[str, str]:
    """README's commands table (the part docs/index.md includes): `dpo X` -> its example."""
    text = README.read_text()
    section = text.split("--8<-- [start:commands]", 1)[1].split("--8<-- [end:commands]", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 3 and cells[0].startswith("`dpo "):
            rows[cells[0].strip("`")] = cells[2].strip("`")
    return rows


def nav_pages() -> list[str]:
    class Loader(yaml.SafeLoader):
        pass

    # mkdocs' own tags (`!relative $config_dir`) carry no page names.
    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)  # a SafeLoader subclass

    def pages(entry) -> Iterator[str]:
        if isinstance(entry, str):
            yield entry
        elif isinstance(entry, list):
            for item in entry:
                yield from pages(item)
        elif isinstance(entry, dict):
            for value in entry.values():
                yield from pages(value)

    return list(pages(config["nav"]))


def test_readme_is_short() -> None:
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the manual belongs in docs/"


@pytest.mark.parametrize("command", leaf_commands())
def test_readme_lists_every_command_with_an_example(command: str) -> None:
    table = commands_table()
    assert f"dpo {command}" in table, f"README's commands table has no row for `dpo {command}`"
    example = table[f"dpo {command}"]
    assert example == f"dpo {command}" or example.startswith(f"dpo {command} "), example


def test_readme_commands_table_names_only_real_commands() -> None:
    assert sorted(name.removeprefix("dpo ") for name in commands_table()) == leaf_commands()


def test_every_page_is_in_the_nav_and_linked_from_the_readme() -> None:
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    nav = nav_pages()
    assert sorted(nav) == on_disk, "mkdocs.yml's nav must list every page under docs/, once"
    assert len(nav) == len(set(nav))
    readme = README.read_text()
    linked = set(re.findall(r"\]\(docs/([^)#]+\.md)(?:#[^)]*)?\)", readme))
    assert linked <= set(on_disk), f"README links to missing pages: {sorted(linked - set(on_disk))}"
    assert set(on_disk) <= linked, f"README does not link: {sorted(set(on_disk) - linked)}"


def command_lines(text: str) -> Iterator[str]:
    """Every `dpo ...` command line in the fenced blocks of a page, continuation lines joined."""
    fence, pending = False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            fence, pending = not fence, ""
            continue
        if not fence:
            continue
        line = pending + line
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        stripped = line.strip().removeprefix("$ ")
        if stripped.startswith("dpo "):
            yield stripped


def documented_command_lines() -> list[tuple[str, str]]:
    found = [(f"README.md: {example}", example) for example in commands_table().values()]
    for path in [README, *sorted(DOCS.rglob("*.md"))]:
        found += [(f"{path.relative_to(ROOT)}: {line}", line) for line in command_lines(path.read_text())]
    return found


DOCUMENTED = documented_command_lines()


def test_the_docs_show_dpo_command_lines() -> None:
    assert len(DOCUMENTED) >= 40  # the parser found them: the test below would pass on none


@pytest.mark.parametrize(("where", "line"), DOCUMENTED, ids=[where for where, _ in DOCUMENTED])
def test_every_documented_command_line_names_a_real_command_and_options(where: str, line: str) -> None:
    # Shell around the command (redirections, `|| exit`, `&`) is not the command's.
    text = re.split(r" (?:>|\|\||&)(?: |$)", line, maxsplit=1)[0]
    tokens = shlex.split(text, comments=True)[1:]
    command = typer.main.get_command(app)
    while hasattr(command, "commands") and tokens and tokens[0] in command.commands:
        command = command.commands[tokens.pop(0)]
    assert not hasattr(command, "commands"), f"{where}: not a command"
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    unknown = [t for t in (t.strip("[]") for t in tokens) if t.startswith("-") and t.split("=")[0] not in options]
    assert not unknown, f"{where}: unknown option(s) {unknown}"


def test_readme_quickstart_config_loads_and_its_commands_use_it(tmp_path: Path) -> None:
    from dpo_cli.config.loader import load_config

    quickstart = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    config_text = quickstart.split("```yaml\n", 1)[1].split("```", 1)[0]
    name = config_text.splitlines()[0].removeprefix("# ").strip()
    assert name == "quickstart.yaml", config_text.splitlines()[0]
    (tmp_path / name).write_text(config_text)
    cfg = load_config(tmp_path / name)
    assert (ROOT / cfg.data.train).is_file() and (ROOT / cfg.data.eval).is_file()
    commands = list(command_lines(quickstart))
    assert [c.split()[1] for c in commands] == ["validate-data", "train", "eval", "merge-adapter"]
    assert all(f" {name}" in c for c in commands[:2])
    assert all(f" {cfg.output_dir}" in c for c in commands[2:])


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference", ROOT / "scripts" / "gen_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_page_is_generated_from_the_schema() -> None:
    from dpo_cli.config.docgen import PAGE, render_page

    assert (DOCS / PAGE).read_text() == render_page(), "run: python scripts/gen_config_reference.py"


def test_generated_pages_are_current() -> None:
    assert load_generator().main(["--check"]) == 0, "run: python scripts/gen_config_reference.py"


def test_check_mode_names_each_stale_page_and_writing_fixes_it(tmp_path: Path, capsys) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    reference = docs / "reference" / "configuration.md"
    reference.write_text(reference.read_text().replace("| `model.revision` |", "| `model.revisions` |"))
    formats = docs / "data-formats.md"
    formats.write_text(formats.read_text().replace("| `openai` |", "| `open_ai` |"))
    generator = load_generator()

    assert generator.main(["--check", "--docs-dir", str(docs)]) == 1
    out = capsys.readouterr().out
    assert f"{reference} is stale" in out and f"{formats} is stale" in out
    assert generator.main(["--docs-dir", str(docs)]) == 0
    assert generator.main(["--check", "--docs-dir", str(docs)]) == 0
    assert reference.read_text() == (DOCS / "reference" / "configuration.md").read_text()
    assert formats.read_text() == (DOCS / "data-formats.md").read_text()


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs and mkdocs-material are not installed (pip install -e '.[dev]')")
    log = tmp_path / "mkdocs.log"
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    with log.open("w") as out:
        # From another folder: the build must not depend on the working directory.
        result = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=env,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, log.read_text()[-3000:]
    index = (site / "index.html").read_text()
    assert "dpo config schema" in index, "docs/index.md lost the commands table it includes from README.md"
    assert (site / "reference" / "configuration" / "index.html").is_file()
