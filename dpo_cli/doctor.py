"""`dpo doctor` as a library: versions, devices, tested ranges, and known-bad combinations.

The checks are pure functions of a versions dict and a device dict (`find_problems`), so tests
feed them synthetic stacks; only `collect` touches the real environment. Versions come from
package metadata (`importlib.metadata`), so a broken package is still reported instead of
crashing the doctor on import; torch alone is imported, for the devices.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import platform
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from dpo_cli.errors import EXIT_USAGE, DpoError

if TYPE_CHECKING:
    from dpo_cli.config.schema import RunConfig

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "deepspeed", "bitsandbytes", "datasets", "numpy")
# The stack a run records in its run.json.
RUN_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "deepspeed")

# What this project is tested with (the versions in its CI environment, widened to the
# releases it is written against). Outside these: a warning, not a failure.
KNOWN_GOOD: dict[str, str] = {
    "python": ">=3.10,<3.14",
    "torch": ">=2.4,<2.14",
    "transformers": ">=5.0,<6",
    "trl": ">=1.16,<1.17",
    "peft": ">=0.21,<0.22",
    "accelerate": ">=1.10,<2",
    "datasets": ">=4.7,<6",
    "deepspeed": ">=0.16,<0.20",
    "bitsandbytes": ">=0.45,<0.51",
}


@dataclass(frozen=True)
class Problem:
    """A finding: `bad` ones fail `dpo doctor`; `warn` ones are printed only."""

    severity: str  # bad | warn
    what: str
    symptom: str
    fix: str


@dataclass
class Report:
    """Everything `dpo doctor` prints (and `--json` dumps)."""

    versions: dict[str, str | None]
    devices: dict[str, Any]
    known_good: dict[str, str] = field(default_factory=lambda: dict(KNOWN_GOOD))
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "bad" for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def _v(text: str | None) -> Version | None:
    if text is None:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _release(text: str | None) -> Version | None:
    # Local tags (`2.13.0+cu128`) must not change range checks.
    parsed = _v(text)
    return Version(parsed.base_version) if parsed else None


def find_problems(
    versions: dict[str, str | None],
    devices: dict[str, Any] | None = None,
    declared: dict[str, list[str]] | None = None,
    deepspeed_torch: str | None = None,
) -> list[Problem]:
    """Known-bad combinations and out-of-range versions in a stack.

    Args:
        versions: Package name -> installed version, None when not installed (`python` too).
        devices: `collect_devices()` output; None skips the device checks.
        declared: Package -> its own `Requires-Dist` lines, to check installed peers against.
        deepspeed_torch: The torch `major.minor` DeepSpeed was built against.

    Returns:
        Every problem found, `bad` ones first.
    """
    found: list[Problem] = []
    rel = {name: _release(text) for name, text in versions.items()}

    for name in ("torch", "transformers", "trl"):
        if rel.get(name) is None:
            found.append(Problem("bad", f"{name} is not installed", "`dpo train` cannot start", f"pip install {name}"))
    trl = rel.get("trl")
    if trl is not None and trl < Version("1.16"):
        found.append(
            Problem(
                "bad",
                f"trl {versions['trl']} is older than 1.16",
                "dpo's `training:` names and its trainer build follow TRL 1.16's DPOConfig/DPOTrainer; older "
                "releases reject or ignore them (TypeError at DPOConfig, no fused LM head: full logits in memory)",
                "pip install 'trl>=1.16,<2'",
            )
        )
    transformers = rel.get("transformers")
    if transformers is not None and transformers.major < 5:
        found.append(
            Problem(
                "bad",
                f"transformers {versions['transformers']} is a 4.x release",
                "dpo loads models with transformers 5 arguments (`dtype=`); 4.x fails or silently loads fp32",
                "pip install 'transformers>=5,<6'",
            )
        )
    numpy, torch = rel.get("numpy"), rel.get("torch")
    if numpy is not None and torch is not None and numpy.major >= 2 and torch < Version("2.3"):
        found.append(
            Problem(
                "bad",
                f"numpy {versions['numpy']} with torch {versions['torch']}",
                "torch wheels before 2.3 are built against NumPy 1.x: 'A module that was compiled using NumPy 1.x "
                "cannot be run in NumPy 2', then tensor/array conversion fails",
                "pip install 'numpy<2' (or upgrade torch)",
            )
        )
    if deepspeed_torch and torch is not None and versions.get("deepspeed"):
        built = _v(deepspeed_torch)
        if built is not None and (built.major, built.minor) != (torch.major, torch.minor):
            found.append(
                Problem(
                    "bad",
                    f"deepspeed {versions['deepspeed']} was built against torch {deepspeed_torch}, "
                    f"torch {versions['torch']} is installed",
                    "DeepSpeed's compiled ops fail to load ('undefined symbol') or JIT-rebuild on every launch; "
                    "`ds_report` shows the mismatch",
                    "pip install --no-build-isolation --force-reinstall --no-deps deepspeed",
                )
            )
    for package, lines in (declared or {}).items():
        if rel.get(package) is None:
            continue
        for line in lines:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if req.marker is not None and "extra" in str(req.marker):
                continue
            name = req.name.lower().replace("_", "-")
            have = versions.get(name)
            if name not in versions or have is None or not req.specifier:
                continue
            if not SpecifierSet(str(req.specifier)).contains(_release(have) or have, prereleases=True):
                found.append(
                    Problem(
                        "bad",
                        f"{package} {versions[package]} needs {name}{req.specifier}, found {have}",
                        f"{package} fails at import or mid-run with missing {name} attributes",
                        f"pip install '{name}{req.specifier}'",
                    )
                )
    for name, spec in KNOWN_GOOD.items():
        have = rel.get(name)
        if have is not None and not SpecifierSet(spec).contains(have, prereleases=True):
            found.append(
                Problem(
                    "warn",
                    f"{name} {versions[name]} is outside the tested range {spec}",
                    "untested: may work; report problems with `dpo doctor --json` attached",
                    f"pip install '{name}{spec}'",
                )
            )
    if devices is not None:
        found.extend(_device_problems(versions, devices))
    return sorted(found, key=lambda p: p.severity != "bad")


def _device_problems(versions: dict[str, str | None], devices: dict[str, Any]) -> list[Problem]:
    found = []
    gpus = devices.get("gpus", [])
    if not gpus:
        found.append(
            Problem(
                "warn",
                "no CUDA GPU visible",
                "training runs on the CPU (fine for smoke tests; QLoRA and DeepSpeed need a GPU)",
                "check CUDA_VISIBLE_DEVICES and that torch is a CUDA build (`torch.version.cuda`)",
            )
        )
    if gpus and not all(g.get("bf16") for g in gpus):
        found.append(
            Problem(
                "warn",
                "a GPU without bfloat16 support (compute capability below 8.0)",
                "TRL turns bf16 on by default; `dpo train` stops with a bf16 error",
                "set `training.bf16: false` and `training.fp16: true`",
            )
        )
    if gpus and versions.get("bitsandbytes") is None:
        found.append(
            Problem(
                "warn",
                "bitsandbytes is not installed",
                "QLoRA configs (`quantization:`) fail to load",
                "pip install bitsandbytes",
            )
        )
    if gpus and versions.get("deepspeed") is None:
        found.append(
            Problem(
                "warn",
                "deepspeed is not installed",
                "configs with `launch.deepspeed` fail at launch",
                "pip install --no-build-isolation deepspeed",
            )
        )
    return found


def collect_versions(names: Iterable[str] = PACKAGES, *, python: bool = True) -> dict[str, str | None]:
    """Installed versions from package metadata, without importing the packages (None: not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version()} if python else {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def installed_versions(names: Iterable[str] = RUN_PACKAGES, *, python: bool = True) -> dict[str, str]:
    """`collect_versions` without the packages that are not installed (run.json, model cards)."""
    return {name: v for name, v in collect_versions(names, python=python).items() if v is not None}


def collect_declared() -> dict[str, list[str]]:
    """Each installed package's own requirements, to check its peers against."""
    declared = {}
    for name in PACKAGES:
        try:
            declared[name] = list(requires(name) or [])
        except PackageNotFoundError:
            pass
    return declared


def deepspeed_built_torch() -> str | None:
    """The torch version DeepSpeed recorded at build time, read from its file without importing it."""
    spec = importlib.util.find_spec("deepspeed")
    if spec is None or not spec.submodule_search_locations:
        return None
    info = Path(next(iter(spec.submodule_search_locations))) / "git_version_info_installed.py"
    if not info.is_file():
        return None
    for node in ast.parse(info.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "torch_info" for t in node.targets):
            try:
                return str(ast.literal_eval(node.value).get("version"))
            except (ValueError, AttributeError):
                return None
    return None


def collect_devices() -> dict[str, Any]:
    """CUDA runtime, cuDNN and each visible GPU with its memory and bf16 support."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append(
                {
                    "index": index,
                    "name": props.name,
                    "memory_gib": round(props.total_memory / 1024**3, 1),
                    "compute_capability": f"{props.major}.{props.minor}",
                    "bf16": props.major >= 8,
                }
            )
    return {
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpus": gpus,
        "cpu_bf16": True,  # torch supports bf16 autocast on every CPU it runs on (slowly without AVX512-BF16)
    }


def collect() -> Report:
    """Inspect this environment."""
    versions = collect_versions()
    devices = collect_devices() if versions.get("torch") else {"cuda": None, "cudnn": None, "gpus": []}
    problems = find_problems(versions, devices, collect_declared(), deepspeed_built_torch())
    return Report(versions=versions, devices=devices, problems=problems)


def render(report: Report) -> str:
    """The report as `dpo doctor` prints it."""
    lines = ["versions (tested range):"]
    for name, have in report.versions.items():
        spec = report.known_good.get(name, "")
        lines.append(f"  {name:<13} {have or 'not installed':<18} {spec}")
    dev = report.devices
    lines.append(f"devices: CUDA {dev.get('cuda') or 'none'}, cuDNN {dev.get('cudnn') or 'none'}")
    for gpu in dev.get("gpus", []):
        lines.append(
            f"  cuda:{gpu['index']} {gpu['name']}, {gpu['memory_gib']} GiB, "
            f"compute {gpu['compute_capability']}, bf16 {'yes' if gpu['bf16'] else 'no'}"
        )
    if not dev.get("gpus"):
        lines.append("  no GPU; CPU only")
    for problem in report.problems:
        lines.append(f"{'KNOWN BAD' if problem.severity == 'bad' else 'warning'}: {problem.what}")
        lines.append(f"  symptom: {problem.symptom}")
        lines.append(f"  fix: {problem.fix}")
    lines.append("ok" if report.ok else "known-bad combination found: fix the lines marked KNOWN BAD before training")
    return "\n".join(lines)


def preflight(cfg: RunConfig, *, main: bool) -> None:
    """Hardware checks before a run loads anything, separate from config validation so configs
    validate on a laptop.

    Args:
        cfg: The run config.
        main: This is the main process (the one that prints notes).

    Raises:
        DpoError: The precision or quantization asked for cannot run here.
    """
    import torch

    t = cfg.training
    cuda = torch.cuda.is_available() and not t.use_cpu
    if not t.use_cpu and launched_without_gpu() and main:
        print(
            f"note: no GPU visible: the {os.environ.get('WORLD_SIZE')} processes train on the CPU "
            "(as with `training.use_cpu: true`)",
            file=sys.stderr,
            flush=True,
        )
    if t.fp16 and not cuda:
        raise DpoError("training.fp16 needs a CUDA GPU; none is in use here (set `fp16: false`)", exit_code=EXIT_USAGE)
    bf16 = t.bf16 if t.bf16 is not None else not t.fp16
    if bf16 and cuda and not torch.cuda.is_bf16_supported():
        raise DpoError(
            f"training.bf16: {torch.cuda.get_device_name()} has no bfloat16 support",
            exit_code=EXIT_USAGE,
            details=["set `training.fp16: true` and `training.bf16: false` (pre-Ampere GPUs)"],
        )
    if cfg.quantization is not None:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise DpoError("quantization needs bitsandbytes: pip install bitsandbytes", exit_code=EXIT_USAGE) from None


def launched_without_gpu() -> bool:
    """True in a rank of a multi-process launch on a machine where no GPU is visible.

    Such a run trains on the CPU whatever `training.use_cpu` says: without it transformers sizes
    the batch for one process while DeepSpeed counts every rank, and ZeRO refuses to start
    ("train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size").
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch

    return not torch.cuda.is_available()
