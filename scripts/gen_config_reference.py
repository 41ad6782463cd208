"""Regenerate the configuration reference (from the pydantic schema) and the formats table (from
the layout registry) inside README.md.

    python scripts/gen_config_reference.py          # rewrite README.md
    python scripts/gen_config_reference.py --check  # exit 1 if README.md is stale (CI)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpo_cli.config.reference import render_reference, splice
from dpo_cli.data.layouts import FORMATS_BEGIN, FORMATS_END, render_formats_table
from dpo_cli.rundir import atomic_write_text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = parser.parse_args()
    readme = ROOT / "README.md"
    current = readme.read_text(encoding="utf-8")
    updated = splice(current, render_reference())
    start, end = updated.index(FORMATS_BEGIN), updated.index(FORMATS_END) + len(FORMATS_END)
    updated = updated[:start] + render_formats_table() + updated[end:]
    if args.check:
        if updated != current:
            print("README.md config reference or formats table is stale: run python scripts/gen_config_reference.py")
            return 1
        return 0
    atomic_write_text(readme, updated)
    print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
