"""Calibration: from one forward pass per prompt (no generation) to per-category thresholds that hit
target refusal rates or maximise F1, with the curves, a held-out check and a saved profile.

Rates. A category's refusal rate is the share of that category's should-not-comply prompts for which the
policy emits a refusal token (any refusal token: the user controls how often a category is refused).
Contrast prompts (should comply) are reported beside it as the over-refusal rate. A prompt is refused
when any refusal token passes its threshold, so a category's rate depends mostly on its own threshold
and a little on the others; :func:`thresholds_for_rates` starts from the paper's per-category quantile
and then accounts for the other tokens (coordinate-wise, a few rounds).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from refusalkit.errors import RefusalkitError
from refusalkit.stats import wilson
from refusalkit.tokens.policy import Policy
from refusalkit.tokens.scheme import TokenScheme

TARGET_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)


def parse_targets(spec: str, scheme: TokenScheme) -> dict[str, float]:
    """Return ``{category: rate}`` from ``"Cat A=0.9,Cat B=20%"``; ``*=R`` sets every category.

    Raises RefusalkitError for an unknown category or a rate outside [0, 1].
    """
    cats = ["*"] if scheme.mode == "single" else list(scheme.categories)
    by_short = {s: c for c, s in scheme.categories.items()}
    out: dict[str, float] = {}
    star = None
    for part in [p for p in spec.split(",") if p.strip()]:
        if "=" not in part:
            raise RefusalkitError(
                f"bad --target item {part!r}: expected CATEGORY=RATE, e.g. 'Requests with safety concerns=0.9'"
            )
        name, _, val = part.rpartition("=")
        name, val = name.strip(), val.strip()
        try:
            r = float(val[:-1]) / 100 if val.endswith("%") else float(val)
        except ValueError:
            raise RefusalkitError(f"bad rate {val!r} for {name!r}: give a number like 0.9 or 90%") from None
        if not 0 <= r <= 1:
            raise RefusalkitError(f"rate for {name!r} must be within [0, 1], got {r}")
        if name == "*":
            star = r  # applied below, so named categories win whatever the order
            continue
        cat = name if name in cats else by_short.get(name)
        if scheme.mode == "single":
            cat = "*"
        if cat is None:
            raise RefusalkitError(f"unknown category {name!r} in --target; known: {', '.join(cats)}")
        out[cat] = r
    if star is not None:
        out = {**{c: star for c in cats}, **out}
    if not out:
        raise RefusalkitError("empty --target")
    return out


def score_prompts(
    hf: Any,
    prompts: list[str],
    token_ids: dict[str, int],
    scheme: TokenScheme,
    *,
    temperature: float = 1.0,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Return ``[n, len(scheme.tokens)]`` control-token probabilities at the first response position.

    One forward pass per prompt, no generation.
    """
    from refusalkit.tokens.policy import control_probs

    ids = [token_ids[t] for t in scheme.tokens]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding per batch
    out = np.zeros((len(prompts), len(ids)))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        logits = hf.next_token_logits([prompts[i] for i in idx], batch_size=len(idx))
        out[idx] = control_probs(logits, ids, temperature)
        if on_batch:
            on_batch(len(idx))
    return out


def _cat_index(scheme: TokenScheme, category: str | None) -> int | None:
    if scheme.mode == "single":
        return 0
    cats = list(scheme.categories)
    return cats.index(category) if category in cats else None


def _threshold_passing(q: np.ndarray, m: int) -> float:
    """Return a threshold that exactly ``m`` of the values ``q`` reach: the midpoint, in log space,
    between the m-th and (m+1)-th largest values (so small calibration sets do not put the threshold on
    a calibration prompt's own score)."""
    s = np.sort(np.asarray(q, dtype=np.float64))[::-1]
    n = len(s)
    if n == 0:
        return 1.0
    lo = lambda x: math.log(max(x, 1e-30))  # noqa: E731
    if m <= 0:
        return (
            float(min(1.0, math.exp(lo(s[0]) + 0.5 * abs(lo(s[0])) * 0 + math.log(2.0))))
            if s[0] < 0.5
            else float((s[0] + 1.0) / 2)
        )
    if m >= n:
        return float(math.exp(lo(s[-1]) - math.log(2.0)))
    return float(math.exp((lo(s[m - 1]) + lo(s[m])) / 2))


