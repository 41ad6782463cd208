"""Real two-process runs under `accelerate launch` on the CPU (gloo): ZeRO-3, DDP, failures.

`dpo train --num-processes 2` re-runs itself under accelerate, exactly as on a GPU node. The
ZeRO-3 run sets nothing CPU-specific: with no GPU visible, a launched run trains on the CPU by
itself (issue 15, item 15); the others set `training.use_cpu` (and with it DS_ACCELERATOR=cpu,
set by dpo_cli.train.launch), as a user forcing the CPU on a GPU machine would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpo_cli.config.loader import load_config
from dpo_cli.rundir import COMPLETE_MARKER, read_metrics
from tests.conftest import ROOT, SAMPLE, output, run_logged, smoke_overrides, spawn

pytestmark = pytest.mark.integration

SMOKE = ROOT / "configs" / "smoke.yaml"
STEPS = 4
# A run that is still going after this long is hung, not slow (a healthy one takes about a minute here).
HANG_LIMIT_S = 420


def dpo_train(
    tiny_model_dir: Path,
    out: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    use_cpu: bool = True,
    validate: bool = False,
):
    overrides = smoke_overrides(
        tiny_model_dir,
        out,
        *(["training.use_cpu=true"] if use_cpu else []),
        f"training.max_steps={STEPS}",
        "training.logging_steps=1",
        "training.save_steps=2",
        "training.per_device_train_batch_size=4",
        "data.max_eval_samples=16",
        *extra,
    )
    argv = [
        sys.executable,
        "-m",
        "dpo_cli",
        "train",
        str(SMOKE),
        "--num-processes",
        "2",
        *([] if validate else ["--skip-validation"]),
    ]
    for item in overrides:
        argv += ["--set", item]
    # A port of its own, so that a concurrent test run on the same machine cannot collide.
    port = 20000 + os.getpid() % 20000
    argv += ["--set", f"launch.main_process_port={port}"]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return run_logged(argv, out.parent, f"{out.name}-train", cwd=ROOT, env=full_env, timeout=HANG_LIMIT_S)


def assert_complete_run(out: Path, done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    records = read_metrics(out / "metrics.jsonl")
    steps = [r["step"] for r in records if "loss" in r and "train_runtime" not in r]
    assert steps == list(range(1, STEPS + 1))  # written once (rank 0), not once per rank
    assert all((out / "checkpoints" / f"checkpoint-{s}" / COMPLETE_MARKER).is_file() for s in (2, 4))
    assert done.stdout.count("metrics    ") == 1  # one summary, not one per rank


def lora_tensors(final: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(final / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def zero3_run(tiny_model_dir: Path, tmp_path_factory):
    """With the data check: rank 0 drops two copied pairs, and every rank must leave out the same rows."""
    folder = tmp_path_factory.mktemp("dist")
    lines = (SAMPLE / "train.jsonl").read_text().splitlines()
    (folder / "train.jsonl").write_text("\n".join([*lines, lines[3], lines[7]]) + "\n")
    out = folder / "zero3"
    # No `training.use_cpu`: before the fix DeepSpeed refused to start ("train_batch_size is not
    # equal to micro_batch_per_gpu * gradient_acc_step * world_size 4 != 4 * 1 * 2").
    return out, dpo_train(
        tiny_model_dir,
        out,
        "launch.deepspeed={zero_stage: 3}",
        f"data.train={folder / 'train.jsonl'}",
        use_cpu=False,
        validate=True,
    )


def test_zero3_two_processes_train_and_save(zero3_run) -> None:
    out, done = zero3_run
    assert_complete_run(out, done)
    acc = (out / "launch" / "accelerate.yaml").read_text()
    assert "distributed_type: DEEPSPEED" in acc
    assert "use_cpu" not in load_config(out / "config.yaml").training.model_fields_set
    assert "note: no GPU visible: the 2 processes train on the CPU" in done.stderr
    assert "dropped: 2 of 402 train rows (duplicate_pair x2), 400 left" in done.stderr
    for rank in (0, 1):
        assert (
            f"data (rank {rank}): {out.parent / 'train.jsonl'}: 2 row(s) left out (found by the data check x2)"
            in done.stderr
        )
    assert json.loads((out / "run.json").read_text())["train_rows"] == 400
    # Each rank wrote its own ZeRO shard of the checkpoint.
    shards = sorted(p.name for p in (out / "checkpoints" / "checkpoint-4" / "global_step4").iterdir())
    assert any("rank_0" in s for s in shards) and any("rank_1" in s for s in shards)


def test_zero3_final_adapter_is_consolidated_and_reloads(zero3_run, tiny_model_dir: Path) -> None:
    """final/ must hold whole tensors equal to the sharded training state, and load in one process."""
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, done = zero3_run
    assert done.returncode == 0, done.stderr[-4000:]
    saved = lora_tensors(out / "final")
    assert saved and all(t.numel() > 0 for t in saved.values())

    # DeepSpeed's own reassembly of the two ranks' shards at the last step is the reference.
    sharded = get_fp32_state_dict_from_zero_checkpoint(str(out / "checkpoints" / "checkpoint-4"))
    reference = {k.replace(".default", ""): v for k, v in sharded.items() if "lora_" in k}
    assert set(saved) == set(reference)
    for name, tensor in saved.items():
        assert tensor.shape == reference[name].shape, name
        assert torch.allclose(tensor.float(), reference[name].float(), atol=1e-6), name
    assert any(t.abs().sum() > 0 for n, t in saved.items() if "lora_B" in n)  # trained, not the zero init

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tuned = PeftModel.from_pretrained(base, str(out / "final"))
    ids = torch.tensor([[5, 17, 42, 99, 7, 300]])
    with torch.no_grad():
        logits = tuned(ids).logits
        with tuned.disable_adapter():
            plain = tuned(ids).logits
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits, plain)


@pytest.mark.slow
def test_ddp_two_processes(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    done = dpo_train(tiny_model_dir, out)
    assert_complete_run(out, done)
    assert "distributed_type: MULTI_GPU" in (out / "launch" / "accelerate.yaml").read_text()
    assert "DS_ACCELERATOR" not in done.stderr.split("\n", 1)[0]
    saved = lora_tensors(out / "final")
    assert any(t.abs().sum() > 0 for n, t in saved.items() if "lora_B" in n)


@pytest.mark.slow
def test_zero3_precompute_ref_log_probs(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Reference log-probs computed once before training, through DeepSpeed (users report it broken)."""
    out = tmp_path / "precompute"
    done = dpo_train(tiny_model_dir, out, "launch.deepspeed={zero_stage: 3}", "training.precompute_ref_log_probs=true")
    assert_complete_run(out, done)
    first = read_metrics(out / "metrics.jsonl")[0]
    # Before any update the policy is the reference: the loss is ln 2 only if the precomputed values are right.
    assert abs(first["loss"] - 0.6931) < 0.01


