"""The sweep's table (Markdown and CSV) and its plot of held-out metrics against beta."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from dpo_cli.fsio import atomic_write_text

COLUMNS = [
    ("point", "point"),
    ("beta", "beta"),
    ("learning_rate", "lr"),
    ("status", "status"),
    ("reward_accuracy", "held-out reward acc"),
    ("reward_margin", "reward margin"),
    ("logp_margin", "log-prob margin"),
    ("chosen_logp_shift", "chosen log-prob shift (nats)"),
    ("dpo_loss", "held-out DPO loss"),
    ("win_rate", "judged win rate"),
    ("final_dir", "weights"),
]


def format_cell(value: Any) -> str:
    """One value of the table as text (floats to 4 significant digits, missing as empty)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_tables(
    out: Path, rows: list[dict[str, Any]], winner: dict[str, Any] | None, rule: str, swept: str | None = None
) -> Path:
    """`results.md` and `results.csv`; returns the Markdown path. `swept` names the swept parameter."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([key for key, _ in COLUMNS] + ["error"])
    for row in rows:
        writer.writerow([format_cell(row.get(key)) for key, _ in COLUMNS] + [row.get("error") or ""])
    atomic_write_text(out / "results.csv", buffer.getvalue())

    lines = ["# Beta sweep", ""]
    if swept:
        lines += [f"Swept: {swept}.", ""]
    lines += ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for row in rows:
        cells = [format_cell(row.get(key)) for key, _ in COLUMNS]
        if winner and row["point"] == winner["point"]:
            cells[0] = f"**{cells[0]}** (chosen)"
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", f"Rule: {rule}.", ""]
    if winner:
        lines.append(f"Chosen: `{winner['point']}`, weights in `{winner.get('final_dir')}`.")
    else:
        lines.append("No point qualified under the rule.")
    failed = [r for r in rows if r.get("status") in ("failed", "interrupted")]
    if failed:
        lines += ["", "Points that did not finish:", ""]
        lines += [f"- `{r['point']}` ({r['status']}): {str(r.get('error') or '').splitlines()[0]}" for r in failed]
    path = out / "results.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def sweep_figure(rows: list[dict[str, Any]]) -> Any:
    """The figure of `write_plot`, or None when no point has held-out metrics.

    The beta axis is logarithmic with one tick per swept value, labelled as written (`0.05`, not
    `5x10^-2`): matplotlib's log-axis minor labels overlap when the values lie within a decade.
    """
    done = [r for r in rows if r.get("status") == "completed" and r.get("reward_accuracy") is not None]
    if not done:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, NullLocator

    panels = [
        ("reward_accuracy", "held-out reward accuracy"),
        ("logp_margin", "log-prob margin (chosen - rejected)"),
        ("chosen_logp_shift", "chosen log-prob shift vs reference"),
    ]
    # Constrained layout keeps long y tick labels (e.g. -41.80875) clear of the panel to their left.
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    rates = sorted({r.get("learning_rate") for r in done}, key=lambda v: (v is None, v or 0))
    betas = sorted({r["beta"] for r in done})
    for ax, (key, title) in zip(axes, panels, strict=True):
        for rate in rates:
            series = sorted(
                (r["beta"], r[key]) for r in done if r.get("learning_rate") == rate and r.get(key) is not None
            )
            if series:
                label = "default lr" if rate is None else f"lr {rate:g}"
                ax.plot([s[0] for s in series], [s[1] for s in series], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xticks(betas, [f"{b:g}" for b in betas], rotation=45 if len(betas) > 6 else 0)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        if len(betas) == 1:
            ax.set_xlim(betas[0] / 2, betas[0] * 2)
        ax.set_xlabel("beta")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig


def write_plot(out: Path, rows: list[dict[str, Any]]) -> Path | None:
    """Held-out reward accuracy, log-prob margin and chosen log-prob shift against beta (log axis)."""
    fig = sweep_figure(rows)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    from dpo_cli.train.plots import save_figure

    path = out / "sweep.png"
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return path


def print_point_line(name: str, what: str) -> None:
    print(f"[sweep] {name}: {what}", flush=True)


def print_sweep_summary(result: Any) -> None:
    lines = ["", result.table.read_text().rstrip(), ""]
    if result.plot:
        lines.append(f"plot       {result.plot}")
    if result.page:
        lines.append(f"page       {result.page}")
    lines.append(f"state      {result.sweep_dir / 'sweep.json'}")
    if result.winner:
        lines.append(f"winner     {result.winner['point']}: {result.winner.get('final_dir')}")
    print("\n".join(lines))
