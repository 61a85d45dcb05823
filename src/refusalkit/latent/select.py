"""Cliff-as-a-Judge (PAPERS.md section 5): rank a pool of harmful training prompts by how badly the model's
refusal intent holds up, and keep the worst fraction as safety-training data (refusal tokens, DeRTa).

Two scores: the cliff statistic of the model's own reasoning trace (``cliff``: higher is worse, the refusal
intent read in the thinking fell further before the answer), or, without generating, the probe's refusal
probability at the last prompt position (``last_p_refusal``: lower is worse). ``select_random`` is the baseline
of the same size.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from refusalkit.errors import RefusalkitError

SCORE_KINDS = {"cliff": True, "last_p_refusal": False}  # kind -> higher is worse


def n_for(fraction: float, n: int) -> int:
    """Return how many of ``n`` pool prompts a fraction selects: rounded, at least 1."""
    if not 0 < fraction <= 1:
        raise RefusalkitError(f"--fraction must be in (0, 1], got {fraction}")
    return min(n, max(1, round(fraction * n)))


def badness(scores: Sequence[float | None], kind: str) -> np.ndarray:
    """Return a "worse is larger" key per prompt for a score of ``kind`` (missing scores rank last)."""
    if kind not in SCORE_KINDS:
        raise RefusalkitError(f"unknown score kind {kind!r}; use one of {', '.join(SCORE_KINDS)}")
    sign = 1.0 if SCORE_KINDS[kind] else -1.0
    return np.array([-np.inf if s is None or not np.isfinite(s) else sign * float(s) for s in scores])


def select_worst(scores: Sequence[float | None], kind: str, fraction: float) -> list[int]:
    """Return the indices of the worst ``fraction`` of prompts by their score (worst first; ties keep pool order)."""
    key = badness(scores, kind)
    k = n_for(fraction, len(key))
    order = sorted(range(len(key)), key=lambda i: (-key[i], i))
    return order[:k]


def select_random(n: int, fraction: float, seed: int = 0) -> list[int]:
    """Return a seeded random sample of ``fraction`` of ``n`` indices (the same size as ``select_worst``), sorted."""
    return sorted(random.Random(seed).sample(range(n), n_for(fraction, n)))


def selected_rows(
    rows: list[dict[str, Any]], idx: list[int], scores: Sequence[float | None] | None, kind: str | None, how: str
) -> list[dict[str, Any]]:
    """Return the selected input rows (every input field kept) with ``score``, ``score_kind``, ``selection``
    (``cliff-as-a-judge`` or ``random``) and ``selection_rank`` added."""
    out = []
    for rank, i in enumerate(idx, 1):
        r = dict(rows[i])
        r["score"] = None if scores is None or scores[i] is None else round(float(scores[i]), 6)  # type: ignore[arg-type]
        r["score_kind"] = kind
        r["selection"] = how
        r["selection_rank"] = rank
        out.append(r)
    return out
