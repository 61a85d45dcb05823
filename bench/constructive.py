"""Constructive-safety judge, leave-one-source-family-out on the real-response corpus.

The question: given a response that is NOT full compliance, is it constructive (gold label ``redirection``:
a refusal that gives safe help) or bare (gold ``full_refusal``)? ``partial_refusal`` rows have no gold answer
to this question (the guideline's redirection is "a refusal, full, not partial"), so they are left out of
training and scoring; the share of them each judge calls constructive is printed for information only.

For each of the seven model families of ``data/detect/real/corpus.jsonl`` in turn: the shipped recipe
(:class:`refusalkit.detect.constructive.ConstructiveJudge`, its threshold chosen by an inner
leave-one-family-out on the six training families) is trained on the other six families and scored on the
held-out one. Baselines on the same rows: the rule judge (``cues``) and "the default detector says
``redirection``" (the shipped ``default`` detector's label, computed with the prompt). Figures: accuracy,
precision / recall / F1 of "constructive", per family and pooled over the seven held-out folds, with
Wilson 95% intervals for the proportions and a percentile bootstrap (rows resampled, 2,000 replicates) for
pooled F1; and the constructive rate each judge would report against the gold rate (what
``constructive_rate`` in ``eval`` depends on).

Usage:

    OMP_NUM_THREADS=1 python bench/constructive.py [--ablations] [--json OUT.json]

``--ablations`` also scores the recipe without each block (cue features only; embeddings only; response
embedding + cues). Those are reported as ablations, not used to pick the shipped recipe (fixed beforehand).
The detector corpus was labelled by AI-agent labellers under docs/labelling.md; XSTest is never used here.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from refusalkit.detect.constructive import _DIM, FEATURE_NAMES, ConstructiveJudge, CueJudge
from refusalkit.stats import wilson

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "detect" / "real" / "corpus.jsonl"
GOLD = {"redirection": 1, "full_refusal": 0}


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Return n, positives, accuracy, precision, recall, F1 (with Wilson intervals for the proportions),
    and the predicted and gold constructive rates of 0/1 arrays ``y`` (gold) and ``p`` (predicted)."""
    y, p = y.astype(bool), p.astype(bool)
    tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
    n, acc_k = len(y), int((y == p).sum())
    prec = tp / (tp + fp) if tp + fp else None
    rec = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None
    return {
        "n": n,
        "n_constructive": int(y.sum()),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "accuracy": acc_k / n if n else None,
        "accuracy_ci": list(wilson(acc_k, n)),
        "precision": prec,
        "precision_ci": list(wilson(tp, tp + fp)),
        "recall": rec,
        "recall_ci": list(wilson(tp, tp + fn)),
        "f1": f1,
        "gold_rate": float(y.mean()) if n else None,
        "gold_rate_ci": list(wilson(int(y.sum()), n)),
        "predicted_rate": float(p.mean()) if n else None,
        "predicted_rate_ci": list(wilson(int(p.sum()), n)),
    }


def f1_ci(y: np.ndarray, p: np.ndarray, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """Return the percentile bootstrap 95% interval of F1 (rows resampled with replacement)."""
    rng = np.random.default_rng(seed)
    y, p = y.astype(bool), p.astype(bool)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))
    yy, pp = y[idx], p[idx]
    tp = (yy & pp).sum(1)
    den = tp * 2 + (~yy & pp).sum(1) + (yy & ~pp).sum(1)
    f = np.where(den > 0, 2 * tp / np.maximum(den, 1), np.nan)
    lo, hi = np.nanquantile(f, [0.025, 0.975])
    return [float(lo), float(hi)]


