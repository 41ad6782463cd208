"""A finished run directory, read once, as the facts the model card and `report.html` state.

What only the training process knows (the values TRL actually trained with, which names are
Hub ids as seen from the directory the run started in, the command line) is written into
`summary.json` under `provenance` when the run ends (`provenance`); everything else is read
back from the run's own files, so documents can be rebuilt at any time.
"""

from __future__ import annotations

import enum
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.fsio import read_json
from dpo_cli.rundir import read_metrics

# TRL config fields the card's training table shows, in this order, where the algorithm has them.
HYPERPARAMETERS = (
    "beta",
    "loss_type",
    "loss_weights",
    "label_smoothing",
    "desirable_weight",
    "undesirable_weight",
    "simpo_gamma",
    "cpo_alpha",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "world_size",
    "max_length",
    "optim",
    "weight_decay",
    "max_grad_norm",
    "bf16",
    "fp16",
    "activation_checkpointing",
    "gradient_checkpointing",
    "precompute_ref_log_probs",
    "seed",
)

# The training curves `dpo_cli.train.plots.write_plots` draws, in reading order.
CURVES = ("loss.png", "reward_margins.png", "reward_accuracy.png", "rewards.png")


def train_command(config_path: str | None, overrides: list[str] | None) -> str:
    """The `dpo train` command line that starts this run again."""
    parts = ["dpo", "train", shlex.quote(config_path or "CONFIG")]
    parts += [f"--set {shlex.quote(o)}" for o in overrides or []]
    return " ".join(parts)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def hyperparameters(trainer_args: Any) -> dict[str, Any]:
    """The values TRL trained with (its defaults included), for the fields in `HYPERPARAMETERS`."""
    found = {}
    for name in HYPERPARAMETERS:
        try:
            value = getattr(trainer_args, name)
        except AttributeError:
            continue
        found[name] = _plain(value)
    if "activation_checkpointing" in found:
        found.pop("gradient_checkpointing", None)  # transformers 5.24 mirrors one into the other
    return found


def hub_model_id(name: str | None) -> str | None:
    """`name` when it is a Hub repository id rather than a local directory, else None."""
    if not name or Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def hub_dataset_id(spec: str | list[str] | None) -> str | None:
    """The Hub dataset id a `data.train` / `data.eval` value names, resolved as `dpo_cli.data` does."""
    if not isinstance(spec, str):
        return None
    from dpo_cli.data import resolve_source

    try:
        return resolve_source(spec).hub_id
    except DpoError:
        return None


def provenance(cfg: Any, trainer_args: Any, *, config_path: str | None, overrides: list[str] | None) -> dict[str, Any]:
    """What the end of `train` records in `summary.json` for the documents (see the module docstring)."""
    return {
        "base_model_hub_id": hub_model_id(cfg.model.name_or_path),
        "dataset_hub_ids": {"train": hub_dataset_id(cfg.data.train), "eval": hub_dataset_id(cfg.data.eval)},
        "hyperparameters": hyperparameters(trainer_args),
        "command": train_command(config_path, overrides),
        "hub_model_id": getattr(trainer_args, "hub_model_id", None)
        if getattr(trainer_args, "push_to_hub", False)
        else None,
    }


@dataclass
class DataSplit:
    """One split of the training data as the documents describe it."""

    split: str
    source: str
    hub_id: str | None
    rows_kept: int | None
    rows_dropped: int | None = None  # None: not recorded
    dropped_reasons: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class SweepContext:
    """The sweep a run was one point of, once the sweep has chosen."""

    sweep_dir: Path
    point: str
    winner: str | None
    rule: str
    swept: str
    rows: list[dict[str, Any]]
    plot: Path | None

    @property
    def chosen(self) -> bool:
        return self.winner == self.point


