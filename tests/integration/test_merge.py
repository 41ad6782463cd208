"""`dpo merge-adapter` as a library: real LoRA and QLoRA adapters from the tiny model, merged and checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dpo_cli.config.loader import load_config
from dpo_cli.errors import DpoError
from dpo_cli.merge.runner import TOLERANCE, merge_adapter, verification_inputs
from dpo_cli.train.run import train
from tests.conftest import ROOT, smoke_overrides

pytestmark = pytest.mark.integration

SMOKE = ROOT / "configs" / "smoke.yaml"
# Two optimizer steps on a few rows: enough for LoRA B (zero at start) to move, so the merge
# changes the weights; everything else is trimmed to keep the two trainings short.
SHORT = (
    "training.max_steps=2",
    "training.per_device_train_batch_size=2",
    "training.per_device_eval_batch_size=4",
    "training.max_length=64",
    "training.logging_steps=1",
    "training.save_steps=100",
    "data.max_train_samples=8",
    "data.max_eval_samples=4",
)
QLORA = ("quantization.bnb_4bit_compute_dtype=float32", "quantization.bnb_4bit_quant_type=nf4")


@pytest.fixture(scope="module")
def runs(tiny_model_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """One short LoRA run and one short QLoRA run, trained once for the whole module."""
    root = tmp_path_factory.mktemp("merge-runs")
    out = {}
    for mode, extra in (("lora", ()), ("qlora", QLORA)):
        cfg = load_config(SMOKE, smoke_overrides(tiny_model_dir, root / mode, *SHORT, *extra))
        assert cfg.mode == mode
        out[mode] = train(cfg).output_dir
    return out


def adapter_logits(base: Path, adapter: Path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter))
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    with torch.no_grad():
        return [model(input_ids=ids).logits for ids in verification_inputs(tokenizer)], tokenizer


@pytest.mark.parametrize("mode", ["lora", "qlora"])
def test_merge_matches_adapter_and_loads_with_plain_transformers(
    runs, tiny_model_dir: Path, tmp_path: Path, mode: str
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    result = merge_adapter(runs[mode], out, dtype="float32")
    assert result.max_abs_diff <= TOLERANCE["float32"]
    assert result.adapter_effect > 10 * TOLERANCE["float32"]  # the check would see a dropped adapter
    assert result.shards == ["model.safetensors"]
    for name in ("config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja", "merge_info.json"):
        assert (out / name).is_file(), name
    # Only the lock file that keeps two merges into one output apart stays beside it.
    assert [p.name for p in tmp_path.glob(".merged.*")] == [".merged.lock"], "the staging directory was left behind"

    # Independent of the library's own check: plain transformers on the merged directory.
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert "Linear4bit" not in {type(m).__name__ for m in merged.modules()}  # QLoRA run, full-precision merge
    assert merged.dtype == torch.float32
    expected, tokenizer = adapter_logits(tiny_model_dir, runs[mode] / "final")
    assert AutoTokenizer.from_pretrained(out).chat_template == tokenizer.chat_template
    with torch.no_grad():
        for ids, want in zip(verification_inputs(tokenizer), expected, strict=True):
            assert torch.allclose(merged(input_ids=ids).logits, want, atol=1e-4)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = [n for n, p in merged.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed and all("c_attn" in n or "c_proj" in n for n in changed)


def test_bfloat16_merge_is_sharded_and_within_tolerance(runs, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "bf16"
    result = merge_adapter(runs["qlora"] / "final", out, dtype="bfloat16", max_shard_size="100KB")
    assert result.max_abs_diff <= TOLERANCE["bfloat16"]
    assert len(result.shards) > 1 and (out / "model.safetensors.index.json").is_file()
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16  # the saved dtype, no argument needed
    info = json.loads((out / "merge_info.json").read_text())
    assert info["dtype"] == "bfloat16" and info["verification"]["max_abs_diff"] == result.max_abs_diff


def test_default_dtype_is_the_runs(runs, tmp_path: Path) -> None:
    result = merge_adapter(runs["lora"], tmp_path / "m")  # smoke.yaml trains in float32
    assert result.dtype == "float32"


def _resized_tiny_model(tiny_model_dir: Path, out: Path, **changes) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_model_dir)
    for key, value in changes.items():
        setattr(config, key, value)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def test_base_of_another_size_is_refused_even_with_force(runs, tiny_model_dir: Path, tmp_path: Path) -> None:
    other = _resized_tiny_model(tiny_model_dir, tmp_path / "wider", n_embd=96, n_head=2)
    with pytest.raises(DpoError) as caught:
        merge_adapter(runs["lora"], tmp_path / "out", base=str(other))
    text = str(caught.value)
    assert "cannot be merged" in text and "config.n_embd: 64" in text
    assert "c_attn.lora_A.weight: shape (8, 64) in the adapter, (8, 96) for this base" in text
    # The tensors cannot fit this base at all: --force cannot help, and says so.
    with pytest.raises(DpoError, match="not even with --force"):
        merge_adapter(runs["lora"], tmp_path / "out", base=str(other), force=True)
    assert not (tmp_path / "out").exists()


def test_base_with_more_layers_is_refused_unless_forced(runs, tiny_model_dir: Path, tmp_path: Path) -> None:
    other = _resized_tiny_model(tiny_model_dir, tmp_path / "deeper", n_layer=3)
    with pytest.raises(DpoError) as caught:
        merge_adapter(runs["lora"], tmp_path / "out", base=str(other))
    assert "config.n_layer: 2" in str(caught.value)
    assert "base modules the adapter has no weights for (e.g. transformer.h.2." in str(caught.value)
    assert caught.value.exit_code == 2


def test_same_model_under_another_name_needs_force(runs, tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy-of-tiny"
    shutil.copytree(tiny_model_dir, copy)
    with pytest.raises(DpoError) as caught:
        merge_adapter(runs["lora"], tmp_path / "out", base=str(copy))
    assert f"trained on {str(tiny_model_dir)!r}" in str(caught.value) and "--force" in str(caught.value)
    result = merge_adapter(runs["lora"], tmp_path / "out", base=str(copy), force=True)
    assert result.max_abs_diff <= TOLERANCE["float32"]
    assert any("--force" in w for w in result.warnings)


def test_output_directory_protection(runs, tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    with pytest.raises(DpoError, match="not empty"):
        merge_adapter(runs["lora"], out)
    assert (out / "keep.txt").read_text() == "earlier work"
    # The run directory is an input: even --overwrite must not replace it.
    with pytest.raises(DpoError, match="an input of this merge"):
        merge_adapter(runs["lora"] / "final", runs["lora"], overwrite=True)
    assert (runs["lora"] / "final" / "adapter_config.json").is_file()
    merge_adapter(runs["lora"], out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_failed_verification_leaves_nothing_behind(runs, tmp_path: Path, monkeypatch) -> None:
    # A tolerance no real merge meets stands in for a broken merge: the output must not appear.
    monkeypatch.setitem(TOLERANCE, "float32", -1.0)
    out = tmp_path / "never"
    with pytest.raises(DpoError, match="verification failed"):
        merge_adapter(runs["lora"], out, dtype="float32")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == []


def test_cli_merges_a_run_and_reports_the_difference(runs, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dpo_cli.cli.main import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["merge-adapter", str(runs["qlora"]), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "not 4-bit" in result.stdout
    assert "verified: max abs logit difference" in result.stdout and f"merged model: {out}" in result.stdout
    assert (out / "model.safetensors").stat().st_mode & 0o044  # readable by a server running as another user
    again = CliRunner().invoke(app, ["merge-adapter", str(runs["qlora"]), "--output", str(out)])
    assert again.exit_code == 2 and "not empty" in again.stderr
