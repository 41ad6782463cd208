"""The eval report: JSON for machines, Markdown and console text for people, PNG plots.

Everything is written atomically (temporary file, then rename). One run's report goes to
`<run>/eval/`; several runs also get one side-by-side report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dpo_cli.fsio import atomic_write_json, atomic_write_text

PREFERENCE_COLUMNS = (
    ("reward_accuracy", "reward acc"),
    ("reward_margin", "margin"),
    ("dpo_loss", "DPO loss"),
    ("reward_chosen", "reward chosen"),
    ("reward_rejected", "reward rejected"),
    ("logp_chosen", "logp chosen"),
    ("logp_rejected", "logp rejected"),
    ("logp_margin", "logp margin"),
)


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value)
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return str(value)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def preference_lines(preference: dict[str, Any]) -> list[str]:
    """One row per model, then one per model and eval source (`policy [hh]`) for a list of eval sources."""
    header = ["model", *[label for _, label in PREFERENCE_COLUMNS]]
    models = [(name, values) for name, values in preference.items() if name != "by_source"]
    for source, by_model in (preference.get("by_source") or {}).items():
        models += [
            (f"{name} [{source}]", {**values, "dpo_loss": values.get("loss")}) for name, values in by_model.items()
        ]
    rows = [[name, *[_num(values.get(key)) for key, _ in PREFERENCE_COLUMNS]] for name, values in models]
    return _table(header, rows)


def pathology_lines(table: list[dict[str, Any]]) -> list[str]:
    def fmt(key: str, value: float) -> str:
        return _num(value, 1) if "words" in key else _pct(value) if "rate" in key else _num(value)

    rows = [
        [
            r["label"],
            fmt(r["metric"], r["policy"]),
            fmt(r["metric"], r["reference"]),
            ("+" if r["delta"] >= 0 else "") + fmt(r["metric"], r["delta"]),
        ]
        for r in table
    ]
    return _table(["check", "policy", "reference", "difference"], rows)


def winrate_line(w: dict[str, Any]) -> str:
    def ci(key: str) -> str:
        low, high = w[key]
        return f"[{_pct(low)}, {_pct(high)}]"

    text = (
        f"win {w['win']} ({_pct(w['win_rate'])} {ci('win_ci95')}), tie {w['tie']} ({_pct(w['tie_rate'])}), "
        f"loss {w['loss']} ({_pct(w['loss_rate'])} {ci('loss_ci95')}) over {w['n']} prompts"
    )
    if w.get("win_rate_decisive") is not None:
        text += f"; decided pairs won {_pct(w['win_rate_decisive'])} {ci('win_rate_decisive_ci95')}"
    return text


def winrate_notes(w: dict[str, Any]) -> list[str]:
    notes = [f"{w['position_disagreements']} pair(s) changed verdict when the order was swapped (counted as ties)"]
    if w["unparseable_replies"]:
        notes.append(
            f"{w['unparseable_replies']} of {w['judgements']} judge replies could not be parsed (counted as ties)"
        )
    return notes


def markdown(report: dict[str, Any]) -> str:
    """The report of one run as Markdown."""
    lines = [
        f"# dpo eval: {report['label']}",
        "",
        f"- weights: `{report['weights']}`",
        f"- config: `{report['config']}`",
    ]
    if report.get("preference"):
        lines += ["", f"## Held-out preference metrics ({report['preference']['policy'].get('pairs')} pairs)", ""]
        lines += preference_lines(report["preference"])
        lines += [
            "",
            (
                "The reference is the baseline row: its implicit rewards are 0 by definition, so it ties every "
                "pair and its reward accuracy (chosen strictly above rejected) is 0; `logp margin` compares "
                "both rows on the same scale."
            ),
        ]
    tax = report.get("alignment_tax")
    if tax:
        from dpo_cli.evaluation.tax import lines as tax_lines

        lines += [
            "",
            "## Alignment tax (lm-evaluation-harness)",
            "",
            *tax_lines(tax),
            "",
            "Difference: policy minus reference, with the standard error of that difference.",
        ]
    w = report.get("winrate")
    if w:
        lines += ["", f"## Win rate against the reference ({report['judge']})", "", winrate_line(w), ""]
        lines += [f"- {note}" for note in winrate_notes(w)]
    elif report.get("judge_skipped"):
        lines += ["", "## Win rate", "", report["judge_skipped"]]
    p = report.get("pathology")
    if p:
        lines += ["", f"## Pathology checks ({p['policy'].get('n')} generations each)", ""]
        lines += pathology_lines(p["table"])
        lines += ["", *([f"- warning: {f}" for f in p["findings"]] or ["- no pathology flagged"])]
    if report.get("plots"):
        lines += [
            "",
            "## Plots",
            "",
            *[f"![{Path(x).stem}]({Path(x).relative_to(report['dir'])})" for x in report["plots"]],
        ]
    return "\n".join(lines) + "\n"


def console_text(report: dict[str, Any]) -> str:
    """What `dpo eval` prints for one run."""
    lines = ["", f"eval       {report['label']}  ({report['weights']})"]
    if report.get("preference"):
        lines += ["preference (held-out pairs)", *["  " + line for line in preference_lines(report["preference"])]]
    if report.get("alignment_tax"):
        from dpo_cli.evaluation.tax import lines as tax_lines

        lines += [
            "alignment tax (lm-evaluation-harness; difference = policy - reference)",
            *["  " + line for line in tax_lines(report["alignment_tax"])],
        ]
    if report.get("winrate"):
        lines += [f"win rate   {report['judge']}", "  " + winrate_line(report["winrate"])]
        lines += ["  " + note for note in winrate_notes(report["winrate"])]
    elif report.get("judge_skipped"):
        lines.append(f"win rate   {report['judge_skipped']}")
    if report.get("pathology"):
        lines += [
            "pathology (policy vs reference generations)",
            *["  " + line for line in pathology_lines(report["pathology"]["table"])],
        ]
        lines += [f"  warning: {f}" for f in report["pathology"]["findings"]]
    lines.append(f"report     {Path(report['dir']) / 'report.md'}")
    return "\n".join(lines)


def write_report(out_dir: Path, report: dict[str, Any]) -> list[Path]:
    """Write report.json, report.md and plots into `out_dir`; return the paths written."""
    report["dir"] = str(out_dir)
    report["plots"] = [str(p) for p in write_plots(out_dir / "plots", [report])]
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", markdown(report))
    return [out_dir / "report.json", out_dir / "report.md", *map(Path, report["plots"])]


def write_comparison(out_dir: Path, reports: list[dict[str, Any]]) -> list[Path]:
    """One side-by-side report of several runs: compare.json, compare.md, plots."""
    plots = write_plots(out_dir / "plots", reports)
    header = ["run", "reward acc", "margin", "DPO loss", "win", "tie", "loss", "win rate [95% CI]", "warnings"]
    rows = []
    for r in reports:
        pref = (r.get("preference") or {}).get("policy", {})
        w = r.get("winrate")
        rows.append(
            [
                r["label"],
                _num(pref.get("reward_accuracy")),
                _num(pref.get("reward_margin")),
                _num(pref.get("dpo_loss")),
                *(
                    [
                        str(w["win"]),
                        str(w["tie"]),
                        str(w["loss"]),
                        f"{_pct(w['win_rate'])} [{_pct(w['win_ci95'][0])}, {_pct(w['win_ci95'][1])}]",
                    ]
                    if w
                    else ["n/a"] * 4
                ),
                str(len((r.get("pathology") or {}).get("findings", []))),
            ]
        )
    lines = ["# dpo eval: side by side", "", *_table(header, rows), ""]
    lines += [f"- {r['label']}: `{Path(r['dir']) / 'report.md'}`" for r in reports]
    lines += ["", *[f"![{p.stem}]({p.relative_to(out_dir)})" for p in plots]]
    atomic_write_json(out_dir / "compare.json", {"runs": reports, "plots": [str(p) for p in plots]})
    atomic_write_text(out_dir / "compare.md", "\n".join(lines) + "\n")
    return [out_dir / "compare.json", out_dir / "compare.md", *plots]


def write_plots(plot_dir: Path, reports: list[dict[str, Any]]) -> list[Path]:
    """Bar charts: preference metrics, win/tie/loss, pathology rates (one bar group per run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dpo_cli.train.plots import save_figure

    plot_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with_pref = [r for r in reports if r.get("preference")]
    if with_pref:
        fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
        for ax, (key, title) in zip(
            axes, [("reward_accuracy", "reward accuracy"), ("reward_margin", "reward margin"), ("dpo_loss", "DPO loss")]
        ):
            names, values = ["reference"], [with_pref[0]["preference"]["reference"].get(key, 0.0)]
            for r in with_pref:
                names.append(r["label"] if len(with_pref) > 1 else "policy")
                values.append(r["preference"]["policy"].get(key, 0.0))
            ax.bar(range(len(values)), values, color=["grey"] + ["C0"] * (len(values) - 1))
            ax.set_xticks(range(len(values)), names, rotation=20, ha="right", fontsize=8)
            ax.set_title(title, fontsize=10)
        written.append(_finish(fig, plot_dir / "preference.png", save_figure, plt))
    with_win = [r for r in reports if r.get("winrate")]
    if with_win:
        fig, ax = plt.subplots(figsize=(6, 0.9 + 0.5 * len(with_win)))
        for i, r in enumerate(with_win):
            left = 0.0
            for outcome, colour in (("win", "C2"), ("tie", "lightgrey"), ("loss", "C3")):
                share = r["winrate"][f"{outcome}_rate"]
                ax.barh(i, share, left=left, color=colour, label=outcome if i == 0 else None)
                left += share
        ax.set_yticks(range(len(with_win)), [r["label"] for r in with_win], fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_title("policy vs reference (position-swapped judging)", fontsize=10)
        ax.legend(loc="lower right", fontsize=8)
        written.append(_finish(fig, plot_dir / "winrate.png", save_figure, plt))
    with_path = [r for r in reports if r.get("pathology")]
    if with_path:
        keys = [
            "truncated_rate",
            "sycophantic_opener_rate",
            "evasion_rate",
            "degenerate_rate",
            "mean_repeated_3gram_fraction",
        ]
        fig, ax = plt.subplots(figsize=(8, 3.4))
        groups = [("reference", with_path[0]["pathology"]["reference"])]
        groups += [(r["label"] if len(with_path) > 1 else "policy", r["pathology"]["policy"]) for r in with_path]
        width = 0.8 / len(groups)
        for g, (name, summary) in enumerate(groups):
            ax.bar([k + g * width for k in range(len(keys))], [summary.get(k, 0.0) for k in keys], width, label=name)
        ax.set_xticks(
            [k + 0.4 - width / 2 for k in range(len(keys))],
            ["cut off", "sycophantic", "evasive", "degenerate", "repeated 3-grams"],
            fontsize=8,
        )
        ax.set_ylim(0, 1)
        ax.set_title("pathology rates of generations", fontsize=10)
        ax.legend(fontsize=8)
        written.append(_finish(fig, plot_dir / "pathology.png", save_figure, plt))
    return written


def _finish(fig: Any, path: Path, save: Any, plt: Any) -> Path:
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)
    return path
