"""`training.push_to_hub` (TRL's field): the run's `final/` with its model card, pushed last.

transformers' own end-of-run push uploads the Trainer's `output_dir` (here `checkpoints/`) with
TRL's generic card, and `Trainer.save_model` would trigger it. `dpo train` saves `final/` without
that push, writes the card, and then uploads `final/` itself to the repository the Trainer
created, after the Trainer's checkpoint pushes have finished (`Trainer.train` waits for them), so
nothing overwrites the card afterwards. A sweep pushes its chosen point again once it has chosen,
so that the repository ends on the winner and its card says why it won.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dpo_cli.errors import DpoError

COMMIT_MESSAGE = "dpo-cli: final weights and model card"


def push_folder(
    repo_id: str,
    folder: Path,
    *,
    token: str | None = None,
    revision: str | None = None,
    private: bool | None = None,
    create: bool = False,
) -> str:
    """Upload `folder` as one commit to the model repository `repo_id`; returns `repo_id`.

    Args:
        repo_id: `owner/name` or `name` (in the token's namespace).
        folder: What to upload (its layout becomes the repository's).
        token: Hub token; None uses the logged-in one.
        revision: Branch to commit to.
        private: Visibility when the repository is created.
        create: Create the repository first when it does not exist.

    Raises:
        DpoError: The upload failed (network, token, permissions).
    """
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        if create:
            repo_id = api.create_repo(repo_id, token=token, private=private, exist_ok=True).repo_id
        api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), commit_message=COMMIT_MESSAGE, token=token, revision=revision
        )
    except (OSError, ValueError) as exc:  # huggingface_hub's HTTP and offline errors are OSErrors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DpoError(
            f"push to the Hub ({repo_id}) failed: {reason}",
            details=[f"the run is complete in {folder.parent}", f"push it again with: hf upload {repo_id} {folder} ."],
        ) from None
    return repo_id


def push_final(trainer: Any, final_dir: Path) -> str:
    """Upload a finished run's `final/` to the repository its Trainer created; returns the repository id."""
    args = trainer.args
    repo_id = getattr(trainer, "hub_model_id", None) or args.hub_model_id
    return push_folder(repo_id, final_dir, token=args.hub_token, revision=getattr(args, "hub_revision", None))


def push_run(run_dir: Path) -> str | None:
    """Upload `RUN/final/` as its config's `push_to_hub` says (nothing when it is off); returns the repository id."""
    from dpo_cli.config.loader import load_config

    t = load_config(Path(run_dir) / "config.yaml").training
    if not getattr(t, "push_to_hub", None):
        return None
    repo_id = getattr(t, "hub_model_id", None) or default_repo_name(Path(run_dir))
    return push_folder(
        repo_id,
        Path(run_dir) / "final",
        token=getattr(t, "hub_token", None),
        revision=getattr(t, "hub_revision", None),
        private=getattr(t, "hub_private_repo", None),
        create=True,
    )


def default_repo_name(run_dir: Path) -> str:
    """The repository a run pushes to without `hub_model_id`: the run directory's name.

    transformers would name it after the Trainer's `output_dir`, which is `checkpoints` here.
    """
    return Path(run_dir).resolve().name
