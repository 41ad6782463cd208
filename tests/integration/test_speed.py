"""Padding-free pairs compute what padded batches compute; length-grouped batches survive a resume;
the reference precompute is sorted, cached and equal to TRL's own."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from dpo_cli.config.loader import load_config
from dpo_cli.train.trainer import build_trainer
from tests.conftest import ROOT, SAMPLE

pytestmark = pytest.mark.integration

SMOKE = ROOT / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def tiny_llama_dir(tiny_model_dir: Path, tmp_path_factory) -> Path:
    """A two-layer Llama (GQA, RoPE) with the tiny model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("models") / "tiny-llama"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(tokenizer) > 1000  # transformers 5 tokenizer trap
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def config(model_dir: Path, out: Path, *extra: str):
    targets = "[c_attn,c_proj]" if "gpt2" in model_dir.name else "all-linear"
    return load_config(
        SMOKE,
        [
            f"model.name_or_path={model_dir}",
            f"output_dir={out}",
            f"data.train={SAMPLE / 'train.jsonl'}",
            f"data.eval={SAMPLE / 'eval.jsonl'}",
            "data.max_train_samples=32",
            "data.max_eval_samples=8",
            f"lora.target_modules={targets}",
            *extra,
        ],
    )


def built_pair(model_dir: Path, tmp_path: Path, *extra: str):
    """The same run built twice, padded and padding-free, with the same non-zero adapter."""
    import torch

    trainers = []
    for name, packed in (("padded", "false"), ("packed", "true")):
        out = tmp_path / name
        out.mkdir()
        trainer = build_trainer(
            config(model_dir, out, f"training.padding_free={packed}", *extra), out / "m.jsonl"
        ).trainer
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for pname, param in sorted(trainer.model.named_parameters()):
                if "lora_B" in pname:  # a fresh adapter is zero: make the policy differ from the reference
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
        trainers.append(trainer)
    return trainers


def mixed_batch(trainer, rows: int = 6):
    # Rows of different lengths, so padding and multi-row packing are both exercised.
    data = trainer.train_dataset
    lengths = [len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in data]
    picks = np.argsort(lengths)[np.linspace(0, len(lengths) - 1, rows).astype(int)]
    return trainer.data_collator([data[int(i)] for i in picks])


def policy_logps(trainer, batch):
    """Per-pair policy log-probs, computed the way TRL's `_compute_loss` does."""
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    out = trainer.model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        labels=labels,
        fused_lm_head=True,
        use_cache=False,
    )
    return out.log_probs.sum(dim=1).chunk(2)


# Losses that read every per-token output: sums (sigmoid), per-token means (ipo), WPO's log-sum of
# squared probs (use_weighting), LD-DPO's shared/tail split (ld_alpha); the chosen NLL (sft) and
# length-normalised sums (sigmoid_norm). (TRL 1.16 cannot combine sft with use_weighting.)
WEIGHTED = (
    "training.loss_type=[sigmoid,ipo]",
    "training.loss_weights=[1.0,0.5]",
    "training.use_weighting=true",
    "training.ld_alpha=0.5",
)
NORMALISED = ("training.loss_type=[sft,sigmoid_norm]", "training.loss_weights=[0.3,1.0]")


@pytest.mark.parametrize(
    ("model", "attn", "losses"),
    [
        ("gpt2", "sdpa", WEIGHTED),
        ("gpt2", "eager", NORMALISED),
        ("llama", "sdpa", NORMALISED),
        ("llama", "eager", WEIGHTED),
    ],
    ids=["gpt2-sdpa", "gpt2-eager", "llama-sdpa", "llama-eager"],
)
def test_padding_free_log_probs_loss_and_grads_equal_padded(
    model: str, attn: str, losses: tuple[str, ...], tiny_model_dir: Path, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    import torch

    model_dir = tiny_model_dir if model == "gpt2" else tiny_llama_dir
    padded, packed = built_pair(model_dir, tmp_path, f"model.attn_implementation={attn}", *losses)
    assert packed.dpo_speed["padding_free"] and not padded.dpo_speed["padding_free"]
    batch = mixed_batch(padded)
    assert (batch["attention_mask"] == 0).any()  # there is padding to remove
    for name, (a, b) in {
        "reference": (
            padded.compute_ref_log_probs(padded.model, batch),
            packed.compute_ref_log_probs(packed.model, batch),
        ),
        "policy": (policy_logps(padded, batch), policy_logps(packed, batch)),
    }.items():
        for side, x, y in zip(("chosen", "rejected"), a, b, strict=True):
            torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-4, msg=f"{name} {side}")
    ref_chosen, _ = padded.compute_ref_log_probs(padded.model, batch)
    assert not torch.allclose(policy_logps(padded, batch)[0], ref_chosen, atol=1e-3)  # the adapter does something

    losses, grads, metrics = [], [], []
    for trainer in (padded, packed):
        trainer.model.train()
        trainer._metrics["train"].clear()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
        metrics.append({k: v[-1] for k, v in trainer._metrics["train"].items()})
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-5, msg=name)
    assert metrics[0].keys() == metrics[1].keys()
    for key in metrics[0]:  # entropy, mean logits, token accuracy, rewards, log-probs
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-4, abs=1e-5), key


