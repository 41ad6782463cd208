"""Example scoring functions for `generate.scorer` (`dpo generate-pairs`, `dpo iterate`).

A scoring function is any `f(prompt: str, response: str) -> float`; higher is better. `prompt`
is the prompt's last user message, `response` the model's answer without special tokens.
Write your own in a file next to your config and name it `path/to/file.py:function`, or in an
importable module as `module:function`.
"""

from __future__ import annotations


def concise(prompt: str, response: str) -> float:
    """Fewer words score higher: minus the word count (a preference DPO learns in a round or two)."""
    return -float(len(response.split()))


def echoes_prompt(prompt: str, response: str) -> float:
    """The share of the prompt's longer words (4+ letters) that the response uses: a crude relevance score."""
    wanted = {w.strip(".,?!:;'\"").lower() for w in prompt.split() if len(w.strip(".,?!:;'\"")) >= 4}
    if not wanted:
        return 0.0
    used = {w.strip(".,?!:;'\"").lower() for w in response.split()}
    return len(wanted & used) / len(wanted)
