"""`dpo generate-pairs CONFIG --prompts FILE --output DIR`: sample, score and pair responses."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dpo_cli.cli.common import ConfigArg, PromptsOption, ScorerOption, SetOption, generate_overrides, user_errors
from dpo_cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, DpoError


def generate_pairs(
    config: ConfigArg,
    output: Annotated[Path, typer.Option(help="Directory for pairs.jsonl, its summary and the sample cache.")],
    prompts: PromptsOption = None,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Sample from this adapter or model directory instead of the config's model.", show_default=False
        ),
    ] = None,
    scorer: ScorerOption = None,
    set_: SetOption = None,
    overwrite: Annotated[
        bool, typer.Option(help="Rebuild finished pairs (cached samples and scores are reused).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Sample several responses per prompt, score them, and write the clear winners and losers as pairs.

    An interrupted run keeps every finished batch of samples: run the same command again to go on.
    """
    from dpo_cli.config.loader import load_config
    from dpo_cli.pairs.prompts import load_prompts
    from dpo_cli.pairs.runner import check_output, console_lines
    from dpo_cli.pairs.runner import generate_pairs as run
    from dpo_cli.pairs.sampling import make_sampler
    from dpo_cli.pairs.scoring import make_scorer

    with user_errors():
        overrides = [*(set_ or []), *generate_overrides(prompts, scorer)]
        if model is not None:
            overrides += model_overrides(model)
        cfg = load_config(config, overrides)
        if cfg.generate.prompts is None:
            raise DpoError("no prompts: pass --prompts FILE or set `generate.prompts`", exit_code=EXIT_USAGE)
        check_output(output, overwrite)
        prompt_list = load_prompts(
            cfg.generate.prompts, cfg.generate.prompt_column, limit=cfg.generate.max_prompts, key="generate.prompts"
        )
        scoring = make_scorer(cfg)
        scoring.check()
        sampler = make_sampler(cfg)
        try:
            summary = run(
                cfg, prompt_list, output, sampler=sampler, scorer=scoring, overwrite=overwrite, progress=progress
            )
        except KeyboardInterrupt:
            raise DpoError(
                f"interrupted; finished batches are cached in {output}",
                exit_code=EXIT_INTERRUPTED,
                details=["run the same command again to continue"],
            ) from None
        for line in console_lines(summary):
            print(line)


def model_overrides(path: Path) -> list[str]:
    """`--model DIR` as config overrides: an adapter continues the config's base model, a model replaces it.

    Raises:
        DpoError: The directory is missing.
    """
    if not path.is_dir():
        raise DpoError(f"--model {path}: directory not found", exit_code=EXIT_USAGE)
    if (path / "adapter_config.json").is_file():
        return [f"model.adapter={path}", "lora=null"]  # the adapter brings its own LoRA settings
    return [f"model.name_or_path={path}", "model.adapter=null"]
