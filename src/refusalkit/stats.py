"""Binomial-proportion intervals shared by every layer.

Two interval methods exist in refusalkit, each for its own job:
- the Wilson score interval here, for a plain count ``k`` of ``n`` (refusal-token calibration cells, the
  sampling floor of a split, attack success at k);
- the percentile bootstrap in ``evaluate.metrics``, for ``eval``'s refusal rates, because those are corrected
  for the detector's own error rates (Rogan-Gladen) and the bootstrap carries that correction's uncertainty,
  which a closed-form interval for ``k / n`` cannot.
"""

from __future__ import annotations

import math
from statistics import NormalDist

_Z95 = 1.959963984540054


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Return the Wilson score interval ``(lo, hi)`` of ``k`` successes in ``n`` trials at ``level``
    (``(0.0, 1.0)`` when ``n`` is 0: nothing observed, nothing excluded)."""
    if n == 0:
        return (0.0, 1.0)
    z = _Z95 if level == 0.95 else NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))
