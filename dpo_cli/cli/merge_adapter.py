"""`dpo merge-adapter RUN_DIR_OR_ADAPTER --output DIR`: one deployable model from a LoRA/QLoRA run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from dpo_cli.cli.common import user_errors


def merge_adapter(
    source: Annotated[
        Path,
        typer.Argument(
            help="A run directory (its final/ adapter is merged) or an adapter directory (e.g. RUN/checkpoints/checkpoint-N).",
            show_default=False,
            metavar="RUN_DIR_OR_ADAPTER",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the merged model.", show_default=False)],
    dtype: Annotated[
        Literal["bfloat16", "float16", "float32"] | None,
        typer.Option(
            help="Precision of the merged weights [default: the run's model.dtype, else the base checkpoint's, else float32]."
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(help="Base model to merge into, instead of the one the adapter records.", show_default=False),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Merge even if the base differs from the one the adapter was trained on.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output directory.")] = False,
    max_shard_size: Annotated[str, typer.Option(help="Largest safetensors shard, e.g. 2GB.")] = "5GB",
    device: Annotated[
        str, typer.Option(help="Where to merge: auto (CUDA if present), cpu, cuda, cuda:1, ...")
    ] = "auto",
    trust_remote_code: Annotated[
        bool | None,
        typer.Option(
            "--trust-remote-code/--no-trust-remote-code",
            help="Run the base model's own code [default: the run's setting].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Merge a LoRA/QLoRA adapter into its base (never 4-bit), save safetensors, verify the logits."""
    from dpo_cli.merge.runner import merge_adapter as run_merge

    with user_errors():
        result = run_merge(
            source,
            output,
            dtype=dtype,
            base=base,
            force=force,
            overwrite=overwrite,
            max_shard_size=max_shard_size,
            device=device,
            trust_remote_code=trust_remote_code,
            progress=print,
        )
    for line in result.warnings:
        print(f"warning: {line}")
    print(
        f"verified: max abs logit difference {result.max_abs_diff:.3g} (tolerance {result.tolerance:g} for {result.dtype}), "
        f"mean {result.mean_abs_diff:.2g}, over {result.prompts} prompts; the adapter itself moves logits by {result.adapter_effect:.3g}"
    )
    print(f"merged model: {result.output_dir} ({len(result.shards)} safetensors shard(s), {result.dtype})")
