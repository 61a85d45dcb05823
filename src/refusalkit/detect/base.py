"""The detector contract (scikit-learn style) and the pieces every detector shares.

Every detector has ``name``, ``classes_`` (the taxonomy labels), ``fit(X, y, prompts=None)``,
``predict_proba(X, prompts=None) -> [n, len(classes_)]``, ``predict`` (taxonomy labels) and ``p_refusal``
(probability that a response is not full compliance), and ``judge(responses) -> list[Verdict]`` (one
``predict_proba`` pass). Learned detectors save to an artifact folder (:mod:`refusalkit.artifacts`) of
JSON + npz (never pickle) with a model card (``card.json``) of their training data and measured figures
and a manifest of SHA-256s that loading checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from refusalkit.data.records import Response, Verdict
from refusalkit.data.taxonomy import FULL_COMPLIANCE, LABELS
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
    """Base class: subclasses implement ``fit`` and ``predict_proba``; the rest follows from them.

    ``kind`` keys the class in :mod:`refusalkit.detect.registry` and is written to a saved detector's
    ``meta.json``; ``judges_text`` is false for judges that read something other than the response text.
    """

    kind: ClassVar[str] = "detector"
    judges_text: ClassVar[bool] = True
    name = "detector"
    classes_: tuple[str, ...] = LABELS
    card: dict[str, Any] | None = None

    @classmethod
    def ready(cls, arg: str | None = None) -> Detector:
        """Return a ready-to-use detector of this kind for ``get_detector(KIND[:ARG])`` (kinds that need no
        training or shipped model; learned kinds are loaded from their shipped folder instead)."""
        if arg:
            raise RefusalkitError(f"detector {cls.kind!r} takes no ':' argument (got {arg!r})")
        return cls()

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

    def judge(self, responses: Sequence[Response]) -> list[Verdict]:
        """Return a :class:`Verdict` per response (taxonomy label and P(refusal)) from one ``predict_proba``
        pass over the responses and their prompts (an LLM judge generates once per response)."""
        P = np.asarray(self.predict_proba([r.response for r in responses], [r.prompt for r in responses]))
        if P.shape[0] != len(responses):
            raise RefusalkitError(
                f"detector {self.name!r} returned {P.shape[0]} verdicts for {len(responses)} responses"
            )
        return verdicts_from_proba([r.id for r in responses], P, self.classes_, self.name)

    def explain(self, response: str, prompt: str | None = None, top: int = 8) -> list[dict[str, Any]]:
        """Return the features that drive this detector's verdict on one response (may be empty)."""
        return []


class LearnedDetector(Detector):
    """A detector learned from labelled responses: it saves itself to an artifact folder and loads back from one
    (the kinds the registry ships or trains)."""

    def save(self, folder: str | Path, card: dict[str, Any] | None = None) -> Path:  # pragma: no cover
        """Return ``folder`` after writing the detector, its metadata, ``card`` and manifest into it."""
        raise NotImplementedError

    @classmethod
    def load(cls, folder: str | Path) -> LearnedDetector:  # pragma: no cover - every subclass overrides
        """Return the detector saved in ``folder`` (checking its manifest)."""
        raise NotImplementedError


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


def verdicts_from_proba(ids: Sequence[str], P: np.ndarray, classes: Sequence[str], detector: str) -> list[Verdict]:
    """Return one :class:`Verdict` per row of class probabilities ``P`` (label by the full-compliance-at-0.5
    rule, ``p_refusal`` = 1 - P(full compliance))."""
    p = 1.0 - P[:, list(classes).index(FULL_COMPLIANCE)]
    return [
        Verdict(id=i, verdict=lab, p_refusal=float(v), detector=detector)
        for i, lab, v in zip(ids, labels_from_proba(P, classes), p)
    ]
