"""scripts/gpu_bench.sh up to the point where it needs CUDA: the offline wheel install, every CPU
case of the table, and a clear refusal without a GPU. No test here needs a GPU."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

SCRIPT = ROOT / "scripts" / "gpu_bench.sh"


def probe_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel, written by hand, standing in for the carried ones."""
    files = {
        "dpo_gpu_bench_probe.py": b"CARRIED = True\n",
        "dpo_gpu_bench_probe-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: dpo-gpu-bench-probe\nVersion: 1.0\n",
        "dpo_gpu_bench_probe-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = (
        "".join(
            f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
            for name, data in files.items()
        )
        + "dpo_gpu_bench_probe-1.0.dist-info/RECORD,,\n"
    )
    wheel = folder / "dpo_gpu_bench_probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("dpo_gpu_bench_probe-1.0.dist-info/RECORD", record)
    return wheel


def run(tmp_path: Path, *args: str, wheels: str = "") -> tuple[int, str]:
    env = {
        **os.environ,
        "GPU_SITE": str(tmp_path / "site"),
        "GPU_WHEELS": wheels,
        "PYTHON": os.sys.executable,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    log = tmp_path / "gpu_bench.log"
    with log.open("w") as out:
        code = subprocess.call(
            [str(SCRIPT), *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=900
        )
    return code, log.read_text()


def test_cpu_check_installs_carried_wheels_and_writes_the_table(tmp_path: Path) -> None:
    wheels = tmp_path / "whl"
    wheels.mkdir()
    probe_wheel(wheels)
    out = tmp_path / "bench"
    code, log = run(tmp_path, "--cpu-check", "--out", str(out), wheels=str(wheels))
    assert code == 0, log[-4000:]
    assert (tmp_path / "site" / "dpo_gpu_bench_probe.py").is_file()  # installed offline, --no-deps, --target
    assert "installed the carried wheels" in log
    rows = {r["case"]: r for r in json.loads((out / "gpu_bench.json").read_text())["rows"]}
    # Without CUDA there is no QLoRA (bitsandbytes NF4) and no FlashAttention: the three LoRA cases.
    assert sorted(rows) == ["dpo grouped lora-bf16", "dpo padding-free lora-bf16", "plain TRL lora-bf16"]
    for row in rows.values():
        assert row["s_per_step"] > 0 and row["tokens_per_s"] > 0 and row["whole_s"] > 0, row
    table = (out / "gpu_bench.md").read_text()
    assert "| dpo padding-free lora-bf16 |" in table and "plain TRL / this" in table
    assert "CPU" in table.splitlines()[0]  # the header says where it ran


def test_without_a_gpu_it_refuses_clearly(tmp_path: Path) -> None:
    code, log = run(tmp_path, "--out", str(tmp_path / "bench"))
    assert code != 0
    assert "no CUDA GPU here; `--cpu-check`" in log
    assert "Traceback" not in log
