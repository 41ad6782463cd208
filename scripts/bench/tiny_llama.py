"""A Llama built from a config (random weights) with SmolLM2's tokenizer, saved for `from_pretrained`.

    python scripts/bench/tiny_llama.py OUT_DIR [--size cpu|gpu] [--tokenizer DIR]

`cpu` is small enough for one epoch of a few hundred real-length pairs on two CPU cores. Its
embedding covers only SmolLM2's first 8192 token ids (`CPU_VOCAB`; generate its data with
`real_length_pairs.py --max-id 8192`): off a GPU, TRL's fused LM head scores every position of a
batch, padding included, through a slow CPU fallback whose cost grows with the vocabulary
(about 5 ms per position at 49152 ids here), which would make the LM head nearly all of a CPU
run. `gpu` (~0.5B parameters, full vocabulary) is what scripts/gpu_bench.sh trains. Speed and
memory do not depend on the weights' values, so no download is needed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = ROOT / ".cache" / "models" / "smollm2-135m-instruct"

SIZES = {
    # hidden, intermediate, layers, heads, kv heads
    "cpu": (128, 512, 4, 4, 2),
    "gpu": (1024, 4096, 30, 16, 4),
}
CPU_VOCAB = 8192


def build_tiny_llama(
    out: Path,
    size: str = "cpu",
    tokenizer_dir: Path = SMOLLM2,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
) -> Path:
    """Save a randomly initialised `LlamaForCausalLM` and the tokenizer at `tokenizer_dir` to `out`.

    Args:
        device: Where the weights are initialised (`cuda` builds a 0.5B model in a second).
        dtype: Dtype the weights are saved in.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert len(tokenizer) > 1000, f"{tokenizer_dir}: tokenizer has {len(tokenizer)} tokens"  # transformers 5 trap
    hidden, intermediate, layers, heads, kv_heads = SIZES[size]
    config = LlamaConfig(
        # The GPU model keeps SmolLM2's vocabulary even with a smaller stand-in tokenizer.
        vocab_size=CPU_VOCAB if size == "cpu" else max(len(tokenizer), 49152),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    out = Path(out)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def parameter_count(size: str) -> int:
    hidden, intermediate, layers, heads, kv_heads = SIZES[size]
    vocab = CPU_VOCAB if size == "cpu" else 49152
    head_dim = hidden // heads
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    mlp = 3 * hidden * intermediate
    return layers * (attention + mlp + 2 * hidden) + vocab * hidden + hidden


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--tokenizer", type=Path, default=SMOLLM2)
    args = parser.parse_args()
    build_tiny_llama(args.out, args.size, args.tokenizer)
    print(f"{args.out}: Llama ({args.size}), {parameter_count(args.size) / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
