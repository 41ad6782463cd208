"""`dpo doctor`: known-bad detection on synthetic stacks, and the real report as JSON."""

from __future__ import annotations

import json
import subprocess
import sys

from dpo_cli.doctor import find_problems

GOOD = {
    "python": "3.11.7",
    "torch": "2.13.0+cu128",
    "transformers": "5.23.0",
    "trl": "1.16.0",
    "peft": "0.21.2",
    "accelerate": "1.15.0",
    "deepspeed": "0.19.8",
    "bitsandbytes": "0.50.2",
    "datasets": "5.2.0",
    "numpy": "2.4.6",
}
H100 = {
    "cuda": "12.8",
    "gpus": [{"index": 0, "name": "H100", "memory_gib": 79.2, "compute_capability": "9.0", "bf16": True}],
}


def bad(problems):
    return [p.what for p in problems if p.severity == "bad"]


def test_the_tested_stack_has_no_problems():
    assert find_problems(GOOD, H100, deepspeed_torch="2.13") == []


def test_old_trl_and_transformers_4_are_known_bad():
    found = bad(find_problems({**GOOD, "trl": "0.12.0", "transformers": "4.46.3"}))
    assert any("trl 0.12.0" in w for w in found)
    assert any("transformers 4.46.3" in w for w in found)


def test_numpy_2_with_old_torch_is_known_bad():
    assert any("numpy" in w for w in bad(find_problems({**GOOD, "torch": "2.2.2", "numpy": "2.0.1"})))
    assert not bad(find_problems({**GOOD, "torch": "2.2.2", "numpy": "1.26.4"}))


def test_deepspeed_built_against_another_torch_is_known_bad():
    found = find_problems(GOOD, deepspeed_torch="2.5")
    assert any("built against torch 2.5" in w for w in bad(found))
    assert "undefined symbol" in next(p.symptom for p in found if p.severity == "bad")


def test_declared_requirement_violation_is_known_bad():
    declared = {"trl": ["accelerate>=1.10.1", "transformers>=4.56.2", "rich; extra == 'rich'"]}
    found = bad(find_problems({**GOOD, "accelerate": "0.34.0"}, declared=declared))
    assert found == ["trl 1.16.0 needs accelerate>=1.10.1, found 0.34.0"]


def test_out_of_range_and_device_findings_are_warnings_only():
    pre_ampere = {
        "cuda": "12.1",
        "gpus": [{"index": 0, "name": "V100", "memory_gib": 32, "compute_capability": "7.0", "bf16": False}],
    }
    found = find_problems({**GOOD, "peft": "0.22.0"}, pre_ampere)
    assert not bad(found)
    whats = " ".join(p.what for p in found)
    assert "peft 0.22.0 is outside the tested range" in whats and "bfloat16" in whats
    assert any("no CUDA GPU" in p.what for p in find_problems(GOOD, {"gpus": []}))


def test_missing_torch_is_known_bad():
    assert "torch is not installed" in bad(find_problems({**GOOD, "torch": None}))


def test_doctor_json_parses():
    # A subprocess: the doctor imports torch for the devices, which unit tests must not.
    proc = subprocess.run(
        [sys.executable, "-m", "dpo_cli", "doctor", "--json"], capture_output=True, check=False, text=True
    )
    report = json.loads(proc.stdout)
    assert proc.returncode == (0 if report["ok"] else 1)
    assert report["versions"]["trl"] and report["versions"]["python"]
    assert "gpus" in report["devices"] and "trl" in report["known_good"]
    assert all({"severity", "what", "symptom", "fix"} <= set(p) for p in report["problems"])
