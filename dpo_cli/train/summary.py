"""The human-readable summary `dpo train` prints at the end of a run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dpo_cli.train.run import RunResult


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


def print_run_summary(result: RunResult) -> None:
    s = result.summary
    what = "model" if s.get("mode") == "full" else "adapter"
    lines = [
        "",
        f"run        {result.output_dir}  ({s.get('mode')}, {s.get('steps')} steps)",
        f"loss       {_num(s.get('initial_loss'))} at step 1 -> {_num(s.get('final_loss'))}"
        + (f"  (expected at step 0: {_num(s.get('expected_initial_loss'))})" if s.get("expected_initial_loss") else ""),
    ]
    lines += _data_lines(s.get("data"))
    if "eval_reward_accuracy" in s:
        lines.append(
            f"held-out   reward accuracy {_num(s.get('eval_reward_accuracy'), 3)}, "
            f"margin {_num(s.get('eval_reward_margin'), 3)}, loss {_num(s.get('eval_loss'))}"
        )
    for name, row in (s.get("eval_by_source") or {}).items():
        lines.append(
            f"  {name:<8} reward accuracy {_num(row.get('reward_accuracy'), 3)}, "
            f"margin {_num(row.get('reward_margin'), 3)}, loss {_num(row.get('loss'))} ({row.get('rows')} rows)"
        )
    lines += [
        f"{what:<10} {result.final_dir}",
        f"metrics    {s.get('metrics')}",
        f"plots      {', '.join(str(p) for p in result.plots)}",
        *([f"page       {page}"] if (page := result.output_dir / "report.html").is_file() else []),
        *([f"card       {card}"] if (card := result.final_dir / "README.md").is_file() else []),
        "diagnosis",
    ]
    lines += [f"  {f.level:<8} {f.message}" for f in result.findings] or ["  nothing to report"]
    print("\n".join(lines))


def _data_lines(data: dict[str, Any] | None) -> list[str]:
    """`data  253 train rows (3 dropped: response_cut_off 3), 50 eval rows; rejects: ...`."""
    if not data:
        return []
    parts = []
    for split in ("train", "eval"):
        rows = data.get(f"{split}_rows")
        if not rows and split == "eval":
            continue
        text = f"{rows} {split} rows"
        dropped = (data.get("dropped") or {}).get(split)
        if dropped and dropped["dropped"]:
            reasons = ", ".join(f"{c} {n}" for c, n in dropped["dropped_by"].items())
            text += f" ({dropped['dropped']} of {dropped['rows']} dropped: {reasons})"
        parts.append(text)
    lines = [f"data       {', '.join(parts)}"]
    for split, sources in (data.get("sources") or {}).items():
        if len(sources) > 1:
            lines.append(f"           {split} mixture: " + ", ".join(f"{s['name']} {s['taken']}" for s in sources))
    if data.get("dropped") and any(d["dropped"] for d in data["dropped"].values()):
        lines.append(f"           dropped rows and why: {data.get('rejects')}")
    return lines
