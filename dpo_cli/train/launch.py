"""Multi-process and multi-node runs: `dpo train` re-run under `accelerate launch`.

The launcher is accelerate's own (torchrun underneath, DeepSpeed when configured); nothing
here spawns ranks. This module only turns the `launch:` section into the two files accelerate
reads (an accelerate config YAML and, for DeepSpeed, a DeepSpeed JSON) and into the exact
`accelerate launch -m dpo_cli train ...` command line, which `--dry-run` prints for a SLURM
script and `launch()` runs.

Precision is not a launch setting: the DeepSpeed JSON says `"auto"` for bf16/fp16 and the
accelerate config names no `mixed_precision`, so `training.bf16` / `training.fp16` decide,
read by transformers inside each rank. No torch import here: a dry run loads no weights.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.fsio import atomic_write_text
from dpo_cli.rundir import LAUNCH_DIR, check_run_dir

# Set by torchrun / accelerate in every rank; one of them means "already launched, just train".
LAUNCHED_ENV = ("LOCAL_RANK", "WORLD_SIZE", "ACCELERATE_USE_DEEPSPEED", "DPO_LAUNCHED")
ACCELERATE_FILE = "accelerate.yaml"
DEEPSPEED_FILE = "deepspeed.json"
# Topology keys that also travel as `accelerate launch` flags, so a job script can vary them per node.
TOPOLOGY = ("num_processes", "num_machines", "machine_rank", "main_process_ip", "main_process_port")

Runner = Callable[[list[str], Mapping[str, str]], int]


@dataclass(frozen=True)
class LaunchPlan:
    """Everything a multi-process launch needs, computed without side effects.

    Attributes:
        argv: The full command, starting with `accelerate`.
        env: Variables added to the caller's environment for the launch.
        files: Generated files (path -> text) that must exist before `argv` runs.
    """

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[Path, str] = field(default_factory=dict)

    def command_line(self) -> str:
        """The command as one shell line, environment assignments first."""
        prefix = [f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items())]
        return " ".join([*prefix, *(shlex.quote(a) for a in self.argv)])


def inside_launcher(env: Mapping[str, str] | None = None) -> bool:
    """True in a rank started by a launcher (torchrun, accelerate, deepspeed)."""
    env = os.environ if env is None else env
    return any(env.get(name) for name in LAUNCHED_ENV)


def wants_launcher(cfg: Any) -> bool:
    """True when the config asks for a launcher: several processes, or DeepSpeed (even on one GPU, for offload)."""
    launch = cfg.launch
    return (
        launch.num_processes > 1
        or launch.deepspeed is not None
        or bool(launch.deepspeed_config or launch.accelerate_config)
    )


def needs_launcher(cfg: Any, env: Mapping[str, str] | None = None) -> bool:
    """True when `dpo train` must re-run itself under `accelerate launch` (it is not inside one yet)."""
    return wants_launcher(cfg) and not inside_launcher(env)


def deepspeed_config(cfg: Any) -> dict[str, Any]:
    """The DeepSpeed JSON generated from `launch.deepspeed`.

    Batch sizes, accumulation, clipping, precision and bucket sizes are `"auto"`: transformers
    fills them from `training:` in each rank, so each setting keeps one name.
    """
    ds = cfg.launch.deepspeed
    zero: dict[str, Any] = {
        "stage": ds.zero_stage,
        "offload_optimizer": {"device": ds.offload_optimizer},
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if ds.offload_optimizer == "cpu":
        zero["offload_optimizer"]["pin_memory"] = True
    if ds.zero_stage == 3:
        zero["offload_param"] = {"device": ds.offload_param}
        if ds.offload_param == "cpu":
            zero["offload_param"]["pin_memory"] = True
        zero.update(
            {
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
                # Without it, final/ would hold shards that only DeepSpeed can read back.
                "stage3_gather_16bit_weights_on_model_save": ds.zero3_save_16bit_model,
            }
        )
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
    }
    if ds.offload_optimizer == "cpu":
        # DeepSpeed refuses a torch optimizer with offload; its AdamW becomes the CPU Adam kernel.
        # The learning-rate schedule stays the one `training.lr_scheduler_type` names.
        config["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"},
        }
    return config


def accelerate_config(cfg: Any, deepspeed_file: Path | None) -> dict[str, Any]:
    """The accelerate config YAML generated from `launch:` (and `training.use_cpu`)."""
    launch = cfg.launch
    config: dict[str, Any] = {"compute_environment": "LOCAL_MACHINE"}
    if deepspeed_file is not None:
        ds_section: dict[str, Any] = {"deepspeed_config_file": str(deepspeed_file)}
        zero3 = launch.deepspeed is None or launch.deepspeed.zero_stage == 3
        if launch.deepspeed is not None and zero3:
            ds_section["zero3_init_flag"] = launch.deepspeed.zero3_init
        if launch.num_machines > 1:
            # torchrun on every node (what SLURM and most schedulers run), not pdsh from the main node.
            ds_section["deepspeed_multinode_launcher"] = "standard"
        config["distributed_type"] = "DEEPSPEED"
        config["deepspeed_config"] = ds_section
    else:
        config["distributed_type"] = "MULTI_GPU"
    for name in TOPOLOGY:
        value = getattr(launch, name)
        # machine_rank differs per node and travels as a flag; the shared file stays the same on every node.
        if value is not None and name != "machine_rank":
            config[name] = value
    config["rdzv_backend"] = "static"
    config["same_network"] = True
    config["use_cpu"] = bool(cfg.training.use_cpu)
    return config


def launch_dir(cfg: Any) -> Path:
    return Path(cfg.output_dir) / LAUNCH_DIR


def plan_launch(cfg: Any, train_args: list[str]) -> LaunchPlan:
    """Files and command for running `dpo train` with `train_args` under `accelerate launch`.

    Args:
        cfg: The validated run config.
        train_args: Arguments after `dpo train` (config path, `--set` overrides, flags), passed
            on unchanged to every rank.

    Raises:
        DpoError: A user-provided accelerate or DeepSpeed file is missing or contradicts `training:`.
    """
    launch = cfg.launch
    folder = launch_dir(cfg)  # as given: relative paths keep a job script portable
    files: dict[Path, str] = {}
    env: dict[str, str] = {}

    ds_file: Path | None = None
    if launch.deepspeed_config:
        ds_file = _user_file(launch.deepspeed_config, "launch.deepspeed_config")
        _check_user_deepspeed(ds_file)
    elif launch.deepspeed is not None:
        ds_file = folder / DEEPSPEED_FILE
        files[ds_file] = _json(deepspeed_config(cfg))

    if launch.accelerate_config:
        acc_file = _user_file(launch.accelerate_config, "launch.accelerate_config")
        _check_user_accelerate(acc_file)
        # The user's file holds the topology; only what the config or --num-processes set explicitly overrides it.
        flags = [name for name in TOPOLOGY if name in launch.model_fields_set]
    else:
        acc_file = folder / ACCELERATE_FILE
        files[acc_file] = yaml.safe_dump(accelerate_config(cfg, ds_file), sort_keys=False)
        flags = list(TOPOLOGY)

    argv = ["accelerate", "launch", "--config_file", str(acc_file)]
    for name in flags:
        value = getattr(launch, name)
        if value is not None:
            argv += [f"--{name}", str(value)]
    if ds_file is not None and launch.accelerate_config:
        argv += ["--use_deepspeed", "--deepspeed_config_file", str(ds_file)]
    argv += ["-m", "dpo_cli", "train", *train_args]

    if cfg.training.use_cpu and ds_file is not None:
        # DeepSpeed picks its accelerator at import time; on CPU it needs telling.
        env["DS_ACCELERATOR"] = "cpu"
    return LaunchPlan(argv=argv, env=env, files=files)


def write_files(plan: LaunchPlan) -> None:
    """Write the generated files atomically (a concurrent reader never sees half a file)."""
    for path, text in plan.files.items():
        atomic_write_text(path, text)


def describe(plan: LaunchPlan) -> str:
    """Each generated file, then the command, as `--dry-run` prints them."""
    parts = []
    for path, text in plan.files.items():
        parts.append(f"# written: {path}\n{text.rstrip()}\n")
    parts.append(f"# command\n{plan.command_line()}\n")
    return "\n".join(parts)


def run_forwarding_signals(argv: list[str], env: Mapping[str, str]) -> int:
    """Run `argv` and pass SIGTERM/SIGINT on to it, so its ranks checkpoint before exiting.

    Returns:
        The launcher's exit code (130 when the ranks stopped on a signal, as `dpo train` does).
    """
    try:
        process = subprocess.Popen(argv, env={**os.environ, **env})
    except FileNotFoundError:
        raise DpoError(
            f"{argv[0]}: command not found", exit_code=EXIT_USAGE, details=["pip install accelerate deepspeed"]
        ) from None

    def forward(signum: int, frame: Any) -> None:
        process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def train_args(
    config_path: str,
    overrides: list[str] | None,
    *,
    overwrite: bool,
    resume: bool,
    skip_validation: bool,
    strict: bool = False,
    data_check: str | None = None,
) -> list[str]:
    """The `dpo train` arguments every rank gets: the same config, overrides and flags."""
    args = [config_path]
    for override in overrides or []:
        args += ["--set", override]
    if data_check is not None:
        args += ["--data-check", data_check]
    flags = (
        ("--overwrite", overwrite),
        ("--resume", resume),
        ("--skip-validation", skip_validation),
        ("--strict", strict),
    )
    for flag, on in flags:
        if on:
            args.append(flag)
    return args


def dry_run(cfg: Any, args: list[str]) -> str:
    """What `dpo train --dry-run` does: write the launch files, return what to print.

    The files are written (into `output_dir/launch/`, which a run directory check ignores) so
    that the printed command runs as is from a job script. No weights are loaded, no process
    is started.
    """
    if not wants_launcher(cfg):
        command = shlex.join(["dpo", "train", *args])
        return f"# one process, no launcher needed (set launch.num_processes or --num-processes for more)\n{command}\n"
    plan = plan_launch(cfg, args)
    write_files(plan)
    return describe(plan)


def launch(
    cfg: Any,
    train_args: list[str],
    *,
    overwrite: bool = False,
    resume: bool = False,
    prepare: Callable[[], list[str]] | None = None,
    run: Runner | None = None,
) -> int:
    """Write the launch files into `output_dir/launch/` and run `dpo train` under `accelerate launch`.

    Args:
        cfg: The validated run config (one that `wants_launcher`).
        train_args: Arguments after `dpo train`, passed to every rank.
        overwrite: The run replaces an earlier one (rank 0 clears the directory, keeping `launch/`).
        resume: The run continues the one in `output_dir`.
        prepare: Run on the main node under the run directory's lock, after its check and before any
            file is written; returns arguments added for every rank (`train_or_launch` checks the
            data here and passes `--data-check`).
        run: Runs the command and returns its exit code (`run_forwarding_signals`); tests pass a recorder.

    Returns:
        The launcher's exit code.

    Raises:
        DpoError: `output_dir` holds an earlier run and neither flag allows reusing it, a
            user-provided launch file is unusable, or `prepare` refused. Checked before any process starts.
    """
    import contextlib

    from dpo_cli.rundir import LOCK_ENV, config_inputs, run_lock

    main_node = cfg.launch.machine_rank == 0
    output_dir = Path(cfg.output_dir)
    # Node 0's launcher holds the run directory's lock for the whole run (its rank 0 is told
    # so and does not take it again): a second launch is refused before it writes a launch file.
    with run_lock(output_dir) if main_node else contextlib.nullcontext():
        # Rank 0 is told the lock is held for it, by the resolved path it would lock.
        env = {LOCK_ENV: str(output_dir.expanduser().resolve())} if main_node else {}
        if main_node:
            # The other nodes may start after rank 0 has begun writing the run directory.
            protected = config_inputs(cfg.model_dump(mode="json"), train_args[0] if train_args else None)
            check_run_dir(output_dir, overwrite=overwrite, resume=resume, protected=protected)
        rank_args = [*train_args, *(prepare() if prepare is not None and main_node else [])]
        plan = plan_launch(cfg, rank_args)
        write_files(plan)
        print(f"launching {cfg.launch.num_processes} processes: {plan.command_line()}", file=sys.stderr, flush=True)
        run = run or run_forwarding_signals
        code = run([accelerate_executable(), *plan.argv[1:]], {**plan.env, "DPO_LAUNCHED": "1", **env})
    if code != 0:
        raise _launch_failure(cfg, code, train_args)
    return 0


def _launch_failure(cfg: Any, code: int, train_args: list[str]) -> DpoError:
    # torchrun reports any non-zero rank as a failure (exit 1), so the run's own record says what happened.
    from dpo_cli.errors import EXIT_INTERRUPTED
    from dpo_cli.fsio import read_json

    info_path = Path(cfg.output_dir) / "run.json"
    try:
        info = read_json(info_path) if info_path.is_file() else {}
    except ValueError:
        info = {}
    status = info.get("status")
    args = [a for a in train_args if a not in ("--overwrite", "--resume")]
    if status == "interrupted":
        if info.get("checkpoint") is None and "checkpoint" in info:
            return DpoError(
                "interrupted before any checkpoint was complete; nothing to resume",
                exit_code=EXIT_INTERRUPTED,
                details=[f"start again with: {shlex.join(['dpo', 'train', *args, '--overwrite'])}"],
            )
        kept = info.get("checkpoint") or Path(cfg.output_dir) / "checkpoints"
        return DpoError(
            f"interrupted; the ranks saved a checkpoint: {kept}",
            exit_code=EXIT_INTERRUPTED,
            details=[f"resume with: {shlex.join(['dpo', 'train', *args, '--resume'])}"],
        )
    reason = f": {info['error']}" if status == "failed" and info.get("error") else ""
    return DpoError(
        f"the {cfg.launch.num_processes}-process run failed (accelerate launch exited {code}){reason}; "
        "all ranks were stopped",
        details=["the first failing rank's error is printed above (`error:` lines or its traceback)"],
    )


def accelerate_executable() -> str:
    """`accelerate` on PATH, else the one installed beside this Python (a venv that is not activated)."""
    import shutil

    beside = Path(sys.executable).parent / "accelerate"
    return shutil.which("accelerate") or (str(beside) if beside.is_file() else "accelerate")


def _json(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, indent=2) + "\n"


def _user_file(value: str, key: str) -> Path:
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise DpoError(f"{key}: {value}: file not found", exit_code=EXIT_USAGE)
    return path


def _check_user_accelerate(path: Path) -> None:
    from dpo_cli.config.yaml_safe import load_yaml_file
    from dpo_cli.errors import ConfigError

    try:
        data = load_yaml_file(path) or {}
    except ConfigError as exc:
        raise DpoError(f"launch.accelerate_config: {exc.problems[0]}", exit_code=EXIT_USAGE) from None
    if not isinstance(data, dict):
        raise DpoError(
            f"launch.accelerate_config: {path}: expected a mapping of accelerate settings", exit_code=EXIT_USAGE
        )
    precision = data.get("mixed_precision")
    if precision not in (None, "no"):
        raise DpoError(
            f"launch.accelerate_config: {path}: `mixed_precision: {precision}` would override `training.bf16`/`fp16`",
            exit_code=EXIT_USAGE,
            details=["remove `mixed_precision` from the accelerate config; precision comes from `training:`"],
        )


def _check_user_deepspeed(path: Path) -> None:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DpoError(
            f"launch.deepspeed_config: {path}: line {exc.lineno}: not valid JSON: {exc.msg}", exit_code=EXIT_USAGE
        ) from None
    if not isinstance(data, dict) or "zero_optimization" not in data:
        raise DpoError(f"launch.deepspeed_config: {path}: no `zero_optimization` section", exit_code=EXIT_USAGE)


def is_main_process() -> bool:
    """True on the main rank of a launched run, and in a plain process."""
    return os.environ.get("RANK", "0") == "0"


def launched_rank() -> bool:
    """True in a process that `accelerate launch` started as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def wait_for_all_ranks() -> None:
    """A barrier over the launched run's ranks (nothing in a single process).

    It also drains the process group: a barrier completes only after the collectives queued before it.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def close_process_group() -> None:
    """Tear down torch.distributed before the interpreter exits.

    Left to interpreter shutdown, gloo's worker threads can be destroyed while still joinable,
    and the process dies with `terminate called without an active exception` (SIGABRT) after a
    run that succeeded. Training has no collectives left once `train` returns on this rank.
    """
    import torch.distributed as dist

    # Only in a launched multi-process run, where this process trains once and exits; one process
    # training several runs (a sweep) keeps accelerate's state, which owns the group.
    if launched_rank() and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_worker_rank() -> None:
    """End a launched run's non-main rank that has finished, without interpreter finalization.

    By the time it is called, the main rank has written the whole run (`_finish_run` waits for
    every rank after `run.json` says completed) and this rank has written nothing of its own.
    What is left is finalization, where DeepSpeed's and torch.distributed's C++ objects are
    destroyed in an order Python does not control; on a loaded CI machine a rank died there with
    `terminate called without an active exception` (SIGABRT), so that torchrun reported the
    launch as failed and stopped the main rank (PyTorch's own account of the gloo case:
    pytorch/pytorch#179291). Output is flushed and logging shut down first; exit status 0.
    """
    import logging

    if not launched_rank() or is_main_process():
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said on it
            pass
    os._exit(0)
