"""Length-aware batch order, row lengths from token columns, and the speed choices (no torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dpo_cli.config.loader import load_config
from dpo_cli.train.batching import (
    LengthGroupedSampler,
    LongestFirstSampler,
    length_grouped_order,
    longest_first,
    padding_fraction,
    pair_lengths,
    sequence_lengths,
)
from dpo_cli.train.speed import precompute_choice

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"


def real_lengths(n: int, seed: int = 0) -> np.ndarray:
    """(rows, 2) sequence lengths shaped like HH-RLHF pairs: log-normal, median ~150, p90 ~370, cap 1000."""
    rng = np.random.default_rng(seed)
    longer = np.clip(np.exp(rng.normal(np.log(153), np.log(368 / 153) / 1.2816, n)), 24, 1000).astype(int)
    prompt = (longer * rng.uniform(0.35, 0.8, n)).astype(int)
    shorter = prompt + ((longer - prompt) * rng.uniform(0.25, 1.0, n)).astype(int)
    swap = rng.random(n) < 0.5
    return np.stack([np.where(swap, longer, shorter), np.where(swap, shorter, longer)], axis=1)


def test_order_is_a_permutation_with_only_the_last_batch_short() -> None:
    lengths = real_lengths(1003).max(axis=1)
    order = length_grouped_order(lengths, batch_size=8, seed=3)
    assert sorted(order) == list(range(1003))
    batches = [order[i : i + 8] for i in range(0, len(order), 8)]
    assert [len(b) for b in batches[:-1]] == [8] * 125 and len(batches[-1]) == 3
    # The longest batch comes first: an out-of-memory error shows at step 1.
    assert int(lengths.max()) in lengths[batches[0]]


def test_order_is_a_pure_function_of_seed_and_epoch() -> None:
    lengths = real_lengths(500).max(axis=1)
    first = length_grouped_order(lengths, 8, seed=42, epoch=0)
    assert first == length_grouped_order(lengths, 8, seed=42, epoch=0)
    assert first != length_grouped_order(lengths, 8, seed=42, epoch=1)
    assert first != length_grouped_order(lengths, 8, seed=7, epoch=0)
    sampler = LengthGroupedSampler(lengths, 8, seed=42)
    assert list(sampler) == first and len(sampler) == 500
    sampler.set_epoch(1)
    assert list(sampler) == length_grouped_order(lengths, 8, seed=42, epoch=1)


@pytest.mark.parametrize(
    ("batch", "random_at_least", "grouped_at_most"), [(4, 0.4, 0.2), (8, 0.5, 0.2), (16, 0.55, 0.2)]
)
def test_grouping_removes_most_padding(batch: int, random_at_least: float, grouped_at_most: float) -> None:
    # The figures on HH-RLHF: 50/60/66% padding with random batches, 13-14% grouped.
    lengths = real_lengths(2000)
    random_order = np.random.default_rng(0).permutation(len(lengths))
    grouped = length_grouped_order(lengths.max(axis=1), batch, seed=0)
    assert padding_fraction(lengths, random_order, batch) > random_at_least
    assert padding_fraction(lengths, grouped, batch) < grouped_at_most


def test_batches_are_still_shuffled() -> None:
    lengths = real_lengths(2000).max(axis=1)
    order = length_grouped_order(lengths, 8, seed=0)
    batch_max = [int(lengths[order[i : i + 8]].max()) for i in range(0, 2000, 8)]
    # Not one long sweep from longest to shortest: the batches' order is random.
    assert batch_max[1:] != sorted(batch_max[1:], reverse=True)
    assert np.corrcoef(np.arange(len(batch_max) - 1), batch_max[1:])[0, 1] ** 2 < 0.1


def test_longest_first() -> None:
    assert longest_first([3, 9, 1, 9]) == [1, 3, 0, 2]
    assert list(LongestFirstSampler([3, 9, 1])) == [1, 0, 2]


def test_lengths_from_the_token_columns_of_each_trainer() -> None:
    from datasets import Dataset

    dpo = Dataset.from_dict(
        {"prompt_ids": [[1, 2, 3], [4]], "chosen_ids": [[5], [6, 7, 8, 9]], "rejected_ids": [[5, 6], [7]]}
    )
    assert sequence_lengths(dpo).tolist() == [[4, 5], [5, 2]]
    assert pair_lengths(dpo).tolist() == [5, 5]
    assert pair_lengths(dpo, max_length=4).tolist() == [4, 4]  # TRL's collator truncates there
    cpo = Dataset.from_dict({"chosen_input_ids": [[1, 2], [3]], "rejected_input_ids": [[1], [3, 4, 5]], "x": [0, 1]})
    assert pair_lengths(cpo).tolist() == [2, 3]
    kto = Dataset.from_dict({"prompt_ids": [[1, 2]], "completion_ids": [[3]], "label": [True]})
    assert pair_lengths(kto).tolist() == [3]
    assert pair_lengths(Dataset.from_dict({"text": ["a"]})) is None


def test_batch_order_and_speed_choices_never_import_torch() -> None:
    # `dpo plan` and config checks read `dpo_cli.train.speed`; they must stay torch-free.
    code = (
        "import sys, dpo_cli.train.batching, dpo_cli.train.speed, dpo_cli.train.packing; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False", out.stderr


def overrides(tmp_path: Path, *extra: str) -> list[str]:
    return [f"output_dir={tmp_path / 'run'}", "model.name_or_path=unused", *extra]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ((), True),  # neither set: TRL trains its default 3 epochs (the schema says so since it reads TRL's defaults)
        (("training.num_train_epochs=1",), False),  # LoRA, one pass: online costs the same and starts sooner
        (("training.num_train_epochs=3",), True),
        (("training.num_train_epochs=2",), False),  # measured even at two epochs
        (("lora=null",), True),  # full fine-tuning: no second copy of the model
        # TRL keeps that model loaded anyway (one epoch: no later epoch to save the reference forward of)
        (("reference.kind=model", "reference.name_or_path=ref", "training.num_train_epochs=1"), False),
        (("lora=null", "reference.kind=model", "reference.name_or_path=ref", "training.num_train_epochs=1"), False),
        (("lora=null", "training.precompute_ref_log_probs=false"), False),  # the config wins
        (("training.precompute_ref_log_probs=true",), True),
        (("lora=null", "training.sync_ref_model=true"), False),
        (("algorithm=simpo", "lora=null"), False),
        (("training.num_train_epochs=3", "training.max_steps=10"), False),
    ],
)
def test_precompute_default_where_it_wins(tmp_path: Path, extra: tuple[str, ...], expected: bool) -> None:
    cfg = load_config(SMOKE, overrides(tmp_path, "training.max_steps=-1", *extra))
    assert precompute_choice(cfg)[0] is expected