def thresholds_for_rates(
    q: np.ndarray,
    categories: list[str | None],
    refuse: np.ndarray,
    scheme: TokenScheme,
    targets: dict[str, float],
    *,
    joint: bool = True,
    rounds: int = 8,
    base: dict[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Return ``(thresholds, notes)``: per category, the threshold whose refusal rate on the category's
    should-not-comply calibration prompts is closest to its target.

    Independent (the paper): ``t_k`` = the ``(1 - r_k)`` quantile of ``q_k`` over category k's prompts.
    Joint (default): the prompts already refused by other tokens count towards the target, adjusted over
    a few rounds. Categories without a target keep ``base`` (or have no threshold). ``notes`` flags
    targets that cannot be met (other tokens already refuse more than the target).
    """
    cats = ["*"] if scheme.mode == "single" else list(scheme.categories)
    thr: dict[str, float] = dict(base or {})
    members = {
        c: np.array(
            [
                (_cat_index(scheme, categories[i]) == k or scheme.mode == "single") and refuse[i]
                for i in range(len(categories))
            ]
        )
        for k, c in enumerate(cats)
    }
    for k, c in enumerate(cats):
        if c in targets:
            mask = members[c]
            if scheme.mode == "single":
                mask = refuse.astype(bool) & np.array([cc in targets or True for cc in categories])
            if mask.sum() == 0:
                raise RefusalkitError(f"no calibration prompts to refuse in category {c!r}")
            thr[c] = _threshold_passing(q[mask, k], round(targets[c] * mask.sum()))
    notes: dict[str, Any] = {"joint": joint and len(cats) > 1, "infeasible": {}}
    if not notes["joint"]:
        return thr, notes
    for _ in range(rounds):
        changed = False
        for k, c in enumerate(cats):
            if c not in targets:
                continue
            mask = members[c]
            qk = q[mask]
            others = np.zeros(len(qk), dtype=bool)
            for j, cj in enumerate(cats):
                if j != k and cj in thr:
                    others |= qk[:, j] >= thr[cj]
            need = round(targets[c] * mask.sum()) - int(others.sum())
            if need < 0:
                notes["infeasible"][c] = {"target": targets[c], "min_rate": float(others.mean())}
            new = _threshold_passing(qk[~others, k], max(need, 0))
            if not math.isclose(new, thr.get(c, -1.0), rel_tol=1e-9):
                thr[c], changed = new, True
        if not changed:
            break
    return thr, notes


def f1_thresholds(q: np.ndarray, refuse: np.ndarray, scheme: TokenScheme, *, rounds: int = 4) -> dict[str, float]:
    """Return thresholds that maximise binary F1 (should-not-comply positive, refused = any refusal token
    passes its threshold) over all the given prompts, by coordinate ascent from the model's argmax."""
    cats = ["*"] if scheme.mode == "single" else list(scheme.categories)
    n_ref = len(cats)
    y = refuse.astype(bool)
    # start: each token's threshold at its median score on its own positives (a neutral point)
    thr = np.array([float(np.median(q[:, k])) for k in range(n_ref)])
    for _ in range(rounds):
        for k in range(n_ref):
            others = np.zeros(len(q), dtype=bool)
            for j in range(n_ref):
                if j != k:
                    others |= q[:, j] >= thr[j]
            cand = np.unique(np.concatenate([q[:, k], [1.0 + 1e-9]]))
            best, best_t = -1.0, thr[k]
            for t in cand:
                pred = others | (q[:, k] >= t)
                tp = np.sum(pred & y)
                f1 = 2 * tp / max(pred.sum() + y.sum(), 1)
                if f1 > best + 1e-12:
                    best, best_t = f1, t
            # use the log-midpoint below the chosen value so the threshold is not a calibration score
            below = q[:, k][q[:, k] < best_t]
            thr[k] = float(math.sqrt(best_t * below.max())) if len(below) and best_t <= 1.0 else float(min(best_t, 1.0))
    return {c: float(thr[k]) for k, c in enumerate(cats)}


def rates_by_category(refused: np.ndarray, categories: list[str | None], refuse: np.ndarray) -> dict[str, Any]:
    """Return per category the refusal rate on should-not-comply and on contrast prompts, with counts and
    95% Wilson intervals, plus the overall binary precision, recall and F1 (should-not-comply positive)."""
    agg: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"refuse": [0, 0], "comply": [0, 0]})
    for r, c, y in zip(refused, categories, refuse):
        a = agg[c or "(none)"]["refuse" if y else "comply"]
        a[0] += int(r)
        a[1] += 1
    per: dict[str, Any] = {}
    for c in sorted(agg):
        d: dict[str, Any] = {}
        for kind, key in (("refuse", "harmful"), ("comply", "contrast")):
            k, n = agg[c][kind]
            if n:
                lo, hi = wilson(k, n)
                d[key] = {"refused": k, "n": n, "rate": k / n, "ci95": [lo, hi]}
        per[c] = d
    y = refuse.astype(bool)
    p = np.asarray(refused, dtype=bool)
    tp, fp, fn = int(np.sum(p & y)), int(np.sum(p & ~y)), int(np.sum(~p & y))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {
        "per_category": per,
        "binary": {"precision": prec, "recall": rec, "f1": f1, "n": int(len(y)), "tp": tp, "fp": fp, "fn": fn},
    }


