"""Build a tiny GPT-2 (distilgpt2's architecture, shrunk) and a BPE tokenizer, fully offline.

    python scripts/build_tiny_model.py --output .cache/models/tiny-gpt2 [--kind causal-lm|seq-cls] [--force]

The tokenizer is a byte-level BPE trained with `tokenizers` on the bundled sample data, with
ChatML-style special tokens and chat template, so both data formats work. The model keeps
GPT-2's module names (`c_attn`, `c_proj`), so LoRA configs written for distilgpt2 apply.
`--kind seq-cls` builds a `GPT2ForSequenceClassification` with one output (a reward model).

Known trap: in transformers 5, `GPT2TokenizerFast(vocab_file=...)` silently produced a 1-token
vocabulary (and zero gradients). The tokenizer is wrapped with
`PreTrainedTokenizerFast(tokenizer_object=...)` instead, and the vocabulary size is asserted
after reloading from disk.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
VOCAB_SIZE = 1024
SPECIAL_TOKENS = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MARKER = ".complete"


def _corpus() -> list[str]:
    texts = []
    for path in sorted(SAMPLE.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for value in row.values():
                if isinstance(value, str):
                    texts.append(value)
                elif isinstance(value, list):
                    texts.extend(m["content"] for m in value if isinstance(m, dict))
    # A little generic text so words outside the sample data still tokenize into pieces.
    texts.append("the quick brown fox jumps over the lazy dog 0123456789 , . ! ? ; : ' \" ( ) -")
    return texts


def train_tokenizer():
    """A byte-level BPE tokenizer wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_tiny_model(output_dir: Path, seed: int = 0, kind: str = "causal-lm", force: bool = False) -> Path:
    """Build the tiny model into `output_dir` (atomically) and return it."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    output_dir = Path(output_dir)
    if (output_dir / MARKER).exists() and not force:
        return output_dir
    torch.manual_seed(seed)
    tokenizer = train_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=512,
        n_embd=64,
        n_layer=2,
        n_head=2,
        n_inner=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=1,
    )
    model = GPT2ForSequenceClassification(config) if kind == "seq-cls" else GPT2LMHeadModel(config)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}."))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        reloaded = AutoTokenizer.from_pretrained(staging)
        assert len(reloaded) == len(tokenizer) > 500, f"tokenizer vocabulary is {len(reloaded)} after reload"
        assert reloaded.pad_token_id != reloaded.eos_token_id
        (staging / MARKER).write_text("")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return output_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--kind", choices=["causal-lm", "seq-cls"], default="causal-lm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build is there")
    args = parser.parse_args()
    existed = (args.output / MARKER).exists()
    build_tiny_model(args.output, seed=args.seed, kind=args.kind, force=args.force)
    print(f"{args.output}: {'already built' if existed and not args.force else 'built'} ({args.kind})")


if __name__ == "__main__":
    main()
