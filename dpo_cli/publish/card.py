"""The model card (`README.md`) of a run's `final/`, of a merged model, and of a sweep's winner.

The metadata is built with `huggingface_hub.ModelCardData` (valid Hub keys: `base_model` and
`datasets` only where they are Hub ids, `library_name`, `pipeline_tag`, `tags`) and the whole
card is parsed back by `huggingface_hub.ModelCard`, so a card that the Hub would reject fails
here. The text states what a reader needs to trust or reproduce the weights: base model, data
and rows kept, algorithm and settings, held-out results, diagnosis, curves, library versions,
the command, and the resolved config (credentials redacted).
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path
from typing import Any

from dpo_cli.config.algorithms import ALGORITHMS
from dpo_cli.fsio import atomic_write_text, read_json
from dpo_cli.publish.record import RunRecord, read_run
from dpo_cli.publish.render import render

CARD_FILE = "README.md"
PLOTS_DIR = "plots"  # inside final/ (or the merged model): the card's images travel with the weights

ALGORITHM_NAMES = {name: a.label for name, a in ALGORITHMS.items()}
MODE_NAMES = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA (4-bit base + LoRA)"}


# --------------------------------------------------------------------------- Markdown


def code(value: Any) -> str:
    """`value` as an inline code span, safe inside a table cell and free of markup."""
    text = " ".join(str(value).split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|")


def cell(text: Any) -> str:
    """Plain text on one line, for a table cell or a list item: no markup, no stray pipes."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def fenced(text: str, lang: str = "") -> str:
    """A fenced block that `text` cannot close early, whatever backticks it holds."""
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.1f}" if value.is_integer() and abs(value) < 1e6 else f"{value:.{digits}g}"
    return str(value)


# --------------------------------------------------------------------------- facts


def _loss_text(rec: RunRecord) -> str:
    hp = rec.provenance.get("hyperparameters") or {}
    loss = hp.get("loss_type") or rec.cfg.loss_types()
    losses = [loss] if isinstance(loss, str) else list(loss)
    weights = hp.get("loss_weights")
    if weights and len(weights) == len(losses):
        return " + ".join(f"{w:g} x {code(name)}" for name, w in zip(losses, weights, strict=True))
    return " + ".join(code(name) for name in losses)


def _hyperparameter(rec: RunRecord, name: str) -> Any:
    hp = rec.provenance.get("hyperparameters") or {}
    return hp[name] if name in hp else getattr(rec.cfg.training, name, None)


def card_data(rec: RunRecord, *, merged: bool = False) -> Any:
    """The card's Hub metadata."""
    from huggingface_hub import ModelCardData

    base = rec.provenance.get("base_model_hub_id")
    datasets = [d for d in dict.fromkeys((rec.provenance.get("dataset_hub_ids") or {}).values()) if d]
    adapter = rec.adapter and not merged
    tags = [
        "dpo-cli",
        "trl",
        rec.cfg.algorithm,
        *([] if merged else [rec.cfg.mode]),
        *(["merged-lora"] if merged else []),
    ]
    extra = {"base_model_relation": "adapter" if adapter else "finetune"} if base else {}
    return ModelCardData(
        base_model=base,
        datasets=datasets or None,
        library_name="peft" if adapter else "transformers",
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys(tags)),
        **extra,
    )


def _base_rows(rec: RunRecord) -> list[tuple[str, str]]:
    model = rec.cfg.model
    rows = [("model", code(model.name_or_path) + ("" if rec.provenance.get("base_model_hub_id") else " (local path)"))]
    if model.revision:
        rows.append(("revision", code(model.revision)))
    if model.adapter:
        rows.append(("continued adapter", code(model.adapter) + " (trainable; the reference is a frozen copy of it)"))
    rows.append(("dtype", code(model.dtype)))
    rows.append(("reference", _reference_text(rec)))
    return rows


