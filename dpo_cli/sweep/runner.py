"""`dpo sweep-beta` as a library: a grid of normal `dpo train` runs, compared on held-out pairs.

Each point is trained by `dpo_cli.train.run.train`, the function `dpo train` runs, into
`SWEEP_DIR/beta_<b>[_lr_<lr>]/`. What does not depend on beta is done once:

- tokenization: `datasets` caches the tokenized splits by fingerprint, so the second point
  reads the first point's cache;
- reference log-probs: every point runs with `precompute_ref_log_probs`; the first point
  computes them and the others read them from `SWEEP_DIR/.ref_logps/`, keyed by the token ids
  and TRL's hash of the starting model (same data, same seed, same fresh adapter), see
  `dpo_cli.train.ref_cache`;
- libraries and the base model: points run in one process by default, and with LoRA the base
  model is loaded once and the adapter removed (`unload`) after each point.

`sweep.json` records the grid and every point's status, error and metrics; it is rewritten
atomically after each point, so an interruption leaves a consistent directory and a re-run
skips finished points and resumes unfinished ones. A re-run without `--betas` and
`--learning-rates` trains the recorded grid, not the config's default one.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpo_cli.config.algorithms import ALGORITHMS
from dpo_cli.config.loader import load_config, set_strings, with_updates
from dpo_cli.config.schema import RunConfig, SweepSection
from dpo_cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, ConfigError, DpoError
from dpo_cli.fsio import atomic_write_json, read_json
from dpo_cli.rundir import run_lock, run_status

STATE_FILE = "sweep.json"
REF_CACHE_DIR = ".ref_logps"


@dataclass(frozen=True)
class Point:
    """One grid point: a beta and, optionally, a learning rate."""

    beta: float
    learning_rate: float | None = None
    algorithm: str = "dpo"  # whose strength parameter `beta` sets (see dpo_cli.train.trl_args)

    @property
    def name(self) -> str:
        name = f"beta_{self.beta:g}"
        return name if self.learning_rate is None else f"{name}_lr_{self.learning_rate:g}"

    def updates(self, sweep_dir: Path) -> dict[str, Any]:
        """The point's settings over the base config, as typed dotted-key updates."""
        algorithm = ALGORITHMS[self.algorithm]
        updates: dict[str, Any] = {algorithm.strength_key: float(self.beta), "output_dir": sweep_dir / self.name}
        if self.learning_rate is not None:
            updates["training.learning_rate"] = float(self.learning_rate)
        if algorithm.reference:
            # Reference log-probs do not depend on beta: computed once, cached by TRL, reused.
            updates["training.precompute_ref_log_probs"] = True
        return updates

    def overrides(self, sweep_dir: Path) -> list[str]:
        """The same settings as `--set` texts, for a `dpo train` command line (schedulers, parallel points)."""
        return set_strings(self.updates(sweep_dir))


def expand(
    sweep: SweepSection,
    betas: list[float] | None = None,
    learning_rates: list[float] | None = None,
    algorithm: str = "dpo",
) -> list[Point]:
    """The grid in a stable order: every beta with every learning rate, duplicates removed."""
    betas = list(dict.fromkeys(betas or sweep.betas))
    rates = list(dict.fromkeys(learning_rates or sweep.learning_rates or [])) or [None]
    return [Point(beta, rate, algorithm) for beta in betas for rate in rates]


def sweep_dir_of(cfg: RunConfig, explicit: str | Path | None = None) -> Path:
    return Path(explicit or cfg.sweep.output_dir or f"{cfg.output_dir.rstrip('/')}-sweep")


def point_configs(base: RunConfig, points: list[Point], sweep_dir: Path, source: str) -> dict[str, RunConfig]:
    """Validate every point before anything trains; all problems of all points are reported together.

    Args:
        base: The sweep's config (the file with the command line's `--set`).
        points: The grid.
        sweep_dir: Where the points' run directories go.
        source: The config file, named in the problems.
    """
    configs: dict[str, RunConfig] = {}
    problems: list[str] = []
    for point in points:
        try:
            configs[point.name] = with_updates(base, point.updates(sweep_dir), source=source)
        except ConfigError as exc:
            problems += [f"{point.name}: {p}" for p in exc.problems]
    if problems:
        raise ConfigError(source, problems)
    first = next(iter(configs.values()))
    if first.data.eval is None and not first.data.eval_fraction:
        raise DpoError("a sweep compares points on held-out pairs: set `data.eval` or `data.eval_fraction`", EXIT_USAGE)
    return configs