def rate_check(fam: np.ndarray, y: np.ndarray, preds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Return, per judge, each family's gold, observed and corrected constructive rate, the correction using
    sensitivity and specificity measured on the other families' held-out predictions (so no family corrects
    itself), and the mean absolute errors of the observed and corrected rates."""
    from refusalkit.evaluate.metrics import rogan_gladen

    out: dict[str, Any] = {}
    for k, p in preds.items():
        per = {}
        for f in sorted(set(fam.tolist())):
            o = fam != f
            se = (p[o] & (y[o] == 1)).sum() / max(1, (y[o] == 1).sum())
            sp = (~p[o] & (y[o] == 0)).sum() / max(1, (y[o] == 0).sum())
            q = float(p[fam == f].mean())
            per[f] = {
                "gold": float(y[fam == f].mean()),
                "observed": q,
                "corrected": float(rogan_gladen(q, se, sp)) if se + sp > 1 else float("nan"),
            }
        out[k] = {
            "per_family": per,
            "mae_observed": float(np.mean([abs(v["observed"] - v["gold"]) for v in per.values()])),
            "mae_corrected": float(np.nanmean([abs(v["corrected"] - v["gold"]) for v in per.values()])),
        }
    return out


def _fmt(v: float | None) -> str:
    return "  -  " if v is None else f"{v:.3f}"


def line(name: str, s: dict[str, Any]) -> str:
    """Return one printed line of :func:`scores`."""
    return (
        f"  {name:<22} acc {_fmt(s['accuracy'])}  P {_fmt(s['precision'])} [{s['precision_ci'][0]:.2f},"
        f"{s['precision_ci'][1]:.2f}]  R {_fmt(s['recall'])} [{s['recall_ci'][0]:.2f},{s['recall_ci'][1]:.2f}]"
        f"  F1 {_fmt(s['f1'])}  rate {_fmt(s['predicted_rate'])} (gold {_fmt(s['gold_rate'])})"
        f"  TP {s['tp']} FP {s['fp']} FN {s['fn']}"
    )


class _Block(ConstructiveJudge):
    """The shipped recipe restricted to some feature columns (for ablations only)."""

    def __init__(self, cols: np.ndarray, **kw: Any):
        super().__init__(**kw)
        self.cols = cols

    def _fit_lr(self, F, y):
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        self.sc_ = StandardScaler().fit(F[:, self.cols])
        self.lr_ = LogisticRegression(C=self.C, max_iter=5000).fit(self.sc_.transform(F[:, self.cols]), y)
        return np.zeros(1, np.float32), 0.0, np.zeros(1), np.ones(1)

    def fit(self, responses, y, groups=None, F=None):
        yy = np.asarray(list(y), int)
        g = np.asarray(list(groups))
        oof = np.full(len(yy), np.nan)
        for grp in sorted(set(g.tolist())):
            tr = g != grp
            self._fit_lr(F[tr], yy[tr])
            oof[~tr] = self.lr_.predict_proba(self.sc_.transform(F[~tr][:, self.cols]))[:, 1]
        from refusalkit.detect.constructive import best_f1_threshold

        self.threshold = best_f1_threshold(oof, yy)
        self._fit_lr(F, yy)
        return self

    def predict(self, responses, F=None):
        p = self.lr_.predict_proba(self.sc_.transform(F[:, self.cols]))[:, 1]
        return [bool(x >= self.threshold) for x in p]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    res = run(a.corpus, ablations=a.ablations, verbose=True)
    if a.json:
        tmp = a.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        tmp.replace(a.json)


def run(corpus_path: Path, *, ablations: bool = False, verbose: bool = False) -> dict[str, Any]:
    """Return the leave-one-family-out figures (per family and pooled) of the shipped recipe and the
    baselines; print them as they come when ``verbose``."""
    from refusalkit.detect import get_detector
    from refusalkit.detect.datasets import read_real_corpus

    say = print if verbose else (lambda *x, **k: None)
    t0 = time.time()
    corpus = read_real_corpus(corpus_path)
    rows = [r for r in corpus if r["label"] in GOLD]
    partial = [r for r in corpus if r["label"] == "partial_refusal"]
    fam = np.array([r["family"] for r in rows])
    y = np.array([GOLD[r["label"]] for r in rows])
    say(
        f"corpus: {len(corpus)} rows; scored {len(rows)} non-compliant rows ({int(y.sum())} redirection = "
        f"constructive, {int((y == 0).sum())} full_refusal = bare); {len(partial)} partial_refusal rows left out",
        flush=True,
    )
    judge = ConstructiveJudge()
    F = judge.features([r["response"] for r in rows])
    Fp = judge.features([r["response"] for r in partial])
    say(f"features {F.shape} in {time.time() - t0:.0f}s", flush=True)
    det = get_detector("default")
    preds: dict[str, np.ndarray] = {
        "cues": np.array(CueJudge().predict([r["response"] for r in rows])),
        "detector_redirection": np.array(
            [v == "redirection" for v in det.predict([r["response"] for r in rows], [r["prompt"] for r in rows])]
        ),
        "constructive": np.zeros(len(rows), bool),
    }
    n_cue = len(FEATURE_NAMES)
    variants: dict[str, np.ndarray] = {}
    if ablations:
        allc = np.arange(F.shape[1])
        variants = {
            "ablation_cues_only": allc[2 * _DIM :],
            "ablation_embeddings_only": allc[: 2 * _DIM],
            "ablation_response_emb+cues": np.r_[allc[:_DIM], allc[2 * _DIM :]],
        }
        for v in variants:
            preds[v] = np.zeros(len(rows), bool)
    assert F.shape[1] == 2 * _DIM + n_cue
    partial_fam = np.array([r["family"] for r in partial])
    partial_pred = np.zeros(len(partial), bool)
    thresholds = {}
    out: dict[str, Any] = {"per_family": {}, "thresholds": thresholds}
    for f in sorted(set(fam.tolist())):
        te, tr = fam == f, fam != f
        j = ConstructiveJudge().fit([], y[tr], groups=fam[tr], F=F[tr])
        thresholds[f] = j.threshold
        preds["constructive"][te] = j.predict([], F=F[te])
        if (partial_fam == f).any():
            partial_pred[partial_fam == f] = j.predict([], F=Fp[partial_fam == f])
        for v, cols in variants.items():
            b = _Block(cols).fit([], y[tr], groups=fam[tr], F=F[tr])
            preds[v][te] = b.predict([], F=F[te])
        res = {k: scores(y[te], p[te]) for k, p in preds.items()}
        out["per_family"][f] = res
        say(f"{f} (n={int(te.sum())}, constructive {int(y[te].sum())}; threshold {j.threshold:.2f})", flush=True)
        for k, s in res.items():
            say(line(k, s))
    pooled = {k: {**scores(y, p), "f1_ci": f1_ci(y, p)} for k, p in preds.items()}
    out["pooled"] = pooled
    say(f"pooled over the {len(out['per_family'])} held-out families (n={len(y)}, constructive {int(y.sum())}):")
    for k, s in pooled.items():
        say(line(k, s) + f"  F1 95% [{s['f1_ci'][0]:.3f}, {s['f1_ci'][1]:.3f}]")
    out["rate_correction"] = rate_check(fam, y, preds)
    say("constructive rate per family: gold, observed, corrected with the judge's sensitivity/specificity measured on")
    say("the OTHER six families' held-out predictions (Rogan-Gladen, as `eval` does):")
    for k, rc in out["rate_correction"].items():
        say(
            f"  {k:<22} mean |observed - gold| {rc['mae_observed']:.3f}, mean |corrected - gold| "
            f"{rc['mae_corrected']:.3f}  ("
            + ", ".join(
                f"{f} {v['gold']:.2f}/{v['observed']:.2f}/{v['corrected']:.2f}" for f, v in rc["per_family"].items()
            )
            + ")"
        )
    macro = {
        k: float(np.mean([r[k]["f1"] or 0.0 for r in out["per_family"].values() if r[k]["n_constructive"] >= 10]))
        for k in preds
    }
    out["macro_f1_families_with_10_or_more_constructive"] = macro
    say("macro F1 over families with >= 10 constructive rows: " + ", ".join(f"{k} {v:.3f}" for k, v in macro.items()))
    out["partial_refusal_called_constructive"] = {
        "n": len(partial),
        "constructive": int(partial_pred.sum()),
        "cues": int(np.sum(CueJudge().predict([r["response"] for r in partial]))),
        "by_family": dict(Counter(partial_fam[partial_pred].tolist())),
    }
    say(
        f"partial_refusal rows (no gold answer; information only): {int(partial_pred.sum())} of {len(partial)} "
        f"called constructive by the held-out judge, {out['partial_refusal_called_constructive']['cues']} by the cues"
    )
    out["counts"] = {
        "non_compliant_scored": len(rows),
        "constructive": int(y.sum()),
        "bare": int((y == 0).sum()),
        "partial_left_out": len(partial),
        "per_family": {
            f: [int(((fam == f) & (y == 1)).sum()), int(((fam == f) & (y == 0)).sum())]
            for f in sorted(set(fam.tolist()))
        },
    }
    out["seconds"] = round(time.time() - t0, 1)
    say(f"done in {out['seconds']}s")
    return out


if __name__ == "__main__":
    main()