def _reference_text(rec: RunRecord) -> str:
    ref = rec.cfg.reference
    if not ALGORITHMS[rec.cfg.algorithm].reference or ref.kind == "none":
        return "none (the loss is reference-free)"
    if ref.kind == "model" and ref.name_or_path:
        return code(ref.name_or_path)
    if rec.cfg.model.adapter:
        return "a frozen copy of the continued adapter on the base"
    if rec.cfg.mode != "full":
        return "the base model (adapter disabled)"
    if _hyperparameter(rec, "precompute_ref_log_probs"):
        return "the starting model, its log-probs computed once before training"
    return "a frozen copy of the starting model"


def _data_rows(rec: RunRecord) -> list[list[str]]:
    rows = []
    for s in rec.data_splits():
        source = code(s.source) + (f" ([Hub](https://huggingface.co/datasets/{s.hub_id}))" if s.hub_id else "")
        if s.rows_dropped is None:
            dropped = "not recorded"
        else:
            reasons = ", ".join(f"{count} {cell(reason)}" for reason, count in s.dropped_reasons.items())
            dropped = str(s.rows_dropped) + (f" ({reasons})" if reasons else "")
        rows.append([s.split, source, num(s.rows_kept), dropped, cell("; ".join(s.notes)) or "-"])
    return rows


def _training_rows(rec: RunRecord) -> list[tuple[str, str]]:
    hp = rec.provenance.get("hyperparameters") or {}
    t, s = rec.cfg.training, rec.summary
    rows = [
        ("algorithm", f"{ALGORITHM_NAMES.get(rec.cfg.algorithm, rec.cfg.algorithm)} (TRL)"),
        ("mode", MODE_NAMES.get(rec.cfg.mode, rec.cfg.mode)),
        ("loss", _loss_text(rec)),
        ("beta", num(_hyperparameter(rec, "beta"))),
        ("learning rate", num(_hyperparameter(rec, "learning_rate"))),
        (
            "schedule",
            code(_hyperparameter(rec, "lr_scheduler_type")) + f", warm-up {num(_hyperparameter(rec, 'warmup_steps'))}",
        ),
        ("optimizer steps", num(s.get("steps"))),
    ]
    per_device = _hyperparameter(rec, "per_device_train_batch_size")
    accumulation = _hyperparameter(rec, "gradient_accumulation_steps") or 1
    world = hp.get("world_size", 1)
    if isinstance(per_device, int):
        rows.append(
            (
                "batch",
                (
                    f"{per_device} per device x {accumulation} accumulation x {world} process(es) = "
                    f"{per_device * accumulation * world} pairs per step"
                ),
            )
        )
    rows.append(("max length", num(_hyperparameter(rec, "max_length"))))
    precision = "bf16" if hp.get("bf16") else "fp16" if hp.get("fp16") else "fp32"
    rows.append(("mixed precision", precision if hp else "see the config"))
    for name, label in (
        ("label_smoothing", "label smoothing"),
        ("desirable_weight", "desirable weight"),
        ("undesirable_weight", "undesirable weight"),
        ("simpo_gamma", "SimPO gamma"),
        ("cpo_alpha", "CPO alpha"),
    ):
        value = hp[name] if name in hp else getattr(t, name, None)  # present only where the algorithm has it
        if value is not None and not (name == "label_smoothing" and value == 0):
            rows.append((label, num(value)))
    if _hyperparameter(rec, "precompute_ref_log_probs"):
        rows.append(("reference log-probs", "precomputed once before training"))
    rows.append(("seed", num(_hyperparameter(rec, "seed"))))
    return rows


def _adapter_rows(rec: RunRecord) -> list[tuple[str, str]]:
    rows = []
    if rec.cfg.lora is not None:
        lora = rec.cfg.lora
        targets = lora.target_modules if isinstance(lora.target_modules, str) else ", ".join(lora.target_modules)
        rows += [
            ("rank r", str(lora.r)),
            ("lora_alpha", str(lora.lora_alpha)),
            ("lora_dropout", num(lora.lora_dropout)),
            ("target modules", code(targets)),
            ("bias", code(lora.bias)),
        ]
        if lora.modules_to_save:
            rows.append(("modules saved in full", code(", ".join(lora.modules_to_save))))
        if lora.use_rslora:
            rows.append(("scaling", "rank-stabilised (rsLoRA)"))
        if lora.use_dora:
            rows.append(("DoRA", "yes"))
    q = rec.cfg.quantization
    if q is not None:
        rows += [
            (
                "base weights",
                f"4-bit {code(q.bnb_4bit_quant_type)}"
                + (", double quantization" if q.bnb_4bit_use_double_quant else ""),
            ),
            ("compute dtype", code(q.bnb_4bit_compute_dtype)),
        ]
    return rows