def curves(
    q: np.ndarray, categories: list[str | None], refuse: np.ndarray, scheme: TokenScheme, n_points: int = 200
) -> dict[str, dict[str, list[float]]]:
    """Return per category the refusal-rate-vs-threshold curve (own token; on the category's
    should-not-comply and contrast prompts), the ROC (positives: the category's should-not-comply prompts;
    negatives: all contrast prompts) with its AUC, and F1 per threshold."""
    cats = ["*"] if scheme.mode == "single" else list(scheme.categories)
    grid = np.concatenate([[0.0], np.logspace(-6, 0, n_points - 1)])
    y = refuse.astype(bool)
    out = {}
    for k, c in enumerate(cats):
        own = np.array([(cc == c or scheme.mode == "single") for cc in categories])
        pos = own & y
        con = own & ~y
        neg = ~y
        if pos.sum() == 0:
            continue
        qk = q[:, k]
        rate = [float(np.mean(qk[pos] >= t)) for t in grid]
        crate = [float(np.mean(qk[con] >= t)) for t in grid] if con.any() else []
        fpr = [float(np.mean(qk[neg] >= t)) for t in grid] if neg.any() else []
        sub = pos | neg
        f1 = []
        for t in grid:
            pred = qk[sub] >= t
            f1.append(float(2 * np.sum(pred & pos[sub]) / max(pred.sum() + pos[sub].sum(), 1)))
        auc = None
        if neg.any():
            from sklearn.metrics import roc_auc_score

            auc = float(roc_auc_score(np.r_[np.ones(pos.sum()), np.zeros(neg.sum())], np.r_[qk[pos], qk[neg]]))
        out[c] = {
            "threshold": grid.tolist(),
            "rate": rate,
            "contrast_rate": crate,
            "tpr": rate,
            "fpr": fpr,
            "f1": f1,
            "auc": auc,
            "n_harmful": int(pos.sum()),
            "n_contrast": int(con.sum()),
            "n_negatives": int(neg.sum()),
        }
    return out