@pytest.mark.slow
def test_one_failing_rank_stops_all_ranks(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Rank 1 alone cannot use its datasets cache; the run must end with a clear error, not hang."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    # Runs at interpreter start in every rank; only rank 1 gets a cache path that cannot be created.
    (hooks / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        f"    os.environ['HF_DATASETS_CACHE'] = {str(blocker / 'cache')!r}\n"
    )
    out = tmp_path / "failing"
    pythonpath = os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")]))
    done = dpo_train(tiny_model_dir, out, "launch.deepspeed={zero_stage: 3}", env={"PYTHONPATH": pythonpath})
    assert done.returncode == 1
    assert "error: the 2-process run failed" in done.stderr
    assert "rank      : 1" in done.stderr  # torchrun names the rank that failed first
    assert not (out / "final").exists()


def _rank_pid(root_pid: int, rank: str) -> int | None:
    """The pid of the descendant of `root_pid` whose environment says RANK=`rank` (Linux /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    todo, seen = [root_pid], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo.extend(children.get(pid, []))
    for pid in seen[1:]:
        try:
            environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return pid
    return None


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_all_at_a_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Only rank 1 is told to stop; both ranks must save the same step and exit, nobody hangs."""
    import signal
    import time

    out = tmp_path / "signalled"
    argv = [sys.executable, "-m", "dpo_cli", "train", str(SMOKE), "--num-processes", "2", "--skip-validation"]
    for item in smoke_overrides(tiny_model_dir, out, "training.use_cpu=true", "training.max_steps=200",
                                "training.logging_steps=1", "training.save_steps=100",
                                "training.per_device_train_batch_size=2",
                                f"launch.main_process_port={20000 + (os.getpid() + 7) % 20000}"):  # fmt: skip
        argv += ["--set", item]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    process = spawn(argv, out.parent, f"{out.name}-train", cwd=ROOT, env=env)
    deadline = time.monotonic() + HANG_LIMIT_S
    signalled = False
    while time.monotonic() < deadline and process.poll() is None and not signalled:
        records = read_metrics(out / "metrics.jsonl")
        if records and records[-1].get("step", 0) >= 3:
            pid = _rank_pid(process.pid, "1")
            assert pid is not None
            os.kill(pid, signal.SIGTERM)
            signalled = True
        time.sleep(0.1)
    process.wait(timeout=HANG_LIMIT_S)
    stderr = output(process)[1]
    assert signalled, stderr[-3000:]
    assert process.returncode == 130, stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    checkpoints = [p for p in (out / "checkpoints").iterdir() if (p / COMPLETE_MARKER).is_file()]
    assert len(checkpoints) == 1 and 3 <= int(checkpoints[0].name.split("-")[1]) < 200