def result_rows(rec: RunRecord) -> list[tuple[str, str]]:
    """Held-out and training figures of the run (shared with `report.html`)."""
    s, last = rec.summary, rec.last_eval
    rows = []
    if "eval_loss" in s:
        rows += [
            ("held-out pairs", num(rec.info.get("eval_rows"))),
            ("held-out reward accuracy", num(s.get("eval_reward_accuracy"))),
            ("held-out reward margin", num(s.get("eval_reward_margin"))),
            ("held-out loss", num(s.get("eval_loss"))),
        ]
        for key, label in (
            ("eval_rewards/chosen", "held-out reward, chosen"),
            ("eval_rewards/rejected", "held-out reward, rejected"),
            ("eval_logps/chosen", "held-out log-prob, chosen"),
            ("eval_logps/rejected", "held-out log-prob, rejected"),
        ):
            if key in last:
                rows.append((label, num(last[key])))
    expected = s.get("expected_initial_loss")
    rows.append(
        (
            "training loss, step 1",
            num(s.get("initial_loss")) + (f" (closed form at step 0: {num(expected)})" if expected else ""),
        )
    )
    rows.append(("training loss, last step", num(s.get("final_loss"))))
    if s.get("final_train_reward_accuracy") is not None:
        rows.append(("training reward accuracy, last step", num(s.get("final_train_reward_accuracy"))))
    return rows


def _eval_markdown(report: dict[str, Any] | None) -> str:
    """`dpo eval`'s tables, as `dpo eval` writes them in its own report."""
    if not report:
        return ""
    from dpo_cli.evaluation.report import pathology_lines, preference_lines, winrate_line, winrate_notes

    parts = []
    if report.get("preference"):
        pairs = report["preference"]["policy"].get("pairs")
        parts += [
            f"### Preference metrics ({num(pairs)} held-out pairs, policy against its reference)",
            "",
            *preference_lines(report["preference"]),
        ]
    if report.get("alignment_tax"):
        from dpo_cli.evaluation.tax import lines as tax_lines

        parts += ["", "### Alignment tax (lm-evaluation-harness)", "", *tax_lines(report["alignment_tax"])]
    if report.get("winrate"):
        w = report["winrate"]
        parts += [
            "",
            f"### Win rate against the reference (judge: {code(report.get('judge') or 'n/a')})",
            "",
            winrate_line(w),
            "",
            *[f"- {n}" for n in winrate_notes(w)],
        ]
    if report.get("pathology"):
        p = report["pathology"]
        parts += [
            "",
            f"### Pathology checks ({num(p['policy'].get('n'))} generations each)",
            "",
            *pathology_lines(p["table"]),
            "",
            *([f"- warning: {f}" for f in p["findings"]] or ["- no pathology flagged"]),
        ]
    return "\n".join(parts)


def _usage(rec: RunRecord, where: str, merged: bool) -> str:
    if rec.adapter and not merged:
        return fenced(
            "from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n\n"
            f"model = AutoPeftModelForCausalLM.from_pretrained({where!r})\n"
            f"tokenizer = AutoTokenizer.from_pretrained({where!r})\n"
            "# one deployable model instead of base + adapter: dpo merge-adapter RUN_DIR --output DIR",
            "python",
        )
    return fenced(
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f"model = AutoModelForCausalLM.from_pretrained({where!r})\n"
        f"tokenizer = AutoTokenizer.from_pretrained({where!r})",
        "python",
    )


