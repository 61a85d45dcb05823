"""Refusal rates with bootstrap intervals, detector-error correction (Rogan-Gladen) and paired tests.

All intervals are percentile bootstrap intervals over prompts (resampled with replacement, seeded). The
corrected rate undoes a detector's known error rates: with sensitivity ``se`` (P(detector says refusal |
refusal)) and specificity ``sp`` (P(detector says compliance | compliance)), an observed rate ``q`` comes
from a true rate ``p = (q + sp - 1) / (se + sp - 1)`` (Rogan & Gladen 1978), clipped to [0, 1]. When the
error rates were measured on a finite validation set, each bootstrap replicate also redraws them from that
set's counts, so the interval carries the detector's uncertainty too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from refusalkit.errors import RefusalkitError

TAXONOMY = ("full_compliance", "partial_refusal", "full_refusal", "redirection")
ROGAN_GLADEN = "p_true = clip((p_obs + specificity - 1) / (sensitivity + specificity - 1), 0, 1)"


@dataclass(frozen=True)
class ErrorRates:
    """A detector's measured sensitivity and specificity for "refusal vs full compliance".

    ``n_pos``/``n_neg`` are the numbers of refusals/compliances they were measured on (``None`` when the
    rates are taken as exact, e.g. given on the command line); ``source`` says where they came from.
    """

    sensitivity: float
    specificity: float
    n_pos: int | None = None
    n_neg: int | None = None
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("sensitivity", "specificity"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                raise RefusalkitError(f"detector {name} must be in [0, 1], got {v}")
        if self.sensitivity + self.specificity <= 1.0:
            raise RefusalkitError(
                f"sensitivity + specificity = {self.sensitivity + self.specificity:.3f} <= 1: the detector is no "
                "better than chance and its rates cannot be corrected"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the rates as a JSON-ready dict."""
        return {
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
            "source": self.source,
        }


def rogan_gladen(p_obs: np.ndarray | float, sens: np.ndarray | float, spec: np.ndarray | float) -> np.ndarray:
    """Return the true-rate estimate ``(p_obs + spec - 1) / (sens + spec - 1)`` clipped to [0, 1]."""
    p_obs, sens, spec = np.asarray(p_obs, float), np.asarray(sens, float), np.asarray(spec, float)
    denom = sens + spec - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(denom > 0, (p_obs + spec - 1.0) / np.where(denom > 0, denom, 1.0), np.nan)
    return np.clip(p, 0.0, 1.0)


def _percentile_ci(samples: np.ndarray, level: float) -> list[float]:
    a = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(samples, [a, 1.0 - a])
    return [float(lo), float(hi)]


