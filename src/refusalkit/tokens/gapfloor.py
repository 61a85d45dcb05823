"""How close can calibrated refusal rates come to their targets on a test split of a given size?

A category's achieved test rate differs from its target for two reasons that no model or calibration method
removes: the test split is a finite sample (even the population's exact threshold gives a binomial test
rate), and the threshold itself is estimated from a finite calibration split. This module simulates both
with exchangeable (uniform) scores and the same threshold rule as
:func:`refusalkit.tokens.calibrate.thresholds_for_rates` (independent form), so a measured gap table can
be read against what sampling alone produces. The rule puts the threshold between the same two order
statistics whatever the score distribution; only where it falls between them depends on the distribution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from refusalkit.tokens.calibrate import wilson


def _calibrated_rates(rng: np.random.Generator, n_cal: int, target: float, sims: int) -> np.ndarray:
    """Return the population refusal rates that ``sims`` calibration splits of ``n_cal`` prompts yield for
    ``target``, with the midpoint-in-log-space rule of ``_threshold_passing``."""
    m = round(target * n_cal)
    s = -np.sort(-rng.random((sims, n_cal)), axis=1)  # descending, like _threshold_passing
    if m <= 0:
        thr = np.where(s[:, 0] < 0.5, np.minimum(1.0, 2 * s[:, 0]), (s[:, 0] + 1) / 2)
    elif m >= n_cal:
        thr = s[:, -1] / 2
    else:
        thr = np.sqrt(s[:, m - 1] * s[:, m])
    return 1.0 - thr  # uniform scores: P(score >= thr)


def sampling_floor(
    n_cal: Mapping[str, int],
    n_test: Mapping[str, int],
    targets: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
    *,
    sims: int = 4000,
    seed: int = 0,
) -> dict[str, Any]:
    """Return the mean absolute gap (in rate units) and the share of cells whose target falls outside the
    achieved rate's 95% Wilson interval that sampling alone produces, for a gap table over ``targets`` and
    the categories of ``n_test`` (calibration/test prompts to refuse per category):

    - ``oracle``: thresholds at the population's exact quantile (only the test split's binomial noise);
    - ``calibrated``: thresholds from a calibration split of ``n_cal[c]`` prompts (both noises).
    """
    rng = np.random.default_rng(seed)
    cells: list[dict[str, Any]] = []
    for cat, nt in n_test.items():
        nc = n_cal.get(cat, 0)
        if nt <= 0:
            continue
        for r in targets:
            k_or = rng.binomial(nt, r, sims)
            row: dict[str, Any] = {
                "category": cat,
                "target": r,
                "n_cal": nc,
                "n_test": nt,
                "oracle_abs_gap": float(np.abs(k_or / nt - r).mean()),
                "oracle_outside": _outside_share(k_or, nt, r),
            }
            if nc > 0:
                k_cal = rng.binomial(nt, _calibrated_rates(rng, nc, r, sims))
                row["calibrated_abs_gap"] = float(np.abs(k_cal / nt - r).mean())
                row["calibrated_outside"] = _outside_share(k_cal, nt, r)
            cells.append(row)
    if not cells:
        return {"cells": [], "sims": sims}
    out: dict[str, Any] = {"sims": sims, "seed": seed, "cells": cells}
    for kind in ("oracle", "calibrated"):
        gaps = [c[f"{kind}_abs_gap"] for c in cells if f"{kind}_abs_gap" in c]
        if gaps:
            out[f"{kind}_mean_abs_gap"] = float(np.mean(gaps))
            out[f"{kind}_outside_share"] = float(
                np.mean([c[f"{kind}_outside"] for c in cells if f"{kind}_outside" in c])
            )
    return out


def _outside_share(k: np.ndarray, n: int, target: float) -> float:
    """Return the share of simulated test counts ``k`` whose 95% Wilson interval excludes ``target``."""
    lut = {int(v): wilson(int(v), n) for v in np.unique(k)}
    return float(np.mean([not (lut[int(v)][0] <= target <= lut[int(v)][1]) for v in k]))