def point_metrics(run_dir: Path, point: Point) -> dict[str, Any]:
    """The held-out numbers a point is judged by, from its `summary.json` and `metrics.jsonl`."""
    beta = point.beta
    # ORPO/CPO/SimPO rewards are beta * the policy's own log-probs: there is no shift from a reference.
    has_reference = ALGORITHMS[point.algorithm].reference
    from dpo_cli.rundir import read_metrics

    summary = read_json(run_dir / "summary.json")
    evals = [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval_loss" in r]
    last = evals[-1] if evals else {}
    chosen, rejected = last.get("eval_logps/chosen"), last.get("eval_logps/rejected")
    reward_chosen = last.get("eval_rewards/chosen")
    return {
        "ref_logps": read_json(run_dir / "run.json").get("ref_logps"),
        "reward_accuracy": summary.get("eval_reward_accuracy"),
        "reward_margin": summary.get("eval_reward_margin"),
        "dpo_loss": summary.get("eval_loss"),
        "logp_margin": chosen - rejected if chosen is not None and rejected is not None else None,
        # rewards/chosen = beta * (log p_policy - log p_ref) averaged over pairs: the shift in nats.
        "chosen_logp_shift": reward_chosen / beta if reward_chosen is not None and has_reference else None,
        "final_train_loss": summary.get("final_loss"),
        "final_dir": summary.get("final_dir"),
    }


def choose(rows: list[dict[str, Any]], sweep: SweepSection) -> tuple[dict[str, Any] | None, str]:
    """The winning row and the rule that chose it, in words."""
    metric = sweep.select_by
    guard = sweep.max_chosen_logp_drop
    rule = f"highest held-out {metric}"
    rule += ", among points with a positive reward margin"
    if guard is not None:
        rule += f" whose chosen log-prob fell by at most {guard:g} nats"
    rule += "; ties go to the larger beta (closer to the reference)"
    eligible = [
        r
        for r in rows
        if r.get("status") == "completed"
        and r.get(metric) is not None
        and (r.get("reward_margin") or 0.0) > 0.0
        and (guard is None or r.get("chosen_logp_shift") is None or r["chosen_logp_shift"] >= -guard)
    ]
    if not eligible:
        return None, rule
    return max(eligible, key=lambda r: (r[metric], r["beta"])), rule


@dataclass
class SweepResult:
    sweep_dir: Path
    rows: list[dict[str, Any]]
    winner: dict[str, Any] | None
    rule: str
    table: Path
    plot: Path | None
    page: Path | None = None  # report.html


class _State:
    """`sweep.json`, rewritten atomically after every change."""

    def __init__(self, sweep_dir: Path, points: list[Point], grid: dict[str, Any]):
        self.path = sweep_dir / STATE_FILE
        old = read_json(self.path).get("points", {}) if self.path.exists() else {}
        self.grid = grid
        self.points: dict[str, dict[str, Any]] = {}
        for p in points:
            self.points[p.name] = {**old.get(p.name, {}), "beta": p.beta, "learning_rate": p.learning_rate}

    def update(self, name: str, **fields: Any) -> None:
        self.points[name].update(fields)
        atomic_write_json(
            self.path, {"grid": self.grid, "points": self.points, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        )


def recorded_grid(sweep_dir: Path) -> dict[str, Any] | None:
    """The grid an earlier run of this sweep recorded in `sweep.json`, if any."""
    path = sweep_dir / STATE_FILE
    try:
        grid = read_json(path).get("grid") if path.is_file() else None
    except ValueError:
        return None
    return grid if isinstance(grid, dict) and grid.get("betas") else None


def resolve_grid(
    sweep: SweepSection, sweep_dir: Path, betas: list[float] | None, learning_rates: list[float] | None
) -> tuple[list[float], list[float] | None]:
    """The betas and learning rates to train: the command's, else the recorded grid, else the config's.

    An interrupted `--betas 0.05,0.1` sweep, re-run without `--betas`, must continue the same
    grid, not start the config's default one in the same folder.
    """
    recorded = recorded_grid(sweep_dir) if betas is None and learning_rates is None else None
    if recorded is not None:
        betas, learning_rates = list(recorded["betas"]), recorded.get("learning_rates")
        if betas != list(sweep.betas) or learning_rates != sweep.learning_rates:
            print(
                f"note: continuing the grid recorded in {sweep_dir / STATE_FILE} (betas {format_floats(betas)}"
                + (f", learning rates {format_floats(learning_rates)}" if learning_rates else "")
                + "); pass --betas to train another one",
                file=sys.stderr,
                flush=True,
            )
    betas = list(dict.fromkeys(betas or sweep.betas))
    rates = list(dict.fromkeys(learning_rates or sweep.learning_rates or [])) or None
    return betas, rates


def format_floats(values: list[float]) -> str:
    """`0.05,0.1` as the `--betas` option reads it back, exactly."""
    return ",".join(repr(float(v)) for v in values)


def _prepare(
    config_path: Path,
    overrides: list[str],
    betas: list[float] | None,
    learning_rates: list[float] | None,
    sweep_dir: str | Path | None,
    validate: bool,
) -> tuple[RunConfig, list[Point], dict[str, RunConfig], Path, _State, Any]:
    """Everything checked before the first point trains: every point's config, and the data once."""
    base_cfg = load_config(config_path, overrides)
    from dpo_cli.train.tracking import check_trackers

    check_trackers(base_cfg.training.report_to)  # before the shared base model loads
    if base_cfg.algorithm == "kto" and base_cfg.sweep.select_by == "reward_accuracy":
        raise DpoError(
            "KTO logs no reward accuracy (its rows are unpaired): set `sweep.select_by: logp_margin` or `win_rate`",
            EXIT_USAGE,
        )
    out = sweep_dir_of(base_cfg, sweep_dir)
    betas, learning_rates = resolve_grid(base_cfg.sweep, out, betas, learning_rates)
    points = expand(base_cfg.sweep, betas, learning_rates, base_cfg.algorithm)
    configs = point_configs(base_cfg, points, out, str(config_path))
    data_check = None
    if validate:
        from dpo_cli.validation import check_before_training

        data_check = check_before_training(next(iter(configs.values())), str(config_path))
    out.mkdir(parents=True, exist_ok=True)
    if data_check is not None:
        data_check.save(out)  # every point leaves out the same rows (`dpo train --data-check` reads it)
    return (
        base_cfg,
        points,
        configs,
        out,
        _State(out, points, {"betas": betas, "learning_rates": learning_rates}),
        data_check,
    )


def run_sweep(
    config_path: Path,
    overrides: list[str] | None = None,
    *,
    betas: list[float] | None = None,
    learning_rates: list[float] | None = None,
    sweep_dir: str | Path | None = None,
    validate: bool = True,
) -> SweepResult:
    """Train and compare every point in this process.

    The data is validated once (all points share it) unless `validate` is false.

    Raises:
        ConfigError: A point's config is invalid (nothing is trained then).
        DpoError: Interrupted (exit code 130): the current point saved a checkpoint, the state is
            consistent, and re-running the command continues.
    """
    overrides = list(overrides or [])
    base_cfg, points, configs, out, state, data_check = _prepare(
        config_path, overrides, betas, learning_rates, sweep_dir, validate
    )
    # One sweep at a time per folder: a second one would rewrite sweep.json under the first.
    with run_lock(out):
        shared_base = None
        reuse_base = base_cfg.mode in ("lora", "qlora") and not base_cfg.model.adapter
        from dpo_cli.sweep.report import print_point_line
        from dpo_cli.train.run import train

        for point in points:
            cfg = configs[point.name]
            run_dir = Path(cfg.output_dir)
            status = run_status(run_dir)
            if status == "completed":
                state.update(point.name, status="completed", **point_metrics(run_dir, point))
                print_point_line(point.name, "done earlier, skipped")
                continue
            state.update(point.name, status="running", error=None)
            if reuse_base and shared_base is None:
                from dpo_cli.models import load_policy

                shared_base = load_policy(cfg)
            try:
                result = train(
                    cfg,
                    resume=status == "resumable",
                    overwrite=status == "partial",
                    config_path=str(config_path),
                    overrides=[*overrides, *point.overrides(out)],
                    policy=shared_base,
                    ref_logps_cache=out / REF_CACHE_DIR,
                    data_check=data_check,
                )
            except DpoError as exc:
                interrupted = exc.exit_code == EXIT_INTERRUPTED
                state.update(point.name, status="interrupted" if interrupted else "failed", error=str(exc))
                if interrupted:
                    raise DpoError(
                        f"sweep interrupted during {point.name}; its checkpoint is saved",
                        exit_code=EXIT_INTERRUPTED,
                        details=[
                            f"continue with: {sweep_command(config_path, overrides, out, state.grid, validate=validate)}"
                        ],
                    ) from None
                print_point_line(point.name, f"failed: {exc.message}")
                shared_base = None  # its adapter may still be attached: load a clean base next time
                continue
            except Exception as exc:  # noqa: BLE001 (an unexpected failure of one point must not lose the others)
                state.update(
                    point.name,
                    status="failed",
                    error=f"{type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc(limit=8),
                )
                print_point_line(point.name, f"failed: {type(exc).__name__}: {exc}")
                shared_base = None
                continue
            if shared_base is not None:
                shared_base = _detach_adapter(result.model)
            state.update(point.name, status="completed", **point_metrics(run_dir, point))
            print_point_line(point.name, "trained")
        judge_points(out, state, base_cfg)
        return finish(out, state.points, base_cfg.sweep, base_cfg.algorithm)


def judge_points(out: Path, state: _State, base_cfg: RunConfig) -> None:
    """With `eval.judge` configured, `dpo eval`'s judged win rate against the reference, per point.

    The held-out preference metrics are already in each point's run (training's final
    evaluation), so only generation and judging run here; a point judged earlier is skipped.
    """
    if base_cfg.eval.judge is None or not base_cfg.eval.generate:
        return
    from dpo_cli.evaluation.runner import resolve_target, run_eval

    for name, info in state.points.items():
        if info.get("status") != "completed" or info.get("win_rate") is not None:
            continue
        target = resolve_target(out / name, model=None, updates={"eval.preference": False})
        (report,) = run_eval([target], overwrite=True, echo=lambda _text: None)
        rates = report.get("winrate") or {}
        state.update(name, win_rate=rates.get("win_rate"), win_rate_ci95=rates.get("win_ci95"))


def _detach_adapter(peft_model: Any) -> Any:
    """The base model back from a trained PEFT wrapper, adapter removed and TRL's patches undone."""
    base = peft_model.unload()
    # TRL patches `forward` on the instance with its fused LM head; drop it so the next point patches afresh.
    base.__dict__.pop("forward", None)
    base.train()
    return base


def finish(out: Path, points: dict[str, dict[str, Any]], sweep: SweepSection, algorithm: str = "dpo") -> SweepResult:
    """Write the table, the plot and the choice from the recorded point states."""
    from dpo_cli.sweep.report import write_plot, write_tables

    rows = [{"point": name, **info} for name, info in points.items()]
    winner, rule = choose(rows, sweep)
    swept = f"`{ALGORITHMS[algorithm].strength_key}`, {ALGORITHMS[algorithm].strength_meaning}"
    table = write_tables(out, rows, winner, rule, swept=swept)
    plot = write_plot(out, rows)
    state = read_json(out / STATE_FILE) if (out / STATE_FILE).exists() else {"points": points}
    state.update({"winner": winner["point"] if winner else None, "rule": rule, "swept": swept})
    atomic_write_json(out / STATE_FILE, state)
    from dpo_cli.publish import refresh_if_finished
    from dpo_cli.publish.html import write_sweep_report

    for row in rows:  # each point's card and page now say whether it was chosen, and by what rule
        if row.get("status") == "completed":
            refresh_if_finished(out / row["point"])
    page = write_sweep_report(out, rows, winner, rule, swept, plot)
    if winner is not None:
        from dpo_cli.publish.hub import push_run

        push_run(out / winner["point"])  # with `push_to_hub`, the repository ends on the chosen point
    return SweepResult(sweep_dir=out, rows=rows, winner=winner, rule=rule, table=table, plot=plot, page=page)


def sweep_command(
    config_path: Path, overrides: list[str], out: Path, grid: dict[str, Any], *, validate: bool = True
) -> str:
    """The exact `dpo sweep-beta` line that continues this sweep: same config, overrides, grid and folder."""
    argv = ["dpo", "sweep-beta", str(config_path)]
    for override in overrides:
        argv += ["--set", override]
    argv += ["--betas", format_floats(grid["betas"])]
    if grid.get("learning_rates"):
        argv += ["--learning-rates", format_floats(grid["learning_rates"])]
    argv += ["--output", str(out)]
    if not validate:
        argv.append("--skip-validation")
    return shlex.join(argv)


def train_commands(config_path: Path, overrides: list[str], points: list[Point], out: Path) -> list[list[str]]:
    """One `dpo train` argv per point, for a cluster scheduler or parallel device groups."""
    commands = []
    for point in points:
        argv = ["dpo", "train", str(config_path)]
        for o in [*overrides, *point.overrides(out)]:
            argv += ["--set", o]
        commands.append(argv)
    return commands


def run_parallel(
    config_path: Path,
    overrides: list[str],
    *,
    device_groups: list[str],
    betas: list[float] | None = None,
    learning_rates: list[float] | None = None,
    sweep_dir: str | Path | None = None,
    dpo_argv: list[str] | None = None,
    popen=subprocess.Popen,
    validate: bool = True,
) -> SweepResult:
    """Run points as separate `dpo train` processes, one per device group at a time.

    Args:
        device_groups: `CUDA_VISIBLE_DEVICES` values, e.g. ["0,1", "2,3"] for two points at once
            on two GPUs each.
        dpo_argv: How to invoke dpo (default: this Python's `-m dpo_cli`).
        popen: Process factory, a parameter so tests can observe the commands.
    """
    import sys

    base_cfg, points, _, out, state, data_check = _prepare(
        config_path, overrides, betas, learning_rates, sweep_dir, validate
    )
    # One sweep at a time per folder: a second one would rewrite sweep.json under the first.
    with run_lock(out):
        dpo_argv = dpo_argv or [sys.executable, "-m", "dpo_cli"]
        queue = [(p, argv) for p, argv in zip(points, train_commands(config_path, overrides, points, out), strict=True)]
        running: dict[str, tuple[Point, Any, Any]] = {}
        free = list(device_groups)
        while queue or running:
            while queue and free:
                point, argv = queue.pop(0)
                run_dir = out / point.name
                status = run_status(run_dir)
                if status == "completed":
                    state.update(point.name, status="completed", **point_metrics(run_dir, point))
                    continue
                # Checked once above: each point reads that check instead of checking again.
                checked = ["--data-check", str(out)] if data_check is not None else ["--skip-validation"]
                argv = [*dpo_argv, *argv[1:], *checked]
                if status == "resumable":
                    argv.append("--resume")
                elif status == "partial":
                    argv.append("--overwrite")
                group = free.pop(0)
                log = (out / f"{point.name}.log").open("w")
                env = {**os.environ, "CUDA_VISIBLE_DEVICES": group}
                running[point.name] = (point, popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT), group)
                state.update(point.name, status="running", device_group=group, error=None)
            for name, (point, proc, group) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del running[name]
                free.append(group)
                if code == 0:
                    state.update(name, status="completed", **point_metrics(out / name, point))
                else:
                    tail = _log_tail(out / f"{name}.log")
                    state.update(
                        name,
                        status="interrupted" if code == EXIT_INTERRUPTED else "failed",
                        error=f"exit code {code}: {tail}",
                    )
            time.sleep(0.5)
        judge_points(out, state, base_cfg)
        return finish(out, state.points, base_cfg.sweep, base_cfg.algorithm)


def _log_tail(path: Path, lines: int = 3) -> str:
    if not path.exists():
        return ""
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