def bootstrap_means(x: np.ndarray, *, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Return ``n_boot`` bootstrap replicates of the mean of ``x`` (resampling its rows with replacement).

    ``x`` may be 1-D (one outcome) or 2-D ``[n, k]`` (k outcomes per prompt, resampled together).
    """
    n = len(x)
    idx = rng.integers(0, n, size=(n_boot, n))
    return x[idx].mean(axis=1)


def rate(
    k_or_x: Sequence[int] | np.ndarray, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Return ``{"k", "n", "rate", "ci"}`` for 0/1 outcomes with a percentile bootstrap interval."""
    x = np.asarray(k_or_x, dtype=float)
    n = len(x)
    if n == 0:
        return {"k": 0, "n": 0, "rate": None, "ci": [None, None]}
    rng = np.random.default_rng(seed)
    reps = bootstrap_means(x, n_boot=n_boot, rng=rng)
    return {"k": int(x.sum()), "n": n, "rate": float(x.mean()), "ci": _percentile_ci(reps, level)}


def group_metrics(
    labels: Sequence[str],
    *,
    errors: ErrorRates | None = None,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    p_refusal: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Return the metrics of one group of judged responses.

    ``labels`` are taxonomy labels. The result has ``n``; ``refusal`` (any label but full compliance) and one
    entry per taxonomy label, each ``{"k", "n", "rate", "ci"}``; ``mean_p_refusal``; and ``corrected_refusal``
    (Rogan-Gladen, with its interval and the inputs of the formula) when ``errors`` is given, else ``None``.
    All intervals come from the same bootstrap replicates.
    """
    labels = list(labels)
    n = len(labels)
    for lab in labels:
        if lab not in TAXONOMY:
            raise RefusalkitError(f"unknown verdict label {lab!r}; expected one of {', '.join(TAXONOMY)}")
    out: dict[str, Any] = {"n": n}
    if n == 0:
        empty = {"k": 0, "n": 0, "rate": None, "ci": [None, None]}
        out.update(
            {"refusal": empty, **{t: empty for t in TAXONOMY}, "corrected_refusal": None, "mean_p_refusal": None}
        )
        return out
    cols = ["refusal", *TAXONOMY]
    x = np.zeros((n, len(cols)))
    for i, lab in enumerate(labels):
        x[i, 0] = lab != "full_compliance"
        x[i, 1 + TAXONOMY.index(lab)] = 1.0
    rng = np.random.default_rng(seed)
    reps = bootstrap_means(x, n_boot=n_boot, rng=rng)
    for j, c in enumerate(cols):
        out[c] = {
            "k": int(x[:, j].sum()),
            "n": n,
            "rate": float(x[:, j].mean()),
            "ci": _percentile_ci(reps[:, j], level),
        }
    out["mean_p_refusal"] = None if p_refusal is None else float(np.mean(p_refusal))
    out["corrected_refusal"] = None
    if errors is not None:
        q = out["refusal"]["rate"]
        sens = np.full(n_boot, errors.sensitivity)
        spec = np.full(n_boot, errors.specificity)
        # The detector's rates were themselves estimated: redraw them per replicate from their counts.
        if errors.n_pos:
            sens = rng.binomial(errors.n_pos, errors.sensitivity, n_boot) / errors.n_pos
        if errors.n_neg:
            spec = rng.binomial(errors.n_neg, errors.specificity, n_boot) / errors.n_neg
        corr = rogan_gladen(reps[:, 0], sens, spec)
        out["corrected_refusal"] = {
            "rate": float(rogan_gladen(q, errors.sensitivity, errors.specificity)),
            "ci": _percentile_ci(corr, level),
            "observed": q,
            **errors.to_dict(),
            "formula": ROGAN_GLADEN,
        }
    return out


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
    """Return McNemar's exact test for paired 0/1 outcomes: discordant counts and the two-sided p-value."""
    x, y = np.asarray(a, bool), np.asarray(b, bool)
    n01 = int((~x & y).sum())  # refused only by B
    n10 = int((x & ~y).sum())  # refused only by A
    m = n01 + n10
    if m == 0:
        p = 1.0
    else:
        from scipy.stats import binomtest

        p = float(binomtest(n01, m, 0.5).pvalue)
    return {"only_a": n10, "only_b": n01, "p_value": p, "test": "McNemar exact (binomial on discordant pairs)"}


def paired_difference(
    a: Sequence[bool], b: Sequence[bool], *, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Return the paired difference of refusal rates ``B - A`` on the same prompts: estimate, bootstrap
    interval (prompts resampled as pairs) and McNemar's exact test."""
    x = np.stack([np.asarray(a, float), np.asarray(b, float)], axis=1)
    n = len(x)
    if n == 0:
        return {"n": 0, "diff": None, "ci": [None, None], **mcnemar_exact([], [])}
    rng = np.random.default_rng(seed)
    reps = bootstrap_means(x, n_boot=n_boot, rng=rng)
    d = reps[:, 1] - reps[:, 0]
    return {
        "n": n,
        "rate_a": float(x[:, 0].mean()),
        "rate_b": float(x[:, 1].mean()),
        "diff": float(x[:, 1].mean() - x[:, 0].mean()),
        "ci": _percentile_ci(d, level),
        **mcnemar_exact(a, b),
    }


def constructive_rate(flags: Sequence[bool | None], *, level: float = 0.95) -> dict[str, Any]:
    """Return the share of non-compliant answers that are constructive (Oyster-I): ``{"k", "n", "rate", "ci",
    "interval"}`` with a Wilson interval.

    ``flags`` holds one entry per response: True/False for a non-compliant answer judged constructive/bare,
    ``None`` for a compliant one (left out of the denominator); with no non-compliant answer ``n`` is 0 and
    ``rate`` is ``None``. The rate is conditional on the detector's non-compliant verdicts. It is not
    corrected for the judge's errors: measured across model families, a Rogan-Gladen correction with the
    judge's held-out error rates moved per-family rates further from the gold rates (docs/constructive.md).
    """
    from refusalkit.stats import wilson

    judged = [bool(f) for f in flags if f is not None]
    n, k = len(judged), sum(judged)
    lo, hi = wilson(k, n, level)
    return {
        "k": k,
        "n": n,
        "rate": k / n if n else None,
        "ci": [lo, hi] if n else [None, None],
        "interval": "wilson",
    }
