"""`training.report_to` is checked before any model loads, from one table of trackers (no torch)."""

from __future__ import annotations

import importlib.util

import pytest

from dpo_cli.errors import EXIT_USAGE, DpoError
from dpo_cli.train.tracking import TRACKERS, Tracker, check_trackers, requested_trackers


def only_installed(monkeypatch, *modules: str) -> None:
    """Make `find_spec` find just `modules` (nothing is installed or removed)."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in modules else None)


@pytest.mark.parametrize("value", ["none", "all", None, [], ["none"]])
def test_nothing_to_check(value) -> None:
    assert requested_trackers(value) == []
    check_trackers(value)


def test_installed_trackers_pass() -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("trackio")
    check_trackers(["tensorboard", "trackio"])
    check_trackers("tensorboard")


def test_a_missing_tracker_names_its_package_and_extra(monkeypatch) -> None:
    only_installed(monkeypatch)
    with pytest.raises(DpoError) as info:
        check_trackers("tensorboard")
    assert info.value.exit_code == EXIT_USAGE
    assert info.value.message == (
        "training.report_to: `tensorboard` needs the `tensorboard` package, which is not installed: "
        "pip install 'dpo-cli[tracking]' (or pip install tensorboard)"
    )
    with pytest.raises(DpoError) as info:
        check_trackers(["wandb", "trackio"])
    assert info.value.details == [
        "`wandb` needs the `wandb` package, which is not installed: pip install wandb",
        "`trackio` needs the `trackio` package, which is not installed: pip install 'dpo-cli[tracking]' "
        + "(or pip install trackio)",
    ]


def test_tensorboardx_is_enough_for_tensorboard(monkeypatch) -> None:
    only_installed(monkeypatch, "tensorboardX")
    check_trackers("tensorboard")  # transformers accepts either writer


def test_an_unknown_tracker_gets_the_closest_name() -> None:
    with pytest.raises(DpoError) as info:
        check_trackers(["tensorbord"])
    assert "`tensorbord` is not a tracker transformers knows; did you mean `tensorboard`?" in info.value.message


def test_a_module_whose_parent_is_missing_is_reported_not_raised(monkeypatch) -> None:
    monkeypatch.setitem(TRACKERS, "azure_ml", Tracker("azure_ml", ("no_such_package_dpo.core.run",), "azureml-core"))
    with pytest.raises(DpoError, match="`azure_ml` needs the `no_such_package_dpo.core.run` package"):
        check_trackers("azure_ml")
