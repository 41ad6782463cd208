"""What a run leaves for people: the model card, `report.html`, and the push to the Hub.

Everything here is built from the files of a run directory (`config.yaml`, `run.json`,
`summary.json`, `metrics.jsonl`, `plots/`, `eval/report.json`), so `dpo eval` and
`dpo sweep-beta` can rewrite the documents after training without the trainer in memory.

Modules: `record` (reading a run directory), `card` (the Hub model card), `html`
(`report.html`, one self-contained file), `hub` (pushing `final/` with its card), `render`
(the Jinja2 templates in `templates/`).
"""

from __future__ import annotations

from pathlib import Path


def refresh_run_documents(run_dir: Path) -> list[Path]:
    """Rewrite the model card in `RUN/final/` and `RUN/report.html` from the run's files.

    Returns:
        The paths written.
    """
    from dpo_cli.publish.card import write_run_card
    from dpo_cli.publish.html import write_run_report
    from dpo_cli.publish.record import read_run

    record = read_run(Path(run_dir))
    return [write_run_card(record), write_run_report(record)]


def refresh_if_finished(run_dir: Path) -> list[Path]:
    """`refresh_run_documents` for a finished run directory; nothing for anything else."""
    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").is_file() or not (run_dir / "final").is_dir():
        return []
    return refresh_run_documents(run_dir)