@dataclass
class RunRecord:
    """Everything a finished run directory holds, parsed."""

    run_dir: Path
    cfg: Any  # RunConfig
    config_text: str
    info: dict[str, Any]
    summary: dict[str, Any]
    records: list[dict[str, Any]]
    eval_report: dict[str, Any] | None = None
    sweep: SweepContext | None = None

    @property
    def final_dir(self) -> Path:
        return self.run_dir / "final"

    @property
    def provenance(self) -> dict[str, Any]:
        return self.summary.get("provenance") or {}

    @property
    def adapter(self) -> bool:
        return (self.final_dir / "adapter_config.json").is_file()

    @property
    def curves(self) -> list[Path]:
        return [p for p in (self.run_dir / "plots" / name for name in CURVES) if p.is_file()]

    @property
    def eval_plots(self) -> list[Path]:
        if not self.eval_report:
            return []
        paths = (self.run_dir / "eval" / "plots" / Path(p).name for p in self.eval_report.get("plots") or [])
        return [p for p in paths if p.is_file()]

    @property
    def last_eval(self) -> dict[str, Any]:
        evals = [r for r in self.records if "eval_loss" in r]
        return evals[-1] if evals else {}

    def data_splits(self) -> list[DataSplit]:
        """Train and held-out splits with the rows kept and, where the run recorded them, dropped."""
        data, info = self.cfg.data, self.info
        hub_ids = self.provenance.get("dataset_hub_ids") or {}
        # What the data check dropped, per split (`dpo_cli.validation.DataCheck.summary`), when it ran.
        check = (info.get("data") or {}).get("check") or {}

        def split(name: str, source: str, kept: Any, notes: list[str]) -> DataSplit:
            found = check.get(name) if isinstance(check.get(name), dict) else {}
            reasons = found.get("dropped_by")
            return DataSplit(
                split=name,
                source=source,
                hub_id=hub_ids.get(name),
                rows_kept=kept,
                rows_dropped=found.get("dropped"),
                dropped_reasons=reasons if isinstance(reasons, dict) else {},
                notes=notes,
            )

        train_notes = []
        if data.max_train_samples:
            train_notes.append(f"capped at the first {data.max_train_samples} rows (`data.max_train_samples`)")
        if data.eval is None and data.eval_fraction:
            train_notes.append(f"{data.eval_fraction:g} of the rows held out for evaluation (seed {data.seed})")
        if data.unpair:
            train_notes.append("each pair split into a desirable and an undesirable row (`data.unpair`)")
        splits = [split("train", _describe(data.train), info.get("train_rows"), train_notes)]
        if data.eval is not None:
            notes = [f"capped at the first {data.max_eval_samples} rows"] if data.max_eval_samples else []
            splits.append(split("eval", _describe(data.eval), info.get("eval_rows"), notes))
        elif data.eval_fraction:
            held_out = f"held out from train: {data.eval_fraction:g} of its rows (seed {data.seed})"
            splits.append(split("eval", _describe(data.train), info.get("eval_rows"), [held_out]))
        return splits


# Config keys whose values are credentials: a card is meant to be published, a token must not be.
SECRET_SUFFIXES = ("token", "api_key", "password", "secret")


def redact(data: Any) -> Any:
    """`data` with the value of every credential key (`hub_token`, `*_api_key`, ...) replaced."""
    if isinstance(data, dict):
        return {
            k: "<redacted>" if isinstance(k, str) and k.lower().endswith(SECRET_SUFFIXES) and v else redact(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data


def _describe(spec: Any) -> str:
    """`data.train` / `data.eval` in words: a path, a list of files, or a mixture's sources."""
    if isinstance(spec, str):
        return spec
    return ", ".join(item if isinstance(item, str) else _describe_source(item) for item in spec)


def _describe_source(source: Any) -> str:
    taken = []
    if source.fraction is not None:
        taken.append(f"fraction {source.fraction:g}")
    if source.max_samples is not None:
        taken.append(f"at most {source.max_samples} rows")
    return f"{source.path} ({', '.join(taken)})" if taken else source.path


def _public_config(path: Path) -> str:
    import yaml

    return yaml.safe_dump(redact(yaml.safe_load(path.read_text(encoding="utf-8")) or {}), sort_keys=False)


def _read_optional(path: Path) -> dict[str, Any] | None:
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _eval_of_final(run_dir: Path) -> dict[str, Any] | None:
    """`dpo eval`'s report of this run's final weights (one of a checkpoint describes other weights)."""
    report = _read_optional(run_dir / "eval" / "report.json")
    if not report:
        return None
    weights = Path(str(report.get("weights", "")))
    final = run_dir / "final"
    if weights.parts[-2:] == (run_dir.name, "final") or (weights.exists() and weights.resolve() == final.resolve()):
        return report
    return None


def _sweep_context(run_dir: Path) -> SweepContext | None:
    state = _read_optional(run_dir.parent / "sweep.json")
    if not state or "rule" not in state or run_dir.name not in (state.get("points") or {}):
        return None  # not a sweep point, or the sweep has not chosen yet
    plot = run_dir.parent / "sweep.png"
    return SweepContext(
        sweep_dir=run_dir.parent,
        point=run_dir.name,
        winner=state.get("winner"),
        rule=state.get("rule", ""),
        swept=state.get("swept", ""),
        rows=[{"point": name, **info} for name, info in state["points"].items()],
        plot=plot if plot.is_file() else None,
    )


def read_run(run_dir: Path) -> RunRecord:
    """Parse a finished run directory.

    Raises:
        DpoError: It is not a finished run (no `config.yaml` or `summary.json`).
    """
    from dpo_cli.config.loader import load_config

    run_dir = Path(run_dir)
    for name in ("config.yaml", "summary.json"):
        if not (run_dir / name).is_file():
            raise DpoError(f"{run_dir}: not a finished run (no {name})", exit_code=EXIT_USAGE)
    return RunRecord(
        run_dir=run_dir,
        cfg=load_config(run_dir / "config.yaml"),
        config_text=_public_config(run_dir / "config.yaml"),
        info=_read_optional(run_dir / "run.json") or {},
        summary=read_json(run_dir / "summary.json"),
        records=read_metrics(run_dir / "metrics.jsonl"),
        eval_report=_eval_of_final(run_dir),
        sweep=_sweep_context(run_dir),
    )
