"""`report.html`: one self-contained page per run, and one per sweep.

The page needs nothing but itself: styles inline, every plot embedded as a base64 PNG `data:`
URI, no script, no font or stylesheet to fetch, so it opens offline, from a mail attachment or
a CI artifact. Every value that comes from the config or the data is escaped by the template
engine (Jinja2 autoescaping), so a `<script>` in a config value shows as text.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from dpo_cli.fsio import atomic_write_text
from dpo_cli.publish.record import RunRecord, SweepContext
from dpo_cli.publish.render import render

REPORT_FILE = "report.html"

CURVE_TITLES = {
    "loss.png": "Loss",
    "reward_margins.png": "Reward margin (chosen - rejected)",
    "reward_accuracy.png": "Reward accuracy",
    "rewards.png": "Chosen vs rejected rewards",
}


def data_uri(path: Path) -> str:
    """A PNG file as a `data:` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def markdown_table(lines: list[str]) -> dict[str, Any]:
    """A Markdown table written by `dpo eval` (`| a | b |` rows) as a header and rows of cells."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.strip().startswith("|")]
    body = [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
    return {"header": rows[0] if rows else [], "rows": body}


def _figure(path: Path, title: str) -> dict[str, str]:
    return {"title": title, "src": data_uri(path)}


def _eval_context(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if not report:
        return None
    from dpo_cli.evaluation.report import pathology_lines, preference_lines, winrate_line, winrate_notes

    out: dict[str, Any] = {"tables": [], "notes": [], "winrate": None}
    if report.get("preference"):
        pairs = report["preference"]["policy"].get("pairs")
        out["tables"].append(
            {
                "title": f"Preference metrics ({pairs} held-out pairs)",
                **markdown_table(preference_lines(report["preference"])),
            }
        )
    if report.get("alignment_tax"):
        from dpo_cli.evaluation.tax import lines as tax_lines

        out["tables"].append(
            {"title": "Alignment tax (lm-evaluation-harness)", **markdown_table(tax_lines(report["alignment_tax"]))}
        )
    if report.get("winrate"):
        out["winrate"] = {
            "judge": report.get("judge") or "",
            "line": winrate_line(report["winrate"]),
            "notes": winrate_notes(report["winrate"]),
        }
    elif report.get("judge_skipped"):
        out["notes"].append(f"Win rate {report['judge_skipped']}")
    if report.get("pathology"):
        p = report["pathology"]
        out["tables"].append(
            {
                "title": f"Pathology checks ({p['policy'].get('n')} generations each)",
                **markdown_table(pathology_lines(p["table"])),
            }
        )
        out["notes"] += [f"warning: {f}" for f in p["findings"]] or ["no pathology flagged"]
    return out


def _settings(rec: RunRecord) -> list[tuple[str, str]]:
    rows = [("algorithm", rec.cfg.algorithm), ("mode", rec.cfg.mode), ("base model", rec.cfg.model.name_or_path)]
    hp = rec.provenance.get("hyperparameters") or {
        k: getattr(rec.cfg.training, k)
        for k in ("beta", "learning_rate", "max_length", "seed")
        if hasattr(rec.cfg.training, k)
    }
    rows += [(k, _text(v)) for k, v in hp.items() if v is not None]
    if rec.cfg.lora is not None:
        rows += [
            (f"lora.{k}", _text(v)) for k, v in rec.cfg.lora.model_dump(mode="json").items() if v not in (None, False)
        ]
    if rec.cfg.quantization is not None:
        rows += [(f"quantization.{k}", _text(v)) for k, v in rec.cfg.quantization.model_dump(mode="json").items()]
    return rows


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def run_report(rec: RunRecord) -> str:
    """The HTML of one run's report."""
    from dpo_cli.publish.card import result_rows

    splits = [
        {
            "split": s.split,
            "source": s.source,
            "hub_id": s.hub_id,
            "kept": s.rows_kept,
            "dropped": "not recorded" if s.rows_dropped is None else s.rows_dropped,
            "reasons": s.dropped_reasons,
            "notes": s.notes,
        }
        for s in rec.data_splits()
    ]
    from dpo_cli.publish.card import ALGORITHM_NAMES, MODE_NAMES, num

    card = rec.final_dir / "README.md"
    s = rec.summary
    headline = [("steps", num(s.get("steps")))]
    if "eval_loss" in s:
        headline += [
            ("held-out reward accuracy", num(s.get("eval_reward_accuracy"), 3)),
            ("held-out reward margin", num(s.get("eval_reward_margin"), 3)),
            ("held-out loss", num(s.get("eval_loss"), 4)),
        ]
    else:
        headline += [("final training loss", num(s.get("final_loss"), 4))]
    return render(
        "run_report.html",
        title=rec.run_dir.name,
        what=f"{ALGORITHM_NAMES.get(rec.cfg.algorithm, rec.cfg.algorithm)}, {MODE_NAMES.get(rec.cfg.mode, rec.cfg.mode)}",
        base=rec.cfg.model.name_or_path,
        headline=headline,
        status=rec.info.get("status", "completed"),
        started=rec.info.get("started"),
        finished=rec.info.get("finished"),
        generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        command=rec.provenance.get("command") or "",
        results=result_rows(rec),
        findings=rec.summary.get("diagnosis") or [],
        curves=[_figure(p, CURVE_TITLES.get(p.name, p.stem)) for p in rec.curves],
        evaluation=_eval_context(rec.eval_report),
        eval_figures=[_figure(p, p.stem) for p in rec.eval_plots],
        splits=splits,
        settings=_settings(rec),
        versions=list((rec.info.get("versions") or {}).items()),
        sweep=_sweep_note(rec.sweep),
        card=f"final/{card.name}" if card.is_file() else None,
        config=rec.config_text,
    )


def _sweep_note(sweep: SweepContext | None) -> dict[str, Any] | None:
    if sweep is None:
        return None
    return {"chosen": sweep.chosen, "winner": sweep.winner, "points": len(sweep.rows), "rule": sweep.rule}


def write_run_report(rec: RunRecord) -> Path:
    """Write `RUN/report.html`; returns its path."""
    path = rec.run_dir / REPORT_FILE
    atomic_write_text(path, run_report(rec))
    return path


def write_sweep_report(
    sweep_dir: Path,
    rows: list[dict[str, Any]],
    winner: dict[str, Any] | None,
    rule: str,
    swept: str | None,
    plot: Path | None,
) -> Path:
    """Write `SWEEP_DIR/report.html`: the table, the plot, the rule and the choice."""
    from dpo_cli.sweep.report import COLUMNS, format_cell

    columns = [(k, t) for k, t in COLUMNS if k != "final_dir"]
    table = []
    for row in rows:
        point = row["point"]
        link = f"{point}/{REPORT_FILE}" if (sweep_dir / point / REPORT_FILE).is_file() else None
        table.append(
            {
                "point": point,
                "link": link,
                "chosen": bool(winner and point == winner["point"]),
                "cells": [format_cell(row.get(k)) for k, _ in columns[1:]],
                "error": str(row.get("error") or "").splitlines()[0] if row.get("error") else "",
            }
        )
    page = render(
        "sweep_report.html",
        title=sweep_dir.name,
        generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        swept=swept or "",
        rule=rule,
        winner=winner,
        header=[t for _, t in columns],
        table=table,
        figure=_figure(plot, "Held-out metrics against beta") if plot is not None and plot.is_file() else None,
    )
    path = sweep_dir / REPORT_FILE
    atomic_write_text(path, page)
    return path
