"""`dpo iterate`: rounds of sample -> score -> pair -> validate -> train -> evaluate, each from the last.

Layout of `output_dir`:
    iterate.json            state: the config's digest and every finished round's metrics
    round-0/heldout.jsonl   the starting model's held-out responses (and their scores)
    round-K/pairs/          `dpo generate-pairs` output, sampled from the policy after round K-1
    round-K/run/            a normal `dpo train` run directory
    round-K/heldout.jsonl   the round's held-out responses
    rounds.md, rounds.png   the per-round table and plot

Round K samples from the policy after round K-1 (the starting model for K=1) and trains it
further: a LoRA run continues the previous round's adapter, a full run starts from its
weights. The reference is the original model or the previous round's policy
(`iterate.reference`). Every stage leaves files that mark it done, so a rerun of the same
command skips finished rounds and stages and resumes an interrupted training run from its
last checkpoint.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpo_cli.config.loader import load_config, set_strings, with_updates
from dpo_cli.config.schema import RunConfig
from dpo_cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, DpoError
from dpo_cli.fsio import atomic_write_json, atomic_write_text, read_json
from dpo_cli.generation import Prompt
from dpo_cli.rundir import config_inputs, refuse_foreign_overwrite, remove_entry, run_lock

STATE = "iterate.json"


@dataclass
class IterateResult:
    output_dir: Path
    rounds: list[dict[str, Any]]
    metric: str
    files: list[Path]


def round_dir(out: Path, k: int) -> Path:
    return out / f"round-{k}"


def policy_updates(base: RunConfig, out: Path, k: int) -> dict[str, Any]:
    """Config updates that make the config's model the policy after round `k` (0: the starting model)."""
    if k == 0:
        return {}
    final = round_dir(out, k) / "run" / "final"
    if base.lora is not None or base.model.adapter:
        return {"model.adapter": final, "lora": None}  # continue the adapter (its own rank, alpha, modules)
    return {"model.name_or_path": final}


def train_updates(base: RunConfig, out: Path, k: int) -> dict[str, Any]:
    """Config updates for round `k`'s training run: its pairs, its directory, its start and its reference."""
    rd = round_dir(out, k)
    found: dict[str, Any] = {
        "output_dir": rd / "run",
        "data.train": rd / "pairs" / "pairs.jsonl",
        "data.eval": None,
        "data.eval_fraction": None,
        "data.max_train_samples": None,
        "data.unpair": False,
        **policy_updates(base, out, k - 1),
    }
    if k > 1 and base.iterate.reference == "original" and base.reference.kind == "policy":
        # The policy now starts from round k-1's weights; the original model must be named explicitly.
        found |= {"reference.kind": "model", "reference.name_or_path": base.model.name_or_path}
    return found


