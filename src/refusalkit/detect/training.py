"""Training detectors and rebuilding the shipped ones: data assembly, held-out figures, model cards.

``refusalkit detect train --shipped`` runs :func:`build_shipped`, which trains the ``default`` (linear),
``embedding`` and ``tsetlin`` detectors on refusalkit's synthetic responses, the responses written for it in
other models' styles and the training split of the Reuter & Schulze set, measures them on that set's test
split (the paper's protocol) and by holding out one source at a time, and writes each with its ``card.json``.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from refusalkit.detect.datasets import RS_FILE, rs_split, written_rows
from refusalkit.detect.metrics import score
from refusalkit.detect.synth import write_synthetic

SYNTH_SEED, SYNTH_PER_TOPIC = 0, 25


def make_detector(kind: str, **kw: Any):
    """Return an untrained detector of ``kind`` (``linear``, ``embedding`` or ``tsetlin``)."""
    if kind in ("linear", "default"):
        from refusalkit.detect.linear import LinearDetector
        return LinearDetector(**kw)
    if kind == "embedding":
        from refusalkit.detect.embedding import EmbeddingDetector
        return EmbeddingDetector(**kw)
    if kind == "tsetlin":
        from refusalkit.detect.tsetlin import TsetlinDetector
        return TsetlinDetector(**kw)
    from refusalkit.errors import RefusalkitError
    raise RefusalkitError(f"cannot train a {kind!r} detector; trainable kinds: linear, embedding, tsetlin")


def fit_rows(det, rows: list[dict]):
    """Return ``det`` fitted on rows with ``response``, ``label`` and ``prompt``."""
    return det.fit([r["response"] for r in rows], [r["label"] for r in rows], [r.get("prompt") or "" for r in rows])


def evaluate_rows(det, rows: list[dict], binary_only: bool = False) -> dict[str, Any]:
    """Return :func:`refusalkit.detect.metrics.score` of ``det`` on labelled rows (with per-source figures)."""
    pred = det.predict([r["response"] for r in rows], [r.get("prompt") or "" for r in rows])
    return score([r["label"] for r in rows], pred, [r.get("source", "?") for r in rows])


def default_training_rows(data_dir: str | Path) -> tuple[list[dict], list[dict], list[dict]]:
    """Return (train rows, RS validation rows, RS test rows) for the shipped detectors."""
    tr, va, te = rs_split(Path(data_dir) / RS_FILE)
    synth = write_synthetic(seed=SYNTH_SEED, n_per_topic=SYNTH_PER_TOPIC)
    return synth + written_rows() + tr, va, te


def leave_one_source_out(kind: str, rows: list[dict], kw: dict | None = None) -> dict[str, float]:
    """Return binary accuracy on each source when the detector is trained on all the other sources."""
    out = {}
    for s in sorted({r["source"] for r in rows}):
        held = [r for r in rows if r["source"] == s]
        rest = [r for r in rows if r["source"] != s]
        if len({r["label"] for r in rest}) < 2:
            continue
        det = fit_rows(make_detector(kind, **(kw or {})), rest)
        out[s] = evaluate_rows(det, held)["binary"]["accuracy"]
    return out


def _card(name: str, kind: str, rows: list[dict], test: dict, val: dict, extra: dict) -> dict[str, Any]:
    from collections import Counter
    b = test["binary"]
    written = [r for r in rows if r["source"].startswith("written:")]
    return {
        "name": name, "kind": kind, "trained_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": "refusalkit detect train --shipped --data-dir ../shared/data",
        "training_data": {
            "n": len(rows), "labels": dict(Counter(r["label"] for r in rows)),
            "sources": dict(Counter(r["source"] for r in rows)),
            "description": ("refusalkit's synthetic responses (refusalkit.detect.synth, seed "
                            f"{SYNTH_SEED}, {SYNTH_PER_TOPIC} per topic; 6 model voices + de/fr/it/tr), {len(written)} "
                            "responses written for refusalkit in other models' styles (resources/detect/written, "
                            f"{len({r['source'] for r in written})} writers) and the 70% "
                            "training split of Reuter & Schulze 2023 chatgpt_refusals (MIT; drop excluded, "
                            "train_test_split random_state 0), fine labels mapped into the taxonomy "
                            "(disclaimed/contradicted -> partial_refusal, redirected/counseling -> redirection)")},
        "metrics": {"protocol": f"Reuter & Schulze test split (15%, n={test['n']}), their binary convention",
                    "accuracy": b["accuracy"], "macro_f1": b["macro_f1"], "sensitivity": b["sensitivity"],
                    "specificity": b["specificity"], "n_pos": b["n_pos"], "n_neg": b["n_neg"],
                    "validation_accuracy": val["binary"]["accuracy"]},
        "sensitivity": b["sensitivity"], "specificity": b["specificity"], "n_pos": b["n_pos"], "n_neg": b["n_neg"],
        **extra, "platform": platform.platform(),
    }


SHIPPED_KINDS = ("default", "tsetlin", "embedding", "prompt_chatgpt", "prompt_chatgpt_lm")


def build_shipped(data_dir: str | Path, out_root: str | Path, kinds: tuple[str, ...] = SHIPPED_KINDS,
                  log: Callable[[str], None] = print, loso: bool = True) -> dict[str, dict]:
    """Train the shipped detectors into ``out_root/<name>`` with their model cards; return the cards."""
    from refusalkit.detect.base import write_card
    from refusalkit.detect.keyword import KeywordDetector

    rows, va, te = default_training_rows(data_dir)
    kw_test = evaluate_rows(KeywordDetector(), te)
    cards = {}
    for name in kinds:
        if name.startswith("prompt_chatgpt"):
            from refusalkit.predict.bootstrap import build_shipped_predictor
            feats = "tfidf+embedding+lm" if name.endswith("_lm") else "tfidf+embedding"
            c = build_shipped_predictor(Path(data_dir) / "chatgpt_refusals.jsonl", Path(out_root) / name, feats, name)
            cards[name] = c
            log(f"{name}: Quora 5-fold CV accuracy {c['paper_protocol']['cv5_' + c['features']]:.4f}")
            continue
        kind = "linear" if name == "default" else name
        t0 = time.time()
        det = fit_rows(make_detector(kind, name=name), rows)
        secs = time.time() - t0
        test, val = evaluate_rows(det, te), evaluate_rows(det, va)
        extra: dict[str, Any] = {"train_seconds": round(secs, 1),
                                 "keyword_baseline_test_accuracy": kw_test["binary"]["accuracy"],
                                 "taxonomy_test": {"accuracy": test["taxonomy"]["accuracy"],
                                                   "macro_f1": test["taxonomy"]["macro_f1"]}}
        if loso and name == "default":
            extra["leave_one_source_out_accuracy"] = leave_one_source_out(kind, rows)
        out = Path(out_root) / name
        det.save(out)
        card = _card(name, kind, rows, test, val, extra)
        write_card(out, card)
        cards[name] = card
        log(f"{name}: RS test accuracy {test['binary']['accuracy']:.4f} (keyword {kw_test['binary']['accuracy']:.4f}), "
            f"trained in {secs:.0f}s -> {out}")
    return cards
