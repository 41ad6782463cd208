"""The shared data core: every source format becomes TRL's preference format here, once.

- `readers`: files (plain or compressed), folders, globs and Hub ids -> rows with locations.
- `layouts`: the registry of source layouts (TRL, HH-RLHF, ShareGPT, OpenAI, arena, OASST, ...),
  each a detector and a converter to `prompt`/`chosen`/`rejected` (or KTO's
  `prompt`/`completion`/`label`).
- `plan`: a `data:` section -> per split, its sources, their layouts and one representation.
- `mixture`: which rows of each source a mixture takes, in which order.
- `loader`: the `datasets` tables `dpo train`, `sweep-beta` and `eval` train and evaluate on.

`dpo validate-data` streams the same plan through the same converters (`plan.convert_batch`),
so the two cannot disagree about a row.
"""

from dpo_cli.data.layouts import LAYOUT_NAMES, LAYOUTS, LayoutError
from dpo_cli.data.loader import (
    EXCLUDED_FILE,
    Exclusions,
    PreferenceData,
    load_preference_data,
    read_exclusions,
    save_exclusions,
)
from dpo_cli.data.plan import (
    PlannedSource,
    SplitPlan,
    convert_batch,
    options_of,
    plan_data,
    plan_split,
    source_entries,
)
from dpo_cli.data.readers import DataSource, RawRow, iter_batches, load_split, open_binary, resolve_source, split_suffix

__all__ = [
    "EXCLUDED_FILE",
    "LAYOUTS",
    "LAYOUT_NAMES",
    "DataSource",
    "Exclusions",
    "LayoutError",
    "PlannedSource",
    "PreferenceData",
    "RawRow",
    "SplitPlan",
    "convert_batch",
    "iter_batches",
    "load_preference_data",
    "load_split",
    "open_binary",
    "options_of",
    "plan_data",
    "plan_split",
    "read_exclusions",
    "resolve_source",
    "save_exclusions",
    "source_entries",
    "split_suffix",
]
