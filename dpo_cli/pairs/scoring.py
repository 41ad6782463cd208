"""Scores for sampled responses: a user's function, or any `dpo eval` judge.

A pointwise scorer (a function `f(prompt, response) -> float`, or a reward model) gives each
response its own number. A pairwise judge (an endpoint or a local LLM answering the rubric)
only says which of two is better, so each response's score is its Copeland score: the share
of the other responses it beats, judged in both orders (a win counts 1, a tie or an
inconsistent pair 1/2). Higher is better either way.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
import sys
from collections.abc import Callable
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_cli.errors import EXIT_USAGE, DpoError

if TYPE_CHECKING:
    from dpo_cli.config.schema import RunConfig


def load_function(reference: str, *, key: str = "generate.scorer") -> Callable[..., Any]:
    """`module:function` (importable, or found from the current directory) or `path/to/file.py:function`.

    Raises:
        DpoError: The module or file cannot be imported, or has no such callable.
    """
    target, _, name = reference.rpartition(":")
    try:
        if target.endswith(".py") or "/" in target:
            path = Path(target).expanduser()
            if not path.is_file():
                raise DpoError(f"{key}: {reference}: file {path} not found", exit_code=EXIT_USAGE)
            spec = importlib.util.spec_from_file_location(f"dpo_user_scorer_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))  # as `python -m` would: the project's own modules
            module = importlib.import_module(target)
    except DpoError:
        raise
    except Exception as exc:  # noqa: BLE001  (a user's module can fail to import in any way; say which and why)
        raise DpoError(
            f"{key}: {reference}: importing `{target}` failed: {type(exc).__name__}: {exc}", exit_code=EXIT_USAGE
        ) from None
    function = getattr(module, name, None)
    if not callable(function):
        raise DpoError(f"{key}: {reference}: `{target}` has no function `{name}`", exit_code=EXIT_USAGE)
    return function


class _Pointwise:
    """A scorer that rates each response on its own: ranking is scoring each."""

    pointwise = True

    def score(self, prompt: str, response: str, *, where: str = "") -> float:
        raise NotImplementedError

    def rank(self, prompt: str, responses: list[str], *, where: str = "") -> list[float]:
        return [self.score(prompt, r, where=where) for r in responses]


class FunctionScorer(_Pointwise):
    """`f(prompt, response) -> float`, where `prompt` is the prompt's last user message."""

    def __init__(self, reference: str):
        self.function = load_function(reference)
        self.reference = reference
        self.name = f"function {reference}"

    def check(self) -> None:
        """Nothing to reach: the function imported."""

    def score(self, prompt: str, response: str, *, where: str = "") -> float:
        try:
            value = self.function(prompt, response)
        except Exception as exc:  # noqa: BLE001  (the user's code; report where it failed and stop)
            raise DpoError(f"generate.scorer: {self.reference} raised {type(exc).__name__}: {exc}{where}") from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise DpoError(
                f"generate.scorer: {self.reference} returned {value!r}{where}; it must return a finite number",
                exit_code=EXIT_USAGE,
            )
        return float(value)


class RewardModelScorer(_Pointwise):
    """A local reward model (`eval.judge.kind: reward_model`): its scalar output is the score."""

    def __init__(self, judge: Any, name: str):
        self.judge, self.name = judge, name

    def check(self) -> None:
        self.judge.check()

    def score(self, prompt: str, response: str, *, where: str = "") -> float:
        return self.judge.score(prompt, response)


class PairwiseScorer:
    """A judge that compares two responses (`endpoint`, `llm`): Copeland scores over both orders."""

    pointwise = False

    def __init__(self, judge: Any, name: str):
        self.judge, self.name = judge, name

    def check(self) -> None:
        self.judge.check()

    def rank(self, prompt: str, responses: list[str], *, where: str = "") -> list[float]:
        from dpo_cli.evaluation.winrate import judge_pair

        points = [0.0] * len(responses)
        for i, j in combinations(range(len(responses)), 2):
            outcome = judge_pair(self.judge, 0, prompt, responses[i], responses[j]).outcome
            gain = {"win": (1.0, 0.0), "loss": (0.0, 1.0), "tie": (0.5, 0.5)}[outcome]
            points[i] += gain[0]
            points[j] += gain[1]
        others = max(len(responses) - 1, 1)
        return [p / others for p in points]


def make_scorer(cfg: RunConfig) -> FunctionScorer | RewardModelScorer | PairwiseScorer:
    """`generate.scorer` when set, else the judge of `eval.judge`.

    Raises:
        DpoError: Neither is set, or the scorer cannot be loaded.
    """
    if cfg.generate.scorer:
        return FunctionScorer(cfg.generate.scorer)
    if cfg.eval.judge is None:
        raise DpoError(
            "generate.scorer is not set and there is no eval.judge: nothing can score the responses",
            exit_code=EXIT_USAGE,
            details=["set `generate.scorer: module:function`, or an `eval.judge` (endpoint, reward_model, llm)"],
        )
    from dpo_cli.evaluation.judges import describe, make_judge

    judge, name = make_judge(cfg.eval.judge), f"judge {describe(cfg.eval.judge)}"
    return RewardModelScorer(judge, name) if cfg.eval.judge.kind == "reward_model" else PairwiseScorer(judge, name)
