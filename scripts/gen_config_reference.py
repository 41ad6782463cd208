"""Regenerate the generated parts of the docs: the configuration reference page (from the pydantic
schema) and the formats table on the data formats page (from the layout registry).

    python scripts/gen_config_reference.py          # rewrite them under docs/
    python scripts/gen_config_reference.py --check  # exit 1, naming each stale file, if one is stale (CI)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpo_cli.config.docgen import PAGE, render_page
from dpo_cli.data.layouts import FORMATS_BEGIN, FORMATS_END, render_formats_table
from dpo_cli.fsio import atomic_write_text

FORMATS_PAGE = "data-formats.md"  # under docs/; the table sits between its markers


def generated(docs: Path) -> dict[Path, str]:
    """What each generated file under `docs` should hold now."""
    formats = docs / FORMATS_PAGE
    text = formats.read_text(encoding="utf-8")
    if FORMATS_BEGIN not in text or FORMATS_END not in text:
        raise SystemExit(f"{formats}: the formats table markers are missing ({FORMATS_BEGIN} ... {FORMATS_END})")
    start, end = text.index(FORMATS_BEGIN), text.index(FORMATS_END) + len(FORMATS_END)
    return {docs / PAGE: render_page(), formats: text[:start] + render_formats_table() + text[end:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the generated files are up to date")
    parser.add_argument("--docs-dir", type=Path, default=ROOT / "docs", help="the docs folder (default: docs/)")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated(args.docs_dir).items():
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
            print(f"updated {path}")
    if args.check and stale:
        for path in stale:
            print(f"{path} is stale: run python scripts/gen_config_reference.py")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
