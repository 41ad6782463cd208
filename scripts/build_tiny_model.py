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
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpo_cli.fsio import publish_dir, staging_dir

SAMPLE = ROOT / "data" / "sample"
VOCAB_SIZE = 1024
N_POSITIONS = 512
KINDS = ("causal-lm", "seq-cls")
SPECIAL_TOKENS = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MARKER = ".complete"


def _corpus() -> list[str]:
    files = sorted(SAMPLE.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"error: no sample data in {SAMPLE}; run python scripts/make_sample_data.py")
    texts = []
    for path in files:
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
    """Train the byte-level BPE tokenizer on the sample data.

    Returns:
        A `PreTrainedTokenizerFast` with ChatML special tokens and chat template.
    """
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
        tokenizer_object=tok,
        pad_token="<|pad|>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        model_max_length=N_POSITIONS,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def is_built(output_dir: Path, kind: str = "causal-lm") -> bool:
    """Whether `output_dir` holds a complete build of `kind` (the marker is written last)."""
    marker = Path(output_dir) / MARKER
    return marker.is_file() and marker.read_text().strip() in ("", kind)


def build_tiny_model(output_dir: Path, seed: int = 0, kind: str = "causal-lm", force: bool = False) -> Path:
    """Build the tiny model and its tokenizer into `output_dir`, atomically.

    Args:
        output_dir: Where the `from_pretrained` directory goes; built beside it, then renamed.
        seed: Seeds the weight initialisation; the same seed gives the same weights.
        kind: "causal-lm" (`GPT2LMHeadModel`) or "seq-cls" (`GPT2ForSequenceClassification`,
            one output, for reward models).
        force: Rebuild even if `output_dir` already holds a complete build.

    Returns:
        `output_dir`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, not {kind!r}")
    output_dir = Path(output_dir)
    if is_built(output_dir, kind) and not force:
        return output_dir

    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    torch.manual_seed(seed)
    tokenizer = train_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=N_POSITIONS,
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
    staging = staging_dir(output_dir)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _verify(staging, len(tokenizer))
        (staging / MARKER).write_text(kind)
        publish_dir(staging, output_dir)  # the umask's modes; an earlier model replaced only at the last moment
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return output_dir


def _verify(saved: Path, trained_size: int) -> None:
    """Reload from disk and fail loudly on the traps that once gave a 1-token vocabulary."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(saved)
    config = AutoConfig.from_pretrained(saved)
    assert len(tokenizer) == trained_size > 500, f"tokenizer vocabulary is {len(tokenizer)} after reload"
    assert config.vocab_size == len(tokenizer), f"model vocab {config.vocab_size} != tokenizer {len(tokenizer)}"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id, "pad and eos must differ"
    messages = [{"role": "user", "content": "How do I fix a squeaky door?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": "Add a drop of oil."}], tokenize=True, return_dict=True
    )
    n = len(prompt["input_ids"])
    assert full["input_ids"][:n] == prompt["input_ids"], "templated prompt is not a prefix of prompt+response"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--kind", choices=KINDS, default="causal-lm")
    parser.add_argument("--seed", type=int, default=0, help="seed for the weight initialisation")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build is there")
    args = parser.parse_args()
    if is_built(args.output, args.kind) and not args.force:
        print(f"{args.output}: already built ({args.kind}); --force rebuilds it")
        return
    build_tiny_model(args.output, seed=args.seed, kind=args.kind, force=args.force)
    print(f"{args.output}: built ({args.kind})")


if __name__ == "__main__":
    main()
