"""PNG plots of a run's metrics (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dpo_cli.config.algorithms import LN2
from dpo_cli.fsio import atomic_save
from dpo_cli.train.diagnose import eval_records, train_records


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def save_figure(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as `path` (PNG), atomically and with the umask's file mode."""
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"))


def write_plots(records: list[dict[str, Any]], plot_dir: Path, *, expected_loss: float | None = LN2) -> list[Path]:
    """Loss (with the step-0 reference line), reward margins, reward accuracy, chosen vs rejected rewards."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    train, evals = train_records(records), eval_records(records)
    panels = [
        ("loss.png", "DPO loss", [("train", train, "loss"), ("eval", evals, "eval_loss")]),
        (
            "reward_margins.png",
            "reward margin (chosen - rejected)",
            [("train", train, "rewards/margins"), ("eval", evals, "eval_rewards/margins")],
        ),
        (
            "reward_accuracy.png",
            "reward accuracy",
            [("train", train, "rewards/accuracies"), ("eval", evals, "eval_rewards/accuracies")],
        ),
        (
            "rewards.png",
            "implicit rewards",
            [
                ("chosen", train, "rewards/chosen"),
                ("rejected", train, "rewards/rejected"),
                ("eval chosen", evals, "eval_rewards/chosen"),
                ("eval rejected", evals, "eval_rewards/rejected"),
            ],
        ),
    ]
    written = []
    for filename, title, lines in panels:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for label, source, key in lines:
            xs, ys = _series(source, key)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
        if filename == "loss.png" and expected_loss is not None:
            ax.axhline(
                expected_loss, color="grey", linestyle="--", linewidth=1, label=f"step-0 value {expected_loss:.3f}"
            )
        if filename == "reward_accuracy.png":
            ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
            ax.set_ylim(-0.02, 1.02)
        if filename in {"reward_margins.png", "rewards.png"}:
            ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        path = plot_dir / filename
        save_figure(fig, path)
        plt.close(fig)
        written.append(path)
    return written