def _selection(rec: RunRecord) -> dict[str, Any] | None:
    sweep = rec.sweep
    if sweep is None:
        return None
    from dpo_cli.sweep.report import COLUMNS, format_cell

    columns = [(k, title) for k, title in COLUMNS if k != "final_dir"]
    rows = []
    for row in sweep.rows:
        cells = [cell(format_cell(row.get(k))) for k, _ in columns]
        if row["point"] == sweep.winner:
            cells[0] = f"**{cells[0]}** (chosen)"
        rows.append(cells)
    if sweep.chosen:
        verdict = f"This run is the point `dpo sweep-beta` chose among {len(sweep.rows)}."
    elif sweep.winner:
        verdict = f"This run is one of {len(sweep.rows)} points of a sweep; the chosen point is {code(sweep.winner)}."
    else:
        verdict = f"This run is one of {len(sweep.rows)} points of a sweep; no point qualified under the rule."
    return {
        "verdict": verdict,
        "rule": cell(sweep.rule),
        "swept": sweep.swept,
        "header": [t for _, t in columns],
        "rows": rows,
    }


def _versions(rec: RunRecord) -> list[tuple[str, str]]:
    from dpo_cli import __version__

    versions = {"dpo-cli": __version__, **(rec.info.get("versions") or {})}
    return [(name, code(v)) for name, v in versions.items()]


def _copy_images(rec: RunRecord, dest: Path) -> dict[str, list[str]]:
    """Copy the run's PNGs beside the card (the Hub shows images from the repository only)."""
    plot_dir = dest / PLOTS_DIR
    if plot_dir.exists():
        shutil.rmtree(plot_dir)
    groups: dict[str, list[str]] = {"curves": [], "eval": [], "sweep": []}
    sources = [("curves", p) for p in rec.curves] + [("eval", p) for p in rec.eval_plots]
    if rec.sweep and rec.sweep.plot:
        sources.append(("sweep", rec.sweep.plot))
    for group, path in sources:
        name = f"eval_{path.name}" if group == "eval" else path.name
        plot_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, plot_dir / name)
        groups[group].append(f"{PLOTS_DIR}/{name}")
    return groups


# --------------------------------------------------------------------------- cards


def build_card(
    rec: RunRecord, dest: Path, *, merge_info: dict[str, Any] | None = None, merge_command: str | None = None
) -> Any:
    """The `huggingface_hub.ModelCard` of the run, for weights that will sit in `dest`.

    Args:
        rec: The run.
        dest: Directory the card is written to (its images are copied there).
        merge_info: `merge_info.json` of a merged model, when the card is for one.
        merge_command: The `dpo merge-adapter` command that made it.
    """
    from huggingface_hub import ModelCard

    merged = merge_info is not None
    hub_id = rec.provenance.get("hub_model_id")
    algorithm = ALGORITHM_NAMES.get(rec.cfg.algorithm, rec.cfg.algorithm)
    what = (
        "model merged from a LoRA adapter" if merged else "LoRA adapter" if rec.adapter else "model (full fine-tuning)"
    )
    base = code(rec.cfg.model.name_or_path)
    train_rows = rec.info.get("train_rows")
    intro = (
        f"A {what} of {base}, trained with {algorithm} ({_loss_text(rec)} loss, beta {num(_hyperparameter(rec, 'beta'))}) "
        f"on {num(train_rows)} preference rows by [dpo-cli](https://pypi.org/project/dpo-cli/) on TRL."
    )
    summary = rec.summary
    findings = summary.get("diagnosis") or []
    context = {
        "card_data": card_data(rec, merged=merged).to_yaml(),
        "title": cell(hub_id or (f"{rec.run_dir.name} (merged)" if merged else rec.run_dir.name)),
        "intro": intro,
        "base_rows": _base_rows(rec),
        "data_rows": _data_rows(rec),
        "training_rows": _training_rows(rec),
        "adapter_title": "QLoRA" if rec.cfg.mode == "qlora" else "LoRA",
        "adapter_rows": _adapter_rows(rec),
        "has_eval_split": "eval_loss" in summary,
        "result_rows": result_rows(rec),
        "eval_markdown": _eval_markdown(rec.eval_report),
        "findings": [(f.get("level", ""), cell(f.get("message", ""))) for f in findings],
        "images": _copy_images(rec, dest),
        "selection": _selection(rec),
        "merge": _merge_rows(merge_info) if merged else None,
        "usage": _usage(rec, hub_id or ("PATH/TO/MERGED" if merged else "PATH/TO/RUN/final"), merged),
        "command": fenced("\n".join(_commands(rec, merge_command)), "bash"),
        "versions": _versions(rec),
        "config": fenced(rec.config_text, "yaml"),
    }
    return ModelCard(render("model_card.md", **context))


