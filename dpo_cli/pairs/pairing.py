"""From scored responses to preference pairs: drop near-duplicates, then pair clear winners with losers."""

from __future__ import annotations

from itertools import combinations
from typing import Literal

# Why a prompt produced no pair, as the summary says it.
REASONS = {
    "empty": "every response was empty",
    "near_identical": "fewer than 2 distinct responses (the others near-identical)",
    "tied": "every distinct response scored the same",
    "small_gap": "no score gap above generate.min_score_gap",
}


def distinct(texts: list[str], max_similarity: float) -> list[int]:
    """Indices of the non-empty responses kept, the first of each near-identical group.

    Similarity is rapidfuzz's normalised Indel similarity (what difflib's ratio approximates,
    computed exactly in C++; `score_cutoff` lets it stop early on clearly different pairs).
    """
    from rapidfuzz.distance import Indel

    kept: list[int] = []
    for i, text in enumerate(texts):
        if not text.strip():
            continue
        if not any(Indel.normalized_similarity(text, texts[k], score_cutoff=max_similarity) for k in kept):
            kept.append(i)
    return kept


def pair_up(
    scores: list[float], pairing: Literal["best_vs_worst", "all"], min_gap: float
) -> tuple[list[tuple[int, int]], str | None]:
    """(chosen, rejected) positions into `scores`, best pairs first, or no pairs and the reason."""
    if max(scores) == min(scores):
        return [], "tied"
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: earlier samples win ties
    if pairing == "best_vs_worst":
        candidates = [(order[0], order[-1])]
    else:
        candidates = list(combinations(order, 2))
    pairs = [(c, r) for c, r in candidates if scores[c] - scores[r] > min_gap]
    return pairs, None if pairs else "small_gap"
