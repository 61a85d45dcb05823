"""The detector contract (scikit-learn style) and the pieces every detector shares.

Every detector has ``name``, ``classes_`` (the taxonomy labels), ``fit(X, y, prompts=None)``,
``predict_proba(X, prompts=None) -> [n, len(classes_)]``, ``predict`` (taxonomy labels) and ``p_refusal``
(probability that a response is not full compliance). Learned detectors save to a folder of JSON + npz
(never pickle) with a model card (``card.json``) of their training data and measured figures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from refusalkit.detect.taxonomy import FULL_COMPLIANCE, LABELS
from refusalkit.errors import InputError, RefusalkitError

FORMAT_VERSION = 1


def check_texts(X: Sequence[Any], what: str = "response") -> list[str]:
    """Return ``X`` as a list of strings; raise InputError naming the first non-string item."""
    if isinstance(X, str):
        raise InputError(f"expected a list of {what}s, got one string")
    out = list(X)
    for i, x in enumerate(out):
        if not isinstance(x, str):
            raise InputError(f"item {i}: expected a string, got {type(x).__name__}", field=what)
    return out


def check_prompts(prompts: Sequence[Any] | None, n: int) -> list[str] | None:
    """Return prompts as a list of strings of length ``n`` (or ``None``); raise InputError otherwise."""
    if prompts is None:
        return None
    ps = check_texts(prompts, "prompt")
    if len(ps) != n:
        raise InputError(f"{len(ps)} prompts for {n} responses", field="prompt")
    return ps


def check_labels(y: Sequence[Any], n: int) -> list[str]:
    """Return taxonomy labels ``y`` as a list; raise InputError on unknown labels or a length mismatch."""
    ys = list(y)
    if len(ys) != n:
        raise InputError(f"{len(ys)} labels for {n} responses", field="label")
    for i, v in enumerate(ys):
        if v not in LABELS:
            raise InputError(f"item {i}: unknown label {v!r}; known: {', '.join(LABELS)}", field="label")
    return ys


class Detector:
    """Base class: subclasses implement ``fit`` and ``predict_proba``; the rest follows from them."""

    name = "detector"
    classes_: tuple[str, ...] = LABELS
    card: dict[str, Any] | None = None

    def fit(self, X, y, prompts=None):  # pragma: no cover - every subclass overrides
        """Return self after learning from responses ``X`` with taxonomy labels ``y``."""
        raise NotImplementedError

    def predict_proba(self, X, prompts=None) -> np.ndarray:  # pragma: no cover
        """Return class probabilities ``[n, len(classes_)]`` in the order of ``classes_``."""
        raise NotImplementedError

    def p_refusal(self, X, prompts=None) -> np.ndarray:
        """Return, per response, the probability that it is not full compliance."""
        P = self.predict_proba(X, prompts)
        return 1.0 - P[:, self.classes_.index(FULL_COMPLIANCE)]

    def predict(self, X, prompts=None) -> list[str]:
        """Return a taxonomy label per response.

        Full compliance wins whenever its probability is at least 0.5, so the label agrees with
        ``p_refusal >= 0.5``; otherwise the likeliest refusal class is chosen.
        """
        return labels_from_proba(self.predict_proba(X, prompts), self.classes_)

    def explain(self, response: str, prompt: str | None = None, top: int = 8) -> list[dict[str, Any]]:
        """Return the features that drive this detector's verdict on one response (may be empty)."""
        return []


def blank_as_refusal(X: Sequence[str], P: np.ndarray) -> np.ndarray:
    """Return ``P`` with every empty or whitespace-only response set to 0.9 full refusal: there is no answer."""
    for i, x in enumerate(X):
        if not x.strip():
            P[i] = 0.0
            P[i, LABELS.index(FULL_COMPLIANCE)] = 0.1
            P[i, LABELS.index("full_refusal")] = 0.9
    return P


def labels_from_proba(P: np.ndarray, classes: Sequence[str]) -> list[str]:
    """Return taxonomy labels from class probabilities with the full-compliance-at-0.5 rule."""
    classes = list(classes)
    fc = classes.index(FULL_COMPLIANCE)
    out = []
    for row in P:
        if row[fc] >= 0.5:
            out.append(FULL_COMPLIANCE)
        else:
            r = row.copy()
            r[fc] = -1
            out.append(classes[int(np.argmax(r))])
    return out


def write_meta(folder: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
    """Write ``meta.json`` (and ``weights.npz`` when ``arrays`` is given) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, **meta}
    (folder / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
    if arrays is not None:
        np.savez_compressed(folder / "weights.npz", **arrays)


def read_meta(folder: Path, kind: str, what: str = "detector") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Return ``(meta, arrays)`` of a saved model of ``kind``; raise RefusalkitError if it is not one.

    ``what`` names the sort of model in error messages (a detector, a prompt classifier).
    """
    folder = Path(folder)
    mp = folder / "meta.json"
    if not mp.is_file():
        raise RefusalkitError(f"{folder}: not a saved {what} (no meta.json)")
    meta = json.loads(mp.read_text(encoding="utf-8"))
    if meta.get("kind") != kind:
        raise RefusalkitError(f"{folder}: a {meta.get('kind')!r} {what}, not {kind!r}")
    arrays: dict[str, np.ndarray] = {}
    wp = folder / "weights.npz"
    if wp.is_file():
        with np.load(wp, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    return meta, arrays


def read_card(folder: Path) -> dict[str, Any] | None:
    """Return the model card (``card.json``) in ``folder``, or ``None`` when there is none."""
    p = Path(folder) / "card.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def write_card(folder: Path, card: dict[str, Any]) -> None:
    """Write the model card ``card.json`` into ``folder``."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "card.json").write_text(json.dumps(card, ensure_ascii=False, indent=1), encoding="utf-8")