def _commands(rec: RunRecord, merge_command: str | None) -> list[str]:
    lines = ["# the command that trained this run"]
    lines.append(rec.provenance.get("command") or f"dpo train {rec.info.get('config') or 'CONFIG'}")
    lines += [
        "# or with the resolved config below, saved as config.yaml (the run directory has it):",
        "dpo train config.yaml --set output_dir=NEW_RUN_DIR",
    ]
    if merge_command:
        lines += ["# then the merge", merge_command]
    return lines


def _merge_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    v = info.get("verification") or {}
    return [
        ("adapter", code(info.get("adapter"))),
        (
            "merged into",
            code(info.get("base")) + (f" at revision {code(info['revision'])}" if info.get("revision") else ""),
        ),
        ("dtype", code(info.get("dtype"))),
        (
            "verification",
            (
                f"max abs logit difference {num(v.get('max_abs_diff'), 3)} against the adapter on its base "
                f"(tolerance {num(v.get('tolerance'), 3)}), over {num(v.get('prompts'))} prompts; "
                f"the adapter itself moves logits by {num(v.get('adapter_effect'), 3)}"
            ),
        ),
        *(
            [("note", "merged with --force into a base that differs from the recorded one")]
            if info.get("forced")
            else []
        ),
        *(
            [
                (
                    "note",
                    (
                        f"merged from {code(Path(str(info.get('adapter'))).name)}, not the run's final weights: the "
                        "results below describe the run's `final/`"
                    ),
                )
            ]
            if info.get("adapter") and Path(str(info["adapter"])).name != "final"
            else []
        ),
    ]


def write_run_card(rec: RunRecord) -> Path:
    """Write `RUN/final/README.md` (replacing PEFT's template) and its images; returns the card's path."""
    card = build_card(rec, rec.final_dir)
    path = rec.final_dir / CARD_FILE
    atomic_write_text(path, str(card))
    return path


def write_merged_card(model_dir: Path, *, run_dir: Path | None, merge_command: str) -> Path:
    """The card of a merged model in `model_dir`, from its `merge_info.json` and the adapter's run.

    Without the adapter's run (a bare adapter directory was merged) the card states the merge
    and the base only.
    """
    from huggingface_hub import ModelCard, ModelCardData

    from dpo_cli.publish.record import hub_model_id

    model_dir = Path(model_dir)
    info = read_json(model_dir / "merge_info.json")
    if run_dir is not None and (Path(run_dir) / "summary.json").is_file():
        card = build_card(read_run(Path(run_dir)), model_dir, merge_info=info, merge_command=merge_command)
    else:
        base = hub_model_id(info.get("base"))
        data = ModelCardData(
            base_model=base,
            library_name="transformers",
            pipeline_tag="text-generation",
            tags=["dpo-cli", "merged-lora"],
            **({"base_model_relation": "finetune"} if base else {}),
        )
        card = ModelCard(
            render(
                "merged_card.md",
                card_data=data.to_yaml(),
                title=cell(model_dir.name),
                base=code(info.get("base")),
                merge=_merge_rows(info),
                usage=fenced(
                    "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                    "model = AutoModelForCausalLM.from_pretrained('PATH/TO/MERGED')\n"
                    "tokenizer = AutoTokenizer.from_pretrained('PATH/TO/MERGED')",
                    "python",
                ),
                command=fenced(merge_command, "bash"),
                versions=[(name, code(v)) for name, v in _installed_versions().items()],
            )
        )
    path = model_dir / CARD_FILE
    atomic_write_text(path, str(card))
    return path


def _installed_versions() -> dict[str, str]:
    from dpo_cli import __version__
    from dpo_cli.doctor import installed_versions

    return {
        "dpo-cli": __version__,
        **installed_versions(("torch", "transformers", "peft", "safetensors"), python=False),
    }