def config_digest(base: RunConfig) -> str:
    """What must not change between reruns of one loop (everything but the number of rounds)."""
    data = base.model_dump(mode="json")
    data["iterate"].pop("rounds", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def check_loop(base: RunConfig) -> None:
    """Settings `dpo iterate` cannot run with, found before any model loads."""
    problems = []
    if base.generate.prompts is None:
        problems.append("no prompts to sample from: set `generate.prompts` or pass --prompts FILE")
    if base.algorithm != "dpo":
        problems.append(
            f"`dpo iterate` builds preference pairs for DPO; `algorithm: {base.algorithm}` is not supported"
        )
    if base.iterate.reference == "original" and base.model.adapter:
        problems.append(
            "`iterate.reference: original` with `model.adapter`: the original policy is base + adapter, which no "
            "single reference checkpoint holds; merge the adapter first (`dpo merge-adapter`) or use `previous`"
        )
    if base.generate.endpoint is not None:
        problems.append("`generate.endpoint` is for `dpo generate-pairs`: `dpo iterate` samples from its own policy")
    if problems:
        raise DpoError("iterate: the config cannot run a loop", exit_code=EXIT_USAGE, details=problems)


# What a loop writes into its output_dir (the layout above), and atomic writes' temporary names.
LOOP_ENTRY = re.compile(r"^(iterate\.json|rounds\.md|rounds\.png|round-\d+|\..+\.tmp)$")


def prepare_dir(out: Path, digest: str, overwrite: bool, protected: Iterable[tuple[str, Path]] = ()) -> dict[str, Any]:
    """The saved state of this loop (empty for a new one); with `overwrite`, an earlier loop's files removed.

    `protected` are `(key, path)` of the files the loop reads (`rundir.config_inputs`). Call it
    holding the loop's lock.

    Raises:
        DpoError: `out` holds something else, or a loop run with a different config; or
            `overwrite` would delete a file that is not the earlier loop's own (nothing is deleted then).
    """
    state_path = out / STATE
    if overwrite and state_path.exists():
        clear_loop(out, protected)
    if state_path.exists():
        state = read_json(state_path)
        if state.get("config_digest") != digest:
            raise DpoError(
                f"{out}: holds a loop run with a different config (only `iterate.rounds` may change between reruns)",
                exit_code=EXIT_USAGE,
                details=["pass --overwrite to start over, or set another output_dir"],
            )
        return state
    if out.exists() and any(out.iterdir()):
        raise DpoError(
            f"{out}: exists and is not a `dpo iterate` directory (no {STATE})",
            exit_code=EXIT_USAGE,
            details=["set another output_dir"],
        )
    return {"config_digest": digest, "rounds": {}}


def clear_loop(out: Path, protected: Iterable[tuple[str, Path]] = ()) -> None:
    """Delete an earlier loop's own entries from `out`, or nothing when anything else would go with them.

    The same rule as `dpo train --overwrite` (`rundir.check_run_dir`): a folder the user also keeps
    other files in, or one holding a file this loop reads, is refused with the names.
    """
    foreign = [c.name for c in sorted(out.iterdir()) if not LOOP_ENTRY.match(c.name)]
    refuse_foreign_overwrite(out, foreign, protected, writer="dpo iterate", kind="loop")
    # iterate.json last: a deletion cut short still leaves a folder that --overwrite recognises.
    for child in sorted(out.iterdir(), key=lambda c: c.name == STATE):
        remove_entry(child)


def heldout_prompts(base: RunConfig) -> list[Prompt]:
    """The fixed held-out prompts: `iterate.eval_prompts`, else those of the `data:` eval split."""
    from dpo_cli.pairs.prompts import load_prompts

    n = base.eval.num_prompts
    if base.iterate.eval_prompts is not None:
        return load_prompts(base.iterate.eval_prompts, base.generate.prompt_column, limit=n, key="iterate.eval_prompts")
    if base.data.eval is None and not base.data.eval_fraction:
        raise DpoError(
            "iterate: no held-out prompts",
            exit_code=EXIT_USAGE,
            details=["set `iterate.eval_prompts`, or `data.eval` / `data.eval_fraction`"],
        )
    from dpo_cli.data import load_preference_data
    from dpo_cli.evaluation.generate import eval_prompts

    return eval_prompts(load_preference_data(base.data).eval, n)


def round_prompts(prompts: list[Prompt], per_round: int | None, k: int) -> list[Prompt]:
    """Round `k`'s prompts: all of them, or the next `per_round` in turn (wrapping around)."""
    if per_round is None or per_round >= len(prompts):
        return prompts
    start = (k - 1) * per_round
    return [prompts[(start + i) % len(prompts)] for i in range(per_round)]


class HeldOut:
    """Responses to the held-out prompts, scored the same way as the pairs.

    A pointwise scorer gives the mean score; a pairwise judge gives the win rate against the
    starting model's responses (0.5 for round 0), judged in both orders.
    """

    def __init__(self, prompts: list[Prompt], scorer: Any, base: RunConfig, out: Path):
        from dpo_cli.pairs.runner import sampling_of

        self.prompts, self.scorer, self.out = prompts, scorer, out
        self.sampling = sampling_of(base.eval)
        self.metric = "heldout_score" if scorer.pointwise else "heldout_win_rate"

    def evaluate(self, sampler: Any, k: int, progress: bool) -> dict[str, Any]:
        from dpo_cli.pairs.sampling import sample_prompts

        rows, _ = sample_prompts(
            sampler,
            self.prompts,
            self.sampling,
            round_dir(self.out, k) / "heldout.jsonl",
            progress=progress,
            desc=f"held-out round {k}",
        )
        texts = [r["samples"][0]["text"].strip() for r in rows]
        words = [len(t.split()) for t in texts]
        found: dict[str, Any] = {
            "heldout_words": statistics.fmean(words),
            "heldout_unfinished": sum(not r["samples"][0]["finished"] for r in rows) / len(rows),
        }
        if self.scorer.pointwise:
            scores = [
                self.scorer.score(r["prompt"], t, where=f" (held-out prompt {r['index'] + 1})")
                for r, t in zip(rows, texts)
            ]
            found["heldout_score"] = statistics.fmean(scores)
            found["heldout_score_sem"] = statistics.stdev(scores) / len(scores) ** 0.5 if len(scores) > 1 else None
        elif k == 0:
            found["heldout_win_rate"] = 0.5
        else:
            from dpo_cli.evaluation.winrate import judge_pair, tally
            from dpo_cli.generation import read_cache

            # Round 0's answers as written then (sampling them here would use this round's model).
            start = read_cache(round_dir(self.out, 0) / "heldout.jsonl")
            results = [
                judge_pair(
                    self.scorer.judge, r["index"], r["prompt"], t, start[r["index"]]["samples"][0]["text"].strip()
                )
                for r, t in zip(rows, texts)
            ]
            summary = tally(results)
            found["heldout_win_rate"] = summary["win_rate"] + summary["tie_rate"] / 2
            found["heldout_win_rate_ci95"] = summary["win_ci95"]
        return found


def run_iterate(
    config_path: Path,
    overrides: list[str] | None = None,
    *,
    rounds: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> IterateResult:
    """Run (or resume) the loop up to `rounds` rounds.

    Raises:
        DpoError: The config cannot run a loop, a round made too few pairs, its data failed
            validation, training failed, or the loop was interrupted (exit code 130; rerun the
            same command to continue).
    """
    from dpo_cli.pairs.prompts import load_prompts
    from dpo_cli.pairs.scoring import make_scorer

    overrides = list(overrides or [])
    base = load_config(config_path, overrides)
    total = rounds or base.iterate.rounds
    check_loop(base)
    out = Path(base.output_dir)
    with run_lock(out):  # before --overwrite deletes anything: a loop still running keeps its folder
        state = prepare_dir(
            out, config_digest(base), overwrite, protected=config_inputs(base.model_dump(mode="json"), config_path)
        )
        out.mkdir(parents=True, exist_ok=True)
        prompts = load_prompts(
            base.generate.prompts, base.generate.prompt_column, limit=base.generate.max_prompts, key="generate.prompts"
        )
        scorer = make_scorer(base)
        scorer.check()
        heldout = HeldOut(heldout_prompts(base), scorer, base, out)
        state["metric"], state["scorer"] = heldout.metric, scorer.name
        loop = _Loop(config_path, overrides, base, out, state, scorer, heldout, prompts, progress, echo)
        try:
            loop.run(total)
        except KeyboardInterrupt:
            raise DpoError(
                "iterate interrupted; finished stages are kept",
                exit_code=EXIT_INTERRUPTED,
                details=["run the same command again to continue"],
            ) from None
        finally:
            loop.release()
        files = write_report(out, state, heldout.metric)
    return IterateResult(out, ordered_rounds(state), heldout.metric, files)


class _Loop:
    def __init__(
        self,
        config_path: Path,
        overrides: list[str],
        base: RunConfig,
        out: Path,
        state: dict[str, Any],
        scorer: Any,
        heldout: HeldOut,
        prompts: list[Prompt],
        progress: bool,
        echo: Callable[[str], None],
    ):
        self.config_path, self.overrides, self.base, self.out = config_path, overrides, base, out
        self.state, self.scorer, self.heldout, self.prompts = state, scorer, heldout, prompts
        self.progress, self.echo = progress, echo
        self.sampler: Any = None
        self.sampler_round: int | None = None

    def save(self) -> None:
        atomic_write_json(self.out / STATE, self.state)

    def release(self) -> None:
        self.sampler = self.sampler_round = None
        gc.collect()

    def config(self, updates: dict[str, Any]) -> RunConfig:
        """The loop's config with a round's updates (typed: the file is not read again)."""
        return with_updates(self.base, updates, source=str(self.config_path))

    def sampler_after(self, k: int) -> Any:
        """A sampler holding the policy after round `k`, loaded once for its held-out eval and the next round."""
        if self.sampler_round != k:
            from dpo_cli.pairs.sampling import make_sampler

            self.release()
            cfg = self.config(policy_updates(self.base, self.out, k))
            self.sampler, self.sampler_round = make_sampler(cfg), k
        return self.sampler

    def run(self, total: int) -> None:
        rounds = self.state["rounds"]
        if "0" not in rounds:
            rounds["0"] = {"round": 0, **self.heldout.evaluate(self.sampler_after(0), 0, self.progress)}
            self.save()
        self.echo(round_line(rounds["0"], self.heldout.metric))
        for k in range(1, total + 1):
            if rounds.get(str(k), {}).get("status") == "completed":
                self.echo(round_line(rounds[str(k)], self.heldout.metric) + "  (done earlier)")
                continue
            rounds[str(k)] = {"round": k, "status": "running", **self.one_round(k)}
            rounds[str(k)]["status"] = "completed"
            self.save()
            self.echo(round_line(rounds[str(k)], self.heldout.metric))

    def one_round(self, k: int) -> dict[str, Any]:
        from dpo_cli.pairs.runner import SUMMARY, console_lines, generate_pairs

        rd = round_dir(self.out, k)
        pairs_dir = rd / "pairs"
        if (pairs_dir / SUMMARY).exists():
            summary = read_json(pairs_dir / SUMMARY)
        else:
            cfg = self.config(policy_updates(self.base, self.out, k - 1))
            chosen = round_prompts(self.prompts, self.base.iterate.prompts_per_round, k)
            summary = generate_pairs(
                cfg,
                chosen,
                pairs_dir,
                sampler=self.sampler_after(k - 1),
                scorer=self.scorer,
                progress=self.progress,
                echo=self.echo,
            )
            for line in console_lines(summary):
                self.echo(f"round {k}: {line.strip()}")
        if summary["pairs"] < self.base.iterate.min_pairs:
            raise DpoError(
                f"round {k}: {summary['pairs']} pair(s), fewer than iterate.min_pairs ({self.base.iterate.min_pairs})",
                details=[
                    *(f"no pair for {n} prompt(s): {why}" for why, n in summary["skipped"].items()),
                    (
                        "more prompts, more generate.num_samples, a higher temperature or a lower "
                        "generate.min_score_gap give more pairs"
                    ),
                ],
            )
        self.release()  # training loads its own copy of the model
        run_dir = self.train(k)
        found = self.heldout.evaluate(self.sampler_after(k), k, self.progress)
        run_summary = read_json(run_dir / "summary.json")
        return {
            "pairs": summary["pairs"],
            "prompts_with_pairs": summary["prompts_with_pairs"],
            "mean_score_gap": summary["mean_score_gap"],
            "train_initial_loss": run_summary.get("initial_loss"),
            "train_final_loss": run_summary.get("final_loss"),
            "train_reward_accuracy": run_summary.get("final_train_reward_accuracy"),
            **found,
        }

    def train(self, k: int) -> Path:
        from dpo_cli.rundir import run_status
        from dpo_cli.train.run import train_or_launch

        updates = train_updates(self.base, self.out, k)
        cfg = self.config(updates)
        run_dir = Path(cfg.output_dir)
        status = run_status(run_dir)
        if status == "completed":
            return run_dir
        try:
            train_or_launch(
                cfg,
                config_path=str(self.config_path),
                # The same settings as command-line text: for launched ranks and the resume message.
                overrides=[*self.overrides, *set_strings(updates)],
                resume=status == "resumable",
                overwrite=status == "partial",
                starts_at_reference=cfg.reference.kind != "model",
            )
        except DpoError as exc:
            if exc.exit_code != EXIT_INTERRUPTED:
                raise DpoError(f"round {k}: {exc.message}", exit_code=exc.exit_code, details=exc.details) from None
            raise KeyboardInterrupt from None  # the checkpoint is saved; the loop's own message follows
        return run_dir


def ordered_rounds(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [state["rounds"][k] for k in sorted(state["rounds"], key=int)]


def round_line(row: dict[str, Any], metric: str) -> str:
    value = row.get(metric)
    parts = [f"round {row['round']}: {metric} {value:.4f}" if value is not None else f"round {row['round']}"]
    if row["round"]:
        parts.append(f"{row['pairs']} pairs")
        if row.get("train_final_loss") is not None:
            parts.append(f"train loss {row['train_initial_loss']:.4f} -> {row['train_final_loss']:.4f}")
    parts.append(f"held-out words {row['heldout_words']:.1f}")
    return ", ".join(parts)


def write_report(out: Path, state: dict[str, Any], metric: str) -> list[Path]:
    """`rounds.md` (the per-round table) and `rounds.png` (the held-out metric and pairs per round)."""
    rows = ordered_rounds(state)

    def cell(value: Any) -> str:
        return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    columns = [
        metric,
        "heldout_words",
        "heldout_unfinished",
        "pairs",
        "prompts_with_pairs",
        "mean_score_gap",
        "train_initial_loss",
        "train_final_loss",
        "train_reward_accuracy",
    ]
    lines = [
        f"# dpo iterate: {out}",
        "",
        f"Scored by {state.get('scorer')}; held-out metric `{metric}`.",
        "",
        "| round | " + " | ".join(columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    lines += [f"| {r['round']} | " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    if len(rows) > 1 and rows[0].get(metric) is not None and rows[-1].get(metric) is not None:
        lines += [
            "",
            (
                f"{metric}: {rows[0][metric]:.4f} at the start, {rows[-1][metric]:.4f} after round "
                f"{rows[-1]['round']} ({rows[-1][metric] - rows[0][metric]:+.4f})."
            ),
        ]
    table = out / "rounds.md"
    atomic_write_text(table, "\n".join(lines) + "\n")
    return [table, write_plot(out / "rounds.png", rows, metric)]


def write_plot(path: Path, rows: list[dict[str, Any]], metric: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dpo_cli.train.plots import save_figure

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot([r["round"] for r in rows], [r.get(metric) for r in rows], marker="o")
    left.set(xlabel="round", ylabel=metric, title=f"held-out {metric.removeprefix('heldout_')}")
    trained = [r for r in rows if r["round"]]
    right.bar([r["round"] for r in trained], [r["pairs"] for r in trained])
    right.set(xlabel="round", ylabel="pairs", title="pairs generated")
    for ax in (left, right):
        ax.set_xticks([r["round"] for r in rows])
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return path