class Recorder:
    """Wraps the data collator and records, in order, the rows of every batch it makes."""

    def __init__(self, collator):
        self.collator = collator
        self.batches: list[tuple] = []

    def __call__(self, examples):
        self.batches.append(tuple(tuple(e["prompt_ids"]) + tuple(e["chosen_ids"]) for e in examples))
        return self.collator(examples)


def recorded_train(cfg, metrics: Path, resume_from: Path | None = None) -> list[tuple]:
    trainer = build_trainer(cfg, metrics).trainer
    recorder = Recorder(trainer.data_collator)
    trainer.data_collator = recorder
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return recorder.batches


def test_resume_sees_exactly_the_batches_of_the_uninterrupted_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    # 12 batches an epoch, three epochs; the resume starts in the middle of the second epoch,
    # where a permutation drawn from torch's global random state would differ.
    extra = [
        "training.max_steps=-1",
        "training.num_train_epochs=3",
        "training.per_device_train_batch_size=4",
        "training.save_steps=18",
        "training.logging_steps=6",
        "data.eval=null",
        "data.max_train_samples=48",
        "data.eval_fraction=null",
    ]
    straight_dir = tmp_path / "straight"
    straight_dir.mkdir()
    cfg = config(tiny_model_dir, straight_dir, *extra)
    straight = recorded_train(cfg, straight_dir / "m.jsonl")
    assert len(straight) == 36
    epochs = [straight[i : i + 12] for i in range(0, 36, 12)]
    assert epochs[0] != epochs[1] != epochs[2]  # each epoch its own shuffle
    assert all(sorted(e) != e for e in epochs)
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    checkpoint = resumed_dir / "checkpoint-18"
    shutil.copytree(straight_dir / "checkpoints" / "checkpoint-18", checkpoint)
    resumed = recorded_train(config(tiny_model_dir, resumed_dir, *extra), resumed_dir / "m.jsonl", checkpoint)
    # accelerate skips the 6 batches of epoch 2 already trained without collating them.
    assert resumed == straight[18:]


def test_length_grouped_batches_pad_less(tiny_model_dir: Path, tmp_path: Path) -> None:
    from dpo_cli.train.batching import padding_fraction, sequence_lengths

    lengths = {}
    for name, strategy in (("grouped", "group_by_length"), ("random", "random")):
        out = tmp_path / name
        out.mkdir()
        cfg = config(
            tiny_model_dir,
            out,
            f"training.train_sampling_strategy={strategy}",
            "data.max_train_samples=400",
            "training.max_steps=50",
            "training.save_strategy=no",
            "training.padding_free=false",
        )
        trainer = build_trainer(cfg, out / "m.jsonl").trainer
        loader = trainer.get_train_dataloader()
        lengths[name] = [
            b["attention_mask"].shape[1] * b["attention_mask"].shape[0] - int(b["attention_mask"].sum())
            for _, b in zip(range(50), loader, strict=False)
        ]
        data = sequence_lengths(trainer.train_dataset, 128)
    assert sum(lengths["grouped"]) < 0.5 * sum(lengths["random"])  # padded tokens in the first 50 batches
    assert padding_fraction(data, list(range(len(data))), 8) > 0  # the data is not uniform


def test_eval_batches_sorted_longest_first(tiny_model_dir: Path, tmp_path: Path) -> None:
    trainer = build_trainer(config(tiny_model_dir, tmp_path, "data.max_eval_samples=40"), tmp_path / "m.jsonl").trainer
    loader = trainer.get_eval_dataloader()
    widths = [int(b["attention_mask"].sum(dim=1).max()) for b in loader]
    assert widths == sorted(widths, reverse=True)