def plot_curves(
    curve_data: dict[str, Any], out_dir: Any, *, thresholds: dict[str, float] | None = None, title: str = ""
) -> list[str]:
    """Write ``rate_vs_threshold.png``, ``roc.png`` and ``f1.png`` to ``out_dir``; return their paths."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, ylab in (("rate_vs_threshold", "refusal rate"), ("roc", "true positive rate"), ("f1", "F1")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (c, d) in enumerate(curve_data.items()):
            color = f"C{i}"
            if name == "roc":
                if d["fpr"]:
                    ax.plot(d["fpr"], d["tpr"], color=color, label=f"{c} (AUC {d['auc']:.2f})")
            elif name == "f1":
                ax.plot(d["threshold"][1:], d["f1"][1:], color=color, label=c)
            else:
                ax.plot(d["threshold"][1:], d["rate"][1:], color=color, label=f"{c}: should refuse")
                if d["n_contrast"]:
                    ax.plot(d["threshold"][1:], d["contrast_rate"][1:], color=color, ls="--", label=f"{c}: contrast")
            if thresholds and c in thresholds and name != "roc":
                ax.axvline(thresholds[c], color=color, ls=":", lw=1)
        if name == "roc":
            ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
            ax.set_xlabel("false positive rate (contrast prompts refused)")
        else:
            ax.set_xscale("log")
            ax.set_xlabel("threshold on the category's refusal-token probability")
        ax.set_ylabel(ylab)
        ax.set_title(f"{title} {name.replace('_', ' ')}".strip(), fontsize=10)
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = out / f"{name}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(str(p))
    return paths


def gap_table(
    q_cal: np.ndarray,
    cats_cal: list,
    y_cal: np.ndarray,
    q_test: np.ndarray,
    cats_test: list,
    y_test: np.ndarray,
    scheme: TokenScheme,
    *,
    targets: tuple[float, ...] = TARGET_GRID,
    temperature: float = 1.0,
    joint: bool = True,
) -> list[dict[str, Any]]:
    """Return one row per (target, category): the calibrated threshold, the achieved test-split rate with
    its 95% Wilson interval, the gap, and whether the target lies inside the interval. Every category gets
    the same target at once (one policy per target)."""
    cats = ["*"] if scheme.mode == "single" else list(scheme.categories)
    rows = []
    for r in targets:
        thr, notes = thresholds_for_rates(q_cal, cats_cal, y_cal, scheme, {c: r for c in cats}, joint=joint)
        pol = Policy(scheme, thresholds=thr, temperature=temperature)
        refused = pol.refuses(q_test)
        rates = rates_by_category(refused, cats_test, y_test)["per_category"]
        for c in cats:
            h: dict[str, Any] | None = (
                rates.get(c, {}).get("harmful")
                if scheme.mode == "category"
                else {
                    "refused": int(refused[y_test.astype(bool)].sum()),
                    "n": int(y_test.sum()),
                    "rate": float(refused[y_test.astype(bool)].mean()),
                }
            )
            if not h:
                continue
            lo, hi = wilson(h["refused"], h["n"])
            rows.append(
                {
                    "target": r,
                    "category": c,
                    "threshold": thr[c],
                    "n": h["n"],
                    "achieved": h["rate"],
                    "ci95": [lo, hi],
                    "gap": h["rate"] - r,
                    "within_ci": lo <= r <= hi,
                    "infeasible": c in notes["infeasible"],
                }
            )
    return rows


def gap_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Return a gap table's summary: ``mean_abs_gap`` over its cells (None when empty), ``outside`` (cells
    whose target lies outside the achieved rate's 95% interval), ``n`` cells and ``per_target`` mean |gap|."""
    by_t: dict[float, list[float]] = defaultdict(list)
    for r in rows:
        by_t[r["target"]].append(abs(r["gap"]))
    gaps = [g for v in by_t.values() for g in v]
    return {
        "mean_abs_gap": sum(gaps) / len(gaps) if gaps else None,
        "outside": sum(not r["within_ci"] for r in rows),
        "n": len(rows),
        "per_target": {t: sum(v) / len(v) for t, v in sorted(by_t.items())},
    }
