"""`dpo plan`'s arithmetic: weights, 4-bit sizes, LoRA counts, ZeRO partitioning, activations."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dpo_cli.config.loader import load_config
from dpo_cli.errors import DpoError
from dpo_cli.planning.arch import known_config, load_model_shape, shape_from_config
from dpo_cli.planning.memory import NF4_DOUBLE_QUANT_BITS, estimate_memory, lora_params, run_shape, weight_bytes
from dpo_cli.planning.plan import make_plan, parse_size

ROOT = Path(__file__).resolve().parents[2]
MISTRAL = ROOT / "configs" / "mistral.yaml"


def mistral(*overrides: str):
    return load_config(MISTRAL, list(overrides))


def test_shipped_mistral_config_has_the_published_parameter_count():
    shape = known_config("mistralai/Mistral-7B-Instruct-v0.3")
    assert shape is not None
    assert shape.params == 7_248_023_552  # Mistral-7B v0.3's published count
    assert known_config("distilgpt2").params == 81_912_576  # 6 blocks, 1024 positions, tied head


def test_bf16_weights_are_two_bytes_per_parameter():
    shape = shape_from_config(
        {
            "model_type": "llama",
            "hidden_size": 4096,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "intermediate_size": 11008,
            "vocab_size": 32000,
            "tie_word_embeddings": False,
        },
        "llama-2-7b",
    )
    run = run_shape(mistral("quantization=null", "lora=null", "model.dtype=bfloat16"), shape)
    assert shape.params == 6_738_415_616  # Llama-2-7B
    assert weight_bytes(shape, run) == 2 * shape.params  # ~13.5e9 bytes


def test_four_bit_weights_with_double_quant():
    cfg = mistral()
    shape = known_config("mistralai/Mistral-7B-Instruct-v0.3")
    packed = weight_bytes(shape, run_shape(cfg, shape), cfg.quantization)
    expected = shape.linear_params * NF4_DOUBLE_QUANT_BITS / 8 + (shape.embedding_params + shape.norm_params) * 4
    assert packed == pytest.approx(expected)
    assert NF4_DOUBLE_QUANT_BITS == pytest.approx(4.127, abs=1e-3)  # the QLoRA paper's figure
    assert 3.9e9 < packed < 4.9e9


def test_lora_parameter_count_for_named_and_all_linear_targets():
    shape = known_config("mistralai/Mistral-7B-Instruct-v0.3")
    all_linear = lora_params(shape, mistral())
    assert all_linear == 41_943_040  # r=16 on q,k,v,o,gate,up,down of Mistral-7B
    qv = lora_params(shape, mistral("lora.target_modules=[q_proj, v_proj]"))
    assert qv == 32 * 16 * ((4096 + 4096) + (4096 + 1024))
    gpt2 = known_config("distilgpt2")
    cfg = load_config(ROOT / "configs" / "smoke.yaml")  # r=8 on c_attn and both c_proj
    assert lora_params(gpt2, cfg) == 6 * 8 * ((768 + 2304) + (768 + 768) + (3072 + 768))


def test_zero3_divides_weights_gradients_and_optimizer_by_the_gpu_count():
    shape = known_config("mistralai/Mistral-7B-Instruct-v0.3")
    cfg = mistral("quantization=null", "lora=null", "model.dtype=bfloat16")
    one = estimate_memory(cfg, shape, gpus=1)
    eight = estimate_memory(cfg, shape, gpus=8)
    for label in ("weights", "gradients", "optimizer states", "reference model"):
        assert eight.row(label).gpu_bytes == pytest.approx(one.row(label).gpu_bytes / 8)
    # DeepSpeed mixed precision: fp32 m, v and master weights = 12 bytes per parameter.
    assert one.row("optimizer states").gpu_bytes == pytest.approx(12 * shape.params)


def test_zero2_keeps_full_weights_and_offload_moves_states_to_cpu():
    shape = known_config("mistralai/Mistral-7B-Instruct-v0.3")
    cfg = mistral(
        "quantization=null", "lora=null", "launch.deepspeed.zero_stage=2", "launch.deepspeed.offload_optimizer=cpu"
    )
    plan = estimate_memory(cfg, shape, gpus=8)
    assert plan.row("weights").gpu_bytes == 2 * shape.params
    assert plan.row("gradients").gpu_bytes == pytest.approx(6 * shape.params / 8)
    assert plan.row("optimizer states").gpu_bytes == 0
    assert plan.row("optimizer states").cpu_bytes == pytest.approx(12 * shape.params / 8)


def test_reference_model_only_when_one_is_loaded():
    shape = known_config("mistralai/Mistral-7B-Instruct-v0.3")
    online = "training.precompute_ref_log_probs=false"
    full = mistral("quantization=null", "lora=null", "launch.deepspeed=null", online)
    assert estimate_memory(full, shape, 1).row("reference model").gpu_bytes == 2 * shape.params
    pre = mistral("quantization=null", "lora=null", "training.precompute_ref_log_probs=true")
    assert estimate_memory(pre, shape, 1).row("reference model").gpu_bytes == 0
    # Unset, full fine-tuning precomputes (dpo_cli.train.speed.precompute_choice): no second copy.
    default = mistral("quantization=null", "lora=null", "launch.deepspeed=null")
    assert estimate_memory(default, shape, 1).row("reference model").gpu_bytes == 0
    assert estimate_memory(mistral(), shape, 1).row("reference model").gpu_bytes == 0  # LoRA: adapters off


def test_checkpointing_and_micro_batch_scale_activations():
    shape = known_config("mistralai/Mistral-7B-Instruct-v0.3")
    plan = estimate_memory(mistral(), shape, 8)
    assert plan.activations_with_checkpointing < plan.activations_without_checkpointing / 5
    half = estimate_memory(mistral("training.per_device_train_batch_size=1"), shape, 8)
    assert half.activations_with_checkpointing == pytest.approx(plan.activations_with_checkpointing / 2)
    # TRL's fused head never holds the full logits: one 4096 x 32768 bf16 tile.
    assert plan.row("logits (fused LM head)").gpu_bytes == 4096 * 32768 * 2
    assert plan.full_logits_bytes == 2 * 2 * 2048 * 32768 * 4


def test_suggestions_when_it_does_not_fit():
    cfg = mistral(
        "quantization=null",
        "lora=null",
        "launch.deepspeed=null",
        "training.gradient_checkpointing=false",
        "training.precompute_ref_log_probs=false",
    )
    plan = make_plan(cfg, gpus=8, gpu_memory=parse_size("80GiB"))
    assert not plan.fits
    texts = " ".join(s.text for s in plan.suggestions)
    assert "gradient checkpointing" in texts and "ZeRO-3" in texts and "precompute" in texts
    assert all(s.gpu_total < plan.memory.gpu_total for s in plan.suggestions)
    assert any(s.fits for s in plan.suggestions)


def test_parse_size_and_missing_hub_config(monkeypatch):
    assert parse_size("80GiB") == 80 * 2**30
    assert parse_size("40GB") == 40e9
    with pytest.raises(DpoError, match="expected a size"):
        parse_size("lots")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DpoError, match="--model-config"):
        load_model_shape("no-such-org/no-such-model-dpo-test")


def test_planning_never_imports_torch():
    # In a fresh interpreter: other tests in this session may have imported torch already.
    import subprocess

    code = (
        "import sys\n"
        "from dpo_cli.config.loader import load_config\n"
        "from dpo_cli.planning import memory\n"
        "import dpo_cli.cli.plan\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
