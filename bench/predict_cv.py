"""Prompt-classifier accuracy on the 985 hand-labelled Quora prompts of Reuter & Schulze, with honest
hyper-parameter choice: nested cross-validation.

For each outer seed, the prompts are split 5-fold (stratified); inside each outer training part an inner
5-fold CV picks ``C`` and the embedding weight from a small grid, and the chosen classifier is scored on
the outer fold. The figure per encoder is the mean over outer folds (and its spread over seeds), next to
plain 5-fold CV at the shipped settings (C=3, embedding weight 2) and TF-IDF alone.

    python bench/predict_cv.py [--encoder DIR ...] [--seeds 0 1 2] [--json OUT]

``--encoder`` adds a local sentence-encoder folder (e.g. all-mpnet-base-v2) beside the bundled MiniLM.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np


def nested_cv(P: np.ndarray, y: np.ndarray, features: str, encoder, seed: int,
              grid: list[tuple[float, float]]) -> tuple[float, list[tuple[float, float]]]:
    """Return (mean outer-fold accuracy, the (C, weight) chosen in each outer fold)."""
    from sklearn.model_selection import StratifiedKFold

    from refusalkit.predict.bootstrap import cv_accuracy
    from refusalkit.predict.prompt_model import PromptClassifier

    accs, chosen = [], []
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(P, y):
        inner = [cv_accuracy(list(P[tr]), list(y[tr]), features, 5, 100 + seed, encoder=encoder,
                             C=C, embedding_weight=w) for C, w in grid]
        C, w = grid[int(np.argmax(inner))]
        m = PromptClassifier(features=features, encoder=encoder, C=C, embedding_weight=w).fit(list(P[tr]), y[tr])
        accs.append(float((m.predict(list(P[te])) == y[te]).mean()))
        chosen.append((C, w))
    return float(np.mean(accs)), chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "chatgpt_refusals.jsonl"))
    ap.add_argument("--encoder", action="append", default=[], help="Local encoder folder (repeatable).")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from refusalkit.predict.bootstrap import cv_accuracy, rs_quora

    pq, yq, _, _ = rs_quora(args.data)
    P, y = np.asarray(pq, dtype=object), np.asarray(yq)
    print(f"{len(P)} Quora prompts, {y.mean():.1%} refused (majority {max(y.mean(), 1 - y.mean()):.4f}); "
          "anchors: BERT 75.94%, TF-IDF LR 73.91%; target > 76%")
    arms = [("tfidf", "tfidf", None), ("tfidf+MiniLM (bundled)", "tfidf+embedding", None)]
    arms += [(f"tfidf+{Path(e).name}", "tfidf+embedding", e) for e in args.encoder]
    grid = list(itertools.product((0.3, 1.0, 3.0), (1.0, 2.0, 4.0)))
    out = []
    for name, feats, enc in arms:
        t0 = time.perf_counter()
        plain = [cv_accuracy(pq, yq, feats, 5, s, encoder=enc) for s in args.seeds]
        g = [(C, 1.0) for C in (0.3, 1.0, 3.0)] if feats == "tfidf" else grid
        nested = [nested_cv(P, y, feats, enc, s, g) for s in args.seeds]
        row = {"arm": name, "cv5_shipped_settings": plain, "nested_cv": [a for a, _ in nested],
               "chosen": [c for _, c in nested], "seconds": round(time.perf_counter() - t0, 1)}
        out.append(row)
        print(f"{name:28s} plain 5-fold CV {np.mean(plain):.4f} ({', '.join(f'{a:.4f}' for a in plain)})  "
              f"nested {np.mean(row['nested_cv']):.4f} ({', '.join(f'{a:.4f}' for a in row['nested_cv'])})  "
              f"[{row['seconds']:.0f}s]", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"seeds": args.seeds, "arms": out}, indent=1))


if __name__ == "__main__":
    main()
