"""Real DPO training on the tiny offline model: full fine-tuning, LoRA and QLoRA."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dpo_cli.config.loader import load_config
from dpo_cli.rundir import read_metrics
from dpo_cli.train.run import train
from tests.conftest import ROOT, SAMPLE, smoke_overrides

pytestmark = pytest.mark.integration

SMOKE = ROOT / "configs" / "smoke.yaml"
LN2 = math.log(2)
# Measured on the bundled data after 20 LoRA steps: held-out accuracy 0.9-1.0 (seeds 0-2);
# chance is 0.5 and an untrained adapter scores 0.
MIN_HELD_OUT_ACCURACY = 0.75


def run(tiny_model_dir: Path, out: Path, *extra: str):
    cfg = load_config(SMOKE, smoke_overrides(tiny_model_dir, out, *extra))
    return cfg, train(cfg)


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lora"
    return run(tiny_model_dir, out)


def test_lora_run_directory_is_complete(lora_run) -> None:
    cfg, result = lora_run
    out = result.output_dir
    for name in ("config.yaml", "run.json", "metrics.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    assert (result.final_dir / "adapter_config.json").is_file()
    assert (result.final_dir / "adapter_model.safetensors").is_file()
    assert (result.final_dir / "tokenizer.json").is_file()
    assert {p.name for p in result.plots} == {"loss.png", "reward_margins.png", "reward_accuracy.png", "rewards.png"}
    assert all(p.stat().st_size > 1000 for p in result.plots)
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    assert load_config(out / "config.yaml").training.beta == cfg.training.beta  # the resolved config reloads


def test_lora_first_loss_is_ln2_and_accuracy_rises(lora_run) -> None:
    _, result = lora_run
    records = read_metrics(result.output_dir / "metrics.jsonl")
    train_steps = [r for r in records if "loss" in r and "train_runtime" not in r]
    assert train_steps[0]["step"] == 1
    assert abs(train_steps[0]["loss"] - LN2) < 0.01
    assert train_steps[-1]["loss"] < train_steps[0]["loss"] - 0.05
    assert result.summary["eval_reward_accuracy"] >= MIN_HELD_OUT_ACCURACY
    steps = [r["step"] for r in train_steps]
    assert steps == sorted(set(steps))


def test_lora_changes_adapter_and_leaves_base_untouched(lora_run, tiny_model_dir: Path) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    _, result = lora_run
    adapter = load_file(str(result.final_dir / "adapter_model.safetensors"))
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: it moved
    assert not any("lora" not in name for name in adapter)  # only adapter weights are saved

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    tuned = PeftModel.from_pretrained(base, str(result.final_dir))
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        with_adapter = tuned(ids).logits
        with tuned.disable_adapter():
            without = tuned(ids).logits
    assert not torch.allclose(with_adapter, without)
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    with torch.no_grad():
        assert torch.allclose(fresh(ids).logits, without, atol=1e-6)


def test_full_fine_tuning_precomputes_the_reference_and_can_be_overwritten(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    full = (
        "lora=null",
        "training.max_steps=6",
        "training.learning_rate=1e-3",
        "training.logging_steps=2",
        "training.save_steps=100",
    )
    cfg, result = run(tiny_model_dir, tmp_path / "full", *full)
    assert cfg.mode == "full"
    cache = sorted((result.output_dir / "ref_logps").iterdir())  # precomputed: the default for full fine-tuning
    assert cache
    # --overwrite replaces the run and keeps the content-keyed cache, which the new run reuses.
    stamps = [path.stat().st_mtime_ns for path in cache]
    train(load_config(SMOKE, smoke_overrides(tiny_model_dir, tmp_path / "full", *full)), overwrite=True)
    assert [path.stat().st_mtime_ns for path in cache] == stamps
    records = read_metrics(result.output_dir / "metrics.jsonl")
    assert abs(records[0]["loss"] - LN2) < 0.01
    trained = AutoModelForCausalLM.from_pretrained(result.final_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [n for n, p in trained.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed, "full fine-tuning changed no weight"


def test_qlora_4bit_trains_on_cpu(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg, result = run(
        tiny_model_dir,
        tmp_path / "qlora",
        "quantization.bnb_4bit_compute_dtype=float32",
        "training.max_steps=6",
        "training.logging_steps=2",
        "training.save_steps=100",
    )
    assert cfg.mode == "qlora"
    records = read_metrics(result.output_dir / "metrics.jsonl")
    assert abs(records[0]["loss"] - LN2) < 0.01
    assert records[-1]["step"] == 6 or any(r.get("step") == 6 for r in records)
    assert (result.final_dir / "adapter_model.safetensors").is_file()


def test_conversational_data_uses_the_chat_template(tiny_model_dir: Path, tmp_path: Path) -> None:
    _, result = run(
        tiny_model_dir,
        tmp_path / "chat",
        f"data.train={SAMPLE / 'train_chat.jsonl'}",
        f"data.eval={SAMPLE / 'eval_chat.jsonl'}",
        "training.max_steps=4",
        "training.logging_steps=2",
        "training.save_steps=100",
    )
    info = json.loads((result.output_dir / "run.json").read_text())
    assert info["data_format"] == "conversational"
    records = read_metrics(result.output_dir / "metrics.jsonl")
    assert abs(records[0]["loss"] - LN2) < 0.01


def test_continuing_an_sft_adapter_keeps_it_as_reference(lora_run, tiny_model_dir: Path, tmp_path: Path) -> None:
    # The adapter from the LoRA run stands in for an SFT adapter. If it were dropped, or the
    # reference were the bare base, the first loss would not be ln 2: the policy (base + adapter)
    # and the reference would differ at step 0.
    _, first = lora_run
    cfg, result = run(
        tiny_model_dir,
        tmp_path / "continued",
        "lora=null",
        f"model.adapter={first.final_dir}",
        "training.max_steps=4",
        "training.logging_steps=2",
        "training.save_steps=100",
    )
    assert cfg.mode == "lora"
    records = read_metrics(result.output_dir / "metrics.jsonl")
    assert abs(records[0]["loss"] - LN2) < 0.01
    assert abs(records[0]["rewards/margins"]) < 1e-4


def test_reference_model_mismatch_is_diagnosed(lora_run, tiny_model_dir: Path, tmp_path: Path) -> None:
    # A separate reference that differs from the starting policy: the diagnosis must say so.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, first = lora_run
    merged_dir = tmp_path / "merged"
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(first.final_dir))
    merged.merge_and_unload().save_pretrained(merged_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(merged_dir)
    _, result = run(
        tiny_model_dir,
        tmp_path / "mismatch",
        "reference.kind=model",
        f"reference.name_or_path={merged_dir}",
        "training.max_steps=2",
        "training.logging_steps=1",
        "training.save_steps=100",
    )
    assert any("reference mismatch" in f.message for f in result.findings)


def test_mistral_config_builds_dpo_config_without_weights(tmp_path: Path) -> None:
    # The builders `dpo train` itself calls (build_trainer): config -> TRL / PEFT / bitsandbytes objects.
    from dpo_cli.models import to_bnb_config
    from dpo_cli.train.trl_args import to_lora_config, to_trainer_config

    # transformers itself refuses bf16 in DPOConfig on a machine without a bf16 GPU unless
    # use_cpu is set; that is the only change needed to resolve the 8-GPU config here.
    cfg = load_config(ROOT / "configs" / "mistral.yaml", ["training.use_cpu=true"])
    args = to_trainer_config(cfg, tmp_path / "checkpoints")
    assert type(args).__name__ == "DPOConfig" and args.output_dir == str(tmp_path / "checkpoints")
    assert args.beta == 0.1 and args.max_length == 2048 and args.gradient_accumulation_steps == 8
    assert args.bf16 is True and args.loss_type == ["sigmoid"]
    assert args.logging_first_step is True  # a deliberate default (config.algorithms.DELIBERATE_DEFAULTS)
    assert args.padding_free is False  # dpo packs pairs itself
    assert to_lora_config(cfg.lora).target_modules == "all-linear"
    assert str(to_bnb_config(cfg.quantization).bnb_4bit_quant_storage) == "torch.bfloat16"


@pytest.mark.parametrize("name", ["kto", "orpo", "simpo", "cpo"])
def test_each_variant_config_builds_its_trl_config(name: str, tmp_path: Path) -> None:
    from dpo_cli.config.algorithms import ALGORITHMS
    from dpo_cli.train.trl_args import to_trainer_config

    cfg = load_config(ROOT / "configs" / "variants" / f"{name}.yaml", ["model.name_or_path=unused"])
    args = to_trainer_config(cfg, tmp_path / "checkpoints")
    assert type(args).__name__ == ALGORITHMS[cfg.algorithm].config
    assert args.logging_first_step is True
    if name == "simpo":  # SimPO's values reach CPOConfig without being set
        assert args.loss_type == "simpo" and args.cpo_alpha == 0.0
