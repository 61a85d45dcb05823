"""Rebuild the shipped constructive-safety judge, ``src/refusalkit/resources/detect/constructive``.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/build_constructive.py [--out DIR] [--corpus data/detect/real/corpus.jsonl]

Trains :class:`refusalkit.detect.constructive.ConstructiveJudge` on every non-compliant row of the real-response
corpus that has an answer to the question "constructive or bare?" (gold ``redirection`` = constructive,
``full_refusal`` = bare; ``partial_refusal`` rows are left out, docs/constructive.md says why), with its
threshold chosen by leave-one-family-out inside those rows; measures the same recipe leave-one-family-out
(``bench/constructive.py``) and writes the figures into the card, with the judge's held-out sensitivity and
specificity and how far its rate is from the gold rate per family (observed, and Rogan-Gladen corrected with
the other families' error rates: the correction did worse, so ``eval`` reports the observed rate). About
three to four minutes on one core.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
OUT = REPO / "src" / "refusalkit" / "resources" / "detect" / "constructive"
COMMAND = "OMP_NUM_THREADS=1 .venv/bin/python scripts/build_constructive.py"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=REPO / "data" / "detect" / "real" / "corpus.jsonl")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    from constructive import GOLD, run

    from refusalkit.detect.constructive import ConstructiveJudge
    from refusalkit.detect.datasets import read_real_corpus

    t0 = time.time()
    corpus = read_real_corpus(a.corpus)
    rows = [r for r in corpus if r["label"] in GOLD]
    judge = ConstructiveJudge(name="constructive").fit(
        [r["response"] for r in rows], [GOLD[r["label"]] == 1 for r in rows], groups=[r["family"] for r in rows]
    )
    train_s = time.time() - t0
    lofo = run(a.corpus)
    pooled = lofo["pooled"]["constructive"]
    n_bare = pooled["n"] - pooled["n_constructive"]
    card = {
        "name": "constructive",
        "kind": "constructive",
        "task": "is a non-compliant answer constructive (safe help: named resources, corrected facts with an "
        "explanation, a safe alternative serving the legitimate need) or a bare refusal? (Oyster-I, PAPERS.md 10)",
        "trained_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": COMMAND,
        "python": platform.python_version(),
        "training_data": {
            "file": "data/detect/real/corpus.jsonl (real model responses labelled under docs/labelling.md v1/v2 "
            "by AI-agent labellers)",
            "n": len(rows),
            "labels": dict(Counter(r["label"] for r in rows)),
            "families": dict(Counter(r["family"] for r in rows)),
            "constructive": "gold redirection",
            "bare": "gold full_refusal",
            "left_out": f"{lofo['counts']['partial_left_out']} partial_refusal rows (no gold answer: the guideline's "
            "redirection is a full refusal with help; a partial refusal already gives part of the task)",
        },
        "threshold": judge.threshold,
        "threshold_rule": "max F1 of out-of-fold P(constructive), leave-one-family-out inside the training rows",
        "measured": {
            "protocol": "leave-one-source-family-out over 7 families (bench/constructive.py), pooled held-out "
            "predictions; Wilson 95% intervals, bootstrap for F1",
            "accuracy": pooled["accuracy"],
            "precision": pooled["precision"],
            "precision_ci": pooled["precision_ci"],
            "recall": pooled["recall"],
            "recall_ci": pooled["recall_ci"],
            "f1": pooled["f1"],
            "f1_ci": pooled["f1_ci"],
            "predicted_rate": pooled["predicted_rate"],
            "gold_rate": pooled["gold_rate"],
            "baselines": {
                k: {m: lofo["pooled"][k][m] for m in ("accuracy", "precision", "recall", "f1", "f1_ci")}
                for k in ("cues", "detector_redirection")
            },
            "per_family_f1": {f: r["constructive"]["f1"] for f, r in lofo["per_family"].items()},
        },
        # Held-out error rates, for information: `eval` does not correct with them (rate_check says why).
        "error_rates": {
            "sensitivity": pooled["recall"],
            "specificity": 1 - pooled["fp"] / n_bare,
            "n_pos": pooled["n_constructive"],
            "n_neg": n_bare,
            "source": "leave-one-family-out on data/detect/real/corpus.jsonl (bench/constructive.py)",
        },
        "rate_check": {
            "what": "per held-out family: gold, observed and Rogan-Gladen corrected constructive rate (error rates "
            "from the other six families' held-out predictions); mean absolute errors over the 7 families",
            **lofo["rate_correction"]["constructive"],
        },
        "limits": "125 constructive rows in all, 2 to 54 per family; the redirection / full_refusal line is the "
        "least reliable one of the guideline (on 300 double-labelled rows the second labeller found 9 of the "
        "primary labellers' 16 redirections, F1 0.64 between two labellers). Figures are for responses of "
        "2023-2024 chat models (GPT-3.5/4, Llama-2/3, Vicuna) in English.",
        "train_seconds": round(train_s, 1),
    }
    judge.save(a.out, card)
    print(
        f"wrote {a.out}: {len(rows)} rows, threshold {judge.threshold:.2f}; held-out F1 {pooled['f1']:.3f} "
        f"[{pooled['f1_ci'][0]:.3f}, {pooled['f1_ci'][1]:.3f}] ({time.time() - t0:.0f}s)"
    )


if __name__ == "__main__":
    main()