def test_precompute_is_cached_for_resume_and_equals_trls_own(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from trl import DPOTrainer

    from dpo_cli.models import load_policy, load_tokenizer
    from dpo_cli.train.trl_args import to_lora_config, to_trainer_config

    run = tmp_path / "run"
    run.mkdir()
    cfg = config(tiny_model_dir, run, "training.precompute_ref_log_probs=true")
    first = build_trainer(cfg, run / "metrics.jsonl")  # a training run: the cache lives in its directory
    assert first.trainer.ref_logps_source == {"train": "computed", "eval": "computed"}
    assert sorted(p.name.split("-")[0] for p in (run / "ref_logps").glob("*.npz")) == ["eval", "train"]
    again = build_trainer(cfg, run / "metrics.jsonl")  # what --resume builds
    assert again.trainer.ref_logps_source == {"train": "reused", "eval": "reused"}
    for split in ("train_dataset", "eval_dataset"):
        np.testing.assert_allclose(
            getattr(again.trainer, split)["ref_chosen_logps"], getattr(first.trainer, split)["ref_chosen_logps"]
        )

    args = to_trainer_config(cfg, tmp_path / "trl")
    args.padding_free = False
    trl_own = DPOTrainer(
        model=load_policy(cfg),
        args=args,
        train_dataset=first.data.train,
        eval_dataset=first.data.eval,
        processing_class=load_tokenizer(cfg),
        peft_config=to_lora_config(cfg.lora),
    )
    for split in ("train_dataset", "eval_dataset"):
        for column in ("ref_chosen_logps", "ref_rejected_logps"):
            np.testing.assert_allclose(
                getattr(first.trainer, split)[column], getattr(trl_own, split)[column], rtol=1e-5, atol=1e-4
            )
    assert "speed: padding-free pairs" in capsys.readouterr().err


def test_unwrapped_algorithms_say_they_pad(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    cfg = load_config(
        ROOT / "configs" / "variants" / "orpo.yaml",
        [
            f"model.name_or_path={tiny_model_dir}",
            f"output_dir={tmp_path}",
            f"data.train={SAMPLE / 'train.jsonl'}",
            "data.max_train_samples=16",
            "data.eval=null",
            "data.eval_fraction=null",
            "lora.target_modules=[c_attn,c_proj]",
        ],
    )
    trainer = build_trainer(cfg, tmp_path / "m.jsonl").trainer
    trainer.get_train_dataloader()
    err = capsys.readouterr().err
    assert "padding-free pairs off (TRL's ORPOTrainer is not wrapped" in err
    assert "batches grouped by length" in err


def test_batch_order_defaults_per_algorithm(tmp_path: Path) -> None:
    from dpo_cli.train.trl_args import trainer_config_kwargs

    base = [f"output_dir={tmp_path / 'run'}", "model.name_or_path=unused"]
    kwargs = trainer_config_kwargs(load_config(SMOKE, base), tmp_path)
    assert kwargs["train_sampling_strategy"] == "group_by_length"
    assert kwargs["padding_free"] is False  # dpo packs itself; TRL 1.16's own only warns and pads
    off = load_config(SMOKE, [*base, "training.train_sampling_strategy=random"])
    assert trainer_config_kwargs(off, tmp_path)["train_sampling_strategy"] == "random"
    kto = load_config(ROOT / "configs" / "variants" / "kto.yaml", base)
    assert trainer_config_kwargs(kto, tmp_path)["train_sampling_strategy"] == "sequential"  # KTO's KL pairing


def test_a_reused_base_model_is_packed_again(tiny_model_dir: Path, tmp_path: Path) -> None:
    # A sweep trains every point on one base model, removing the adapter and TRL's patched forward
    # between points (dpo_cli.sweep.runner._detach_adapter); the next point must run packed again.
    from dpo_cli.models import load_policy

    cfg = config(tiny_model_dir, tmp_path, "data.eval=null", "data.eval_fraction=null")
    base = load_policy(cfg)
    for point in range(2):
        trainer = build_trainer(cfg, tmp_path / f"m{point}.jsonl", policy=base).trainer
        assert getattr(base.__dict__.get("forward"), "_dpo_packed", False), point
        base = trainer.model.unload()
        base.__dict__.pop("forward", None)


def test_padding_free_is_the_default_only_where_it_was_measured_to_pay(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    # SDPA computes each packed row's whole mask: packing paid on length-grouped batches and not on
    # random ones (scripts/bench_padding_free.py), so the default follows the batch order.
    choices = {}
    for strategy in ("group_by_length", "random"):
        out = tmp_path / strategy
        cfg = config(
            tiny_model_dir,
            out,
            f"training.train_sampling_strategy={strategy}",
            "data.eval=null",
            "data.eval_fraction=null",
            "data.max_train_samples=16",
        )
        build_trainer(cfg, out / "m.jsonl")
        choices[strategy] = [line for line in capsys.readouterr().err.splitlines() if "padding-free pairs" in line]
    assert choices["group_by_length"] == [
        "speed: padding-free pairs on (sdpa: sequences packed into rows as wide as the batch's longest)"
    ]
    assert len(choices["random"]) == 1 and "padding-free pairs off (sdpa with random batches" in choices["random"][0]
    # Asked for, it is on whatever the order.
    out = tmp_path / "asked"
    build_trainer(
        config(
            tiny_model_dir,
            out,
            "training.train_sampling_strategy=random",
            "training.padding_free=true",
            "data.eval=null",
            "data.eval_fraction=null",
            "data.max_train_samples=16",
        ),
        out / "m.jsonl",
    )
    assert "padding-free pairs on (set in the config)" in capsys.readouterr().err
