"""The accelerate launch: generated files and the exact argv, asserted without spawning anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dpo_cli.config.loader import load_config
from dpo_cli.config.rules import cross_field_problems
from dpo_cli.errors import ConfigError, DpoError
from dpo_cli.train import launch
from tests.conftest import ROOT

MISTRAL = ROOT / "configs" / "mistral.yaml"
SMOKE = ROOT / "configs" / "smoke.yaml"


class Recorder:
    """Stands in for the process runner: keeps the argv and env, returns a chosen exit code."""

    def __init__(self, code: int = 0):
        self.code = code
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def __call__(self, argv, env):
        self.calls.append((list(argv), dict(env)))
        return self.code


def mistral(tmp_path: Path, *extra: str):
    return load_config(MISTRAL, [f"output_dir={tmp_path / 'run'}", *extra])


def test_single_node_zero3_files_and_argv(tmp_path: Path) -> None:
    cfg = mistral(tmp_path)
    args = launch.train_args(str(MISTRAL), [], overwrite=False, resume=False, skip_validation=False)
    plan = launch.plan_launch(cfg, args)
    folder = (tmp_path / "run" / "launch").resolve()
    acc_path, ds_path = folder / "accelerate.yaml", folder / "deepspeed.json"
    assert set(plan.files) == {acc_path, ds_path}

    ds = json.loads(plan.files[ds_path])
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["offload_param"] == {"device": "none"} and zero["offload_optimizer"] == {"device": "none"}
    # Precision and batch sizes have one name each: training:, read by transformers in every rank.
    assert ds["bf16"] == {"enabled": "auto"} and ds["fp16"] == {"enabled": "auto"}
    assert ds["train_micro_batch_size_per_gpu"] == "auto" and ds["gradient_accumulation_steps"] == "auto"
    assert "optimizer" not in ds

    acc = yaml.safe_load(plan.files[acc_path])
    assert acc["distributed_type"] == "DEEPSPEED"
    assert acc["deepspeed_config"] == {"deepspeed_config_file": str(ds_path), "zero3_init_flag": True}
    assert "mixed_precision" not in acc  # with a DeepSpeed file, accelerate refuses it
    assert acc["num_processes"] == 8 and acc["num_machines"] == 1 and acc["use_cpu"] is False

    assert plan.argv == [
        "accelerate", "launch", "--config_file", str(acc_path),
        "--num_processes", "8", "--num_machines", "1", "--machine_rank", "0", "--main_process_port", "29500",
        "-m", "dpo_cli", "train", str(MISTRAL),
    ]  # fmt: skip
    assert plan.env == {}


def test_multi_node_settings_pass_through(tmp_path: Path) -> None:
    cfg = mistral(
        tmp_path,
        "launch.num_processes=16",
        "launch.num_machines=2",
        "launch.machine_rank=1",
        "launch.main_process_ip=10.0.0.1",
        "launch.main_process_port=6000",
    )
    args = launch.train_args("cfg.yaml", ["launch.machine_rank=1"], overwrite=False, resume=True, skip_validation=False)
    plan = launch.plan_launch(cfg, args)
    acc_path = (tmp_path / "run" / "launch" / "accelerate.yaml").resolve()
    assert plan.argv == [
        "accelerate", "launch", "--config_file", str(acc_path),
        "--num_processes", "16", "--num_machines", "2", "--machine_rank", "1",
        "--main_process_ip", "10.0.0.1", "--main_process_port", "6000",
        "-m", "dpo_cli", "train", "cfg.yaml", "--set", "launch.machine_rank=1", "--resume",
    ]  # fmt: skip
    acc = yaml.safe_load(plan.files[acc_path])
    # Same file on every node (shared file system); each node's rank is its own flag.
    assert acc["main_process_ip"] == "10.0.0.1" and "machine_rank" not in acc
    # torchrun on every node, as a scheduler starts it, rather than pdsh from the main node.
    assert acc["deepspeed_config"]["deepspeed_multinode_launcher"] == "standard"


def test_ddp_has_no_deepspeed_file(tmp_path: Path) -> None:
    cfg = load_config(SMOKE, [f"output_dir={tmp_path}", "launch.num_processes=2", "training.use_cpu=true"])
    plan = launch.plan_launch(cfg, ["smoke.yaml"])
    (acc_text,) = plan.files.values()
    acc = yaml.safe_load(acc_text)
    assert acc["distributed_type"] == "MULTI_GPU" and acc["use_cpu"] is True and "deepspeed_config" not in acc
    assert plan.env == {}  # DS_ACCELERATOR only matters to DeepSpeed


def test_cpu_deepspeed_tells_deepspeed_its_accelerator(tmp_path: Path) -> None:
    cfg = load_config(
        SMOKE,
        [
            f"output_dir={tmp_path}",
            "launch.num_processes=2",
            "training.use_cpu=true",
            "launch.deepspeed={zero_stage: 3}",
        ],
    )
    plan = launch.plan_launch(cfg, ["smoke.yaml"])
    assert plan.env == {"DS_ACCELERATOR": "cpu"}
    assert plan.command_line().startswith("DS_ACCELERATOR=cpu accelerate launch --config_file ")


def test_zero2_with_optimizer_offload(tmp_path: Path) -> None:
    cfg = mistral(tmp_path, "launch.deepspeed.zero_stage=2", "launch.deepspeed.offload_optimizer=cpu")
    ds = json.loads(next(t for p, t in launch.plan_launch(cfg, ["c"]).files.items() if p.suffix == ".json"))
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert not any(key.startswith("stage3") or key == "offload_param" for key in ds["zero_optimization"])
    assert ds["optimizer"]["type"] == "AdamW" and ds["optimizer"]["params"]["lr"] == "auto"
    acc = yaml.safe_load(next(t for p, t in launch.plan_launch(cfg, ["c"]).files.items() if p.suffix == ".yaml"))
    assert "zero3_init_flag" not in acc["deepspeed_config"]


def test_user_files_are_used_as_they_are(tmp_path: Path) -> None:
    acc = tmp_path / "my-accelerate.yaml"
    acc.write_text("distributed_type: DEEPSPEED\nnum_processes: 4\n")
    ds = tmp_path / "my-ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    cfg = mistral(tmp_path, "launch.deepspeed=null", f"launch.accelerate_config={acc}", f"launch.deepspeed_config={ds}")
    plan = launch.plan_launch(cfg, ["c.yaml"])
    assert plan.files == {}
    # Only topology the config sets explicitly overrides the user's file.
    assert plan.argv == [
        "accelerate", "launch", "--config_file", str(acc.resolve()), "--num_processes", "8",
        "--use_deepspeed", "--deepspeed_config_file", str(ds.resolve()), "-m", "dpo_cli", "train", "c.yaml",
    ]  # fmt: skip


def test_user_accelerate_mixed_precision_is_refused(tmp_path: Path) -> None:
    acc = tmp_path / "acc.yaml"
    acc.write_text("distributed_type: MULTI_GPU\nmixed_precision: fp16\n")
    cfg = mistral(tmp_path, f"launch.accelerate_config={acc}")
    with pytest.raises(DpoError) as info:
        launch.plan_launch(cfg, ["c"])
    assert "mixed_precision: fp16" in info.value.message and str(acc.resolve()) in info.value.message


def test_user_deepspeed_json_errors_name_the_line(tmp_path: Path) -> None:
    ds = tmp_path / "ds.json"
    ds.write_text('{\n  "zero_optimization": {"stage": 3},\n  oops\n}\n')
    cfg = mistral(tmp_path, "launch.deepspeed=null", f"launch.deepspeed_config={ds}")
    with pytest.raises(DpoError) as info:
        launch.plan_launch(cfg, ["c"])
    assert "line 3" in info.value.message and info.value.exit_code == 2
    missing = mistral(tmp_path, "launch.deepspeed=null", f"launch.deepspeed_config={tmp_path / 'nope.json'}")
    with pytest.raises(DpoError, match="file not found"):
        launch.plan_launch(missing, ["c"])


def test_launch_writes_files_then_runs_the_exact_argv(tmp_path: Path) -> None:
    cfg = mistral(tmp_path)
    run = Recorder()
    assert launch.launch(cfg, ["c.yaml", "--overwrite"], overwrite=True, run=run) == 0
    ((argv, env),) = run.calls
    plan = launch.plan_launch(cfg, ["c.yaml", "--overwrite"])
    assert Path(argv[0]).name == "accelerate" and argv[1:] == plan.argv[1:]
    assert env["DPO_LAUNCHED"] == "1"
    for path, text in plan.files.items():
        assert path.read_text() == text
    assert not any(p.name.endswith(".tmp") for p in path.parent.iterdir())


def test_launch_refuses_an_earlier_run_before_starting_anything(tmp_path: Path) -> None:
    cfg = mistral(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("{}\n")
    run = Recorder()
    with pytest.raises(DpoError, match="not empty"):
        launch.launch(cfg, ["c.yaml"], run=run)
    assert run.calls == [] and not (tmp_path / "run" / "launch").exists()


def test_other_nodes_do_not_refuse_the_run_rank_0_started(tmp_path: Path) -> None:
    cfg = mistral(tmp_path, "launch.num_machines=2", "launch.machine_rank=1", "launch.main_process_ip=10.0.0.1")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("written by node 0\n")
    run = Recorder()
    assert launch.launch(cfg, ["c.yaml"], run=run) == 0 and len(run.calls) == 1


def test_launch_dir_alone_is_not_an_earlier_run(tmp_path: Path) -> None:
    cfg = mistral(tmp_path)
    launch.dry_run(cfg, ["c.yaml"])  # writes run/launch/ only
    assert launch.launch(cfg, ["c.yaml"], run=Recorder()) == 0


def test_failed_and_interrupted_launches_become_clear_errors(tmp_path: Path) -> None:
    cfg = mistral(tmp_path)
    with pytest.raises(DpoError) as info:
        launch.launch(cfg, ["c.yaml"], run=Recorder(code=1))
    assert "8-process run failed" in info.value.message and info.value.exit_code == 1
    (tmp_path / "run" / "run.json").write_text(json.dumps({"status": "interrupted"}))
    with pytest.raises(DpoError) as info:
        launch.launch(cfg, ["c.yaml"], overwrite=True, run=Recorder(code=1))
    assert info.value.exit_code == 130 and "--resume" in info.value.details[0]


def test_launcher_is_needed_only_outside_one(tmp_path: Path) -> None:
    multi = mistral(tmp_path)
    single = load_config(SMOKE, [f"output_dir={tmp_path}"])
    assert launch.needs_launcher(multi, env={})
    assert not launch.needs_launcher(single, env={})
    for name in ("LOCAL_RANK", "WORLD_SIZE", "ACCELERATE_USE_DEEPSPEED", "DPO_LAUNCHED"):
        assert not launch.needs_launcher(multi, env={name: "1"}), name
    # One GPU with DeepSpeed (for offload) still goes through the launcher.
    assert launch.needs_launcher(load_config(SMOKE, [f"output_dir={tmp_path}", "launch.deepspeed={}"]), env={})
    assert "no launcher needed" in launch.dry_run(single, ["smoke.yaml"])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["training.gradient_checkpointing_kwargs={use_reentrant: false}"], "needs re-entrant checkpointing"),
        (["quantization.bnb_4bit_quant_storage=uint8"], "must equal `bnb_4bit_compute_dtype`"),
        (["launch.deepspeed.offload_optimizer=cpu", "training.optim=sgd"], "`training.optim: sgd` would be ignored"),
    ],
)
def test_known_zero3_traps_are_config_errors(tmp_path: Path, overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        mistral(tmp_path, *overrides)
    assert len(info.value.problems) == 1 and expected in info.value.problems[0]
    assert cross_field_problems(mistral(tmp_path)) == []


def test_dry_run_prints_a_runnable_launch_without_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from dpo_cli.cli.main import app\n"
        f"r = CliRunner().invoke(app, ['train', {str(MISTRAL)!r}, '--dry-run', '--set', 'output_dir={tmp_path}/run'])\n"
        "print(r.output)\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'deepspeed', 'peft') if m in sys.modules]\n"
        "assert r.exit_code == 0, r.output\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=False, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    folder = tmp_path / "run" / "launch"
    assert f"accelerate launch --config_file {folder / 'accelerate.yaml'} --num_processes 8" in out
    assert f"-m dpo_cli train {MISTRAL}" in out
    assert '"stage": 3' in out and "distributed_type: DEEPSPEED" in out
    # The printed command runs as is: the files it names are there, and nothing else is.
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["launch"]
    assert json.loads((folder / "deepspeed.json").read_text())["zero_optimization"]["stage"] == 3


def test_overwrite_keeps_the_launch_files_other_ranks_still_read(tmp_path: Path) -> None:
    from dpo_cli.rundir import init_run_dir

    (tmp_path / "launch").mkdir()
    (tmp_path / "launch" / "deepspeed.json").write_text("{}")
    (tmp_path / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "run.json").write_text('{"status": "completed"}\n')
    init_run_dir(tmp_path, overwrite=True, resume=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["launch"]
    assert (tmp_path / "launch" / "deepspeed.json").read_text() == "{}"


def test_resume_drops_the_interrupted_segments_end_record(tmp_path: Path) -> None:
    from dpo_cli.rundir import read_metrics, truncate_metrics

    path = tmp_path / "metrics.jsonl"
    rows = [
        {"step": 1, "loss": 0.7},
        {"step": 2, "loss": 0.6},
        {"step": 2, "train_runtime": 3.0},
        {"step": 3, "loss": 0.5},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    truncate_metrics(path, 2)
    assert read_metrics(path) == rows[:2]


def test_the_launcher_holds_the_lock_for_its_ranks(tmp_path: Path) -> None:
    """Issue 15, item 1: a second launch on the same folder (here through a symlink) is refused before it writes."""
    from dpo_cli.rundir import LOCK_ENV

    cfg = mistral(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path / "run", target_is_directory=True)
    twin = load_config(MISTRAL, [f"output_dir={tmp_path / 'link'}"])
    refused: list[str] = []

    def first_run(argv, env):
        assert env[LOCK_ENV] == str((tmp_path / "run").resolve())
        launch_files = {p: p.read_text() for p in (tmp_path / "run" / "launch").iterdir()}
        try:
            launch.launch(twin, ["c.yaml", "--overwrite"], overwrite=True, run=Recorder())
        except DpoError as exc:
            refused.append(exc.message)
        assert {p: p.read_text() for p in (tmp_path / "run" / "launch").iterdir()} == launch_files
        return 0

    assert launch.launch(cfg, ["c.yaml"], run=first_run) == 0
    assert len(refused) == 1 and "in use by another dpo process" in refused[0]


def test_an_interrupted_launch_prints_the_exact_resume_command(tmp_path: Path) -> None:
    import shlex

    cfg = mistral(tmp_path)
    args = launch.train_args(
        "my cfg.yaml",
        ["training.beta=0.2", "launch.num_processes=8"],
        overwrite=True,
        resume=False,
        skip_validation=True,
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(
        json.dumps({"status": "interrupted", "checkpoint": "run/checkpoints/checkpoint-7"})
    )
    with pytest.raises(DpoError) as info:
        launch.launch(cfg, args, overwrite=True, run=Recorder(code=1))
    assert info.value.exit_code == 130 and "checkpoint-7" in info.value.message
    assert shlex.split(info.value.details[0].removeprefix("resume with: ")) == [
        "dpo",
        "train",
        "my cfg.yaml",
        "--set",
        "training.beta=0.2",
        "--set",
        "launch.num_processes=8",
        "--skip-validation",
        "--resume",
    ]
    (tmp_path / "run" / "run.json").write_text(json.dumps({"status": "interrupted", "checkpoint": None}))
    with pytest.raises(DpoError) as info:
        launch.launch(cfg, args, overwrite=True, run=Recorder(code=1))
    assert "nothing to resume" in info.value.message and info.value.details[0].endswith("--overwrite")


# An atexit handler that aborts stands for a C++ destructor that aborts during interpreter
# finalization, as gloo's did on a CI machine after a ZeRO-3 run had finished.
FINISHED_RANK = """
import atexit, os, sys
os.environ.update(WORLD_SIZE="2", RANK=sys.argv[1])
atexit.register(os.abort)
from dpo_cli.train.launch import exit_worker_rank
print("trained")  # a pipe is block-buffered: this is lost unless the exit flushes it
exit_worker_rank()
"""


def test_a_finished_worker_rank_ends_before_finalization() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FINISHED_RANK, "1"], check=False, capture_output=True, text=True, cwd=ROOT
    )
    assert (done.returncode, done.stdout) == (0, "trained\n"), done.stderr


def test_the_main_rank_and_a_single_process_exit_as_usual() -> None:
    """The main rank's atexit handlers run (trackers flush there), so here the stand-in abort fires."""
    done = subprocess.run(
        [sys.executable, "-c", FINISHED_RANK, "0"], check=False, capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == -6 and done.stdout == "trained\n"
