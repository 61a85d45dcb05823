"""Bootstrapping a prompt classifier for any target model (Reuter & Schulze 2023): generate the model's
answers to unlabelled prompts, label them with a response detector, train a prompt classifier on the labels,
and report its cross-validated accuracy and most predictive n-grams."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from refusalkit.predict.prompt_model import PromptClassifier


def cv_accuracy(
    prompts: list[str],
    y: list[int],
    features: str = "tfidf",
    folds: int = 5,
    seed: int = 0,
    encoder: str | Path | None = None,
    **params: Any,
) -> float | None:
    """Return the mean accuracy of a :class:`PromptClassifier` under stratified ``folds``-fold cross-validation
    (``None`` when a class has fewer than ``folds`` prompts); ``params`` (``C``, ``embedding_weight``) go to
    the classifier."""
    from sklearn.model_selection import StratifiedKFold

    ya = np.asarray(y)
    if min(int(ya.sum()), int(len(ya) - ya.sum())) < folds:
        return None
    P = np.asarray(prompts, dtype=object)
    accs = []
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(P, ya):
        m = PromptClassifier(features=features, encoder=encoder, **params).fit(list(P[tr]), ya[tr])
        accs.append(float((m.predict(list(P[te])) == ya[te]).mean()))
    return float(np.mean(accs))


def train_from_responses(
    prompts: list[str],
    responses: list[str],
    detector: Any,
    *,
    target_model: str,
    features: str = "tfidf",
    folds: int = 5,
    encoder: str | Path | None = None,
    clf_kw: dict[str, Any] | None = None,
) -> tuple[PromptClassifier | None, dict[str, Any]]:
    """Return ``(classifier, report)``: label responses with ``detector``, train a prompt classifier on them
    (``clf_kw``: further :class:`PromptClassifier` settings, e.g. ``lm_layer``).

    The classifier is ``None`` when the model answered (or refused) every prompt; the report then says so
    and gives the refusal rate, which is the best prediction there is.
    """
    verdicts = detector.predict(responses, prompts)
    y = [int(v != "full_compliance") for v in verdicts]
    rate = float(np.mean(y)) if y else 0.0
    report: dict[str, Any] = {
        "target_model": target_model,
        "n_prompts": len(prompts),
        "n_refused": int(sum(y)),
        "refusal_rate": rate,
        "labelled_by": getattr(detector, "name", "detector"),
        "features": features,
        "encoder": None if encoder is None else str(encoder),
        **({"settings": clf_kw} if clf_kw else {}),
    }
    if len(set(y)) < 2:
        report["note"] = (
            f"the model {'refused' if y and y[0] else 'answered'} all {len(y)} prompts, so there is "
            "nothing to learn beyond the constant rate"
        )
        return None, report
    report["cv_accuracy"] = cv_accuracy(prompts, y, features, folds, encoder=encoder, **(clf_kw or {}))
    report["majority_baseline"] = max(rate, 1 - rate)
    clf = PromptClassifier(features=features, target_model=target_model, encoder=encoder, **(clf_kw or {})).fit(
        prompts, y
    )
    report["top_ngrams"] = clf.top_ngrams(10)
    report["trained_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return clf, report


def rs_quora(data_path: str | Path) -> tuple[list[str], list[int], list[str], list[int]]:
    """Return ``(quora_prompts, quora_y, other_prompts, other_y)`` of the Reuter & Schulze set: the 985
    hand-labelled Quora prompts and the other subsets, y = 1 when ChatGPT did not comply."""
    from refusalkit.detect.datasets import read_labelled

    rows = read_labelled(data_path, "reuter_schulze")
    q = [r for r in rows if r.get("category") == "quora_insincere"]
    o = [r for r in rows if r.get("category") != "quora_insincere"]
    return (
        [r["prompt"] for r in q],
        [int(r["label"] != "full_compliance") for r in q],
        [r["prompt"] for r in o],
        [int(r["label"] != "full_compliance") for r in o],
    )


def rs_prompt_figures(
    data_path: str | Path,
    features: str = "tfidf+embedding",
    seed: int = 0,
    encoder: str | Path | None = None,
    clf_kw: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the paper's prompt-classifier figures on the Reuter & Schulze set: accuracy on the 985
    hand-labelled Quora prompts under 5-fold stratified cross-validation, and when trained on the other
    subsets (political figures, nyp) only; TF-IDF alone beside ``features`` (``clf_kw`` applies to the
    latter)."""
    pq, yq, po, yo = rs_quora(data_path)
    out: dict[str, Any] = {
        "n_quora": len(pq),
        "n_other": len(po),
        "features": features,
        "majority_baseline": max(np.mean(yq), 1 - np.mean(yq)),
    }
    if encoder is not None:
        out["encoder"] = str(encoder)
    if clf_kw:
        out["settings"] = clf_kw
    for feats in dict.fromkeys(["tfidf", features]):
        enc = encoder if "embedding" in feats else None
        kw = (clf_kw or {}) if feats == features else {}
        out[f"cv5_{feats}"] = cv_accuracy(pq, yq, feats, 5, seed, encoder=enc, **kw)
        m = PromptClassifier(features=feats, encoder=enc, **kw).fit(po, yo)
        out[f"other_subsets_{feats}"] = float((m.predict(pq) == np.asarray(yq)).mean())
    return out
