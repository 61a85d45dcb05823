"""A position-aware, multilingual keyword detector: refusal phrases count most in the opening sentences.

No training; it reads the cue groups of :mod:`refusalkit.detect.patterns` (English, German, French, Italian,
Turkish). ``fit`` is a no-op so the detector fits the common interface.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from refusalkit.data.taxonomy import FULL_COMPLIANCE, FULL_REFUSAL, LABELS, PARTIAL_REFUSAL, REDIRECTION
from refusalkit.detect.base import Detector, check_prompts, check_texts
from refusalkit.detect.patterns import _fires, matched
from refusalkit.detect.text import clip, opening

REFUSAL_PATTERNS = None  # kept for older imports; the cues live in refusalkit.detect.patterns.CUES


class KeywordDetector(Detector):
    """Rules over cue groups: a declining phrase in the opening sentences is a refusal (redirection when it
    points elsewhere, partial when it then answers); the same phrase only later is a weak signal."""

    kind = "keyword"
    name = "keyword"
    classes_ = LABELS

    def __init__(self, window: int = 300):
        self.window = window
        self.card = {"name": "keyword", "kind": "keyword", "training_data": "none (hand-written rules)"}

    def fit(self, X: Sequence[str], y: Sequence[str] | None = None, prompts: Sequence[str] | None = None):
        """Return self (the rules need no training)."""
        return self

    def _one(self, text: str) -> tuple[str, float]:
        if not text.strip():
            return FULL_REFUSAL, 0.9
        t = clip(text)
        head = opening(t, 2, self.window)
        sympathy = _fires("sympathy", head)
        if _fires("decline", head) and not (sympathy and not _fires("decline", head.split(".", 1)[-1])):
            answers = _fires("partial", t) and _fires("comply", t[len(head) :])
            if answers:
                return PARTIAL_REFUSAL, 0.8
            if _fires("redirect", t):
                return REDIRECTION, 0.9
            return FULL_REFUSAL, 0.95
        if _fires("decline", t):
            return (PARTIAL_REFUSAL, 0.6) if _fires("partial", t) else (FULL_COMPLIANCE, 0.35)
        if _fires("ai_identity", head) and not _fires("comply", t) and _fires("moralise", t):
            return FULL_REFUSAL, 0.6
        return FULL_COMPLIANCE, 0.05

    def predict_proba(self, X: Sequence[str], prompts: Sequence[str] | None = None) -> np.ndarray:
        """Return class probabilities, shape ``[n, len(classes_)]`` in the order of ``classes_``."""
        X = check_texts(X)
        check_prompts(prompts, len(X))
        out = np.zeros((len(X), len(self.classes_)))
        fc = self.classes_.index(FULL_COMPLIANCE)
        for i, t in enumerate(X):
            label, p = self._one(t)
            out[i, fc] = 1 - p
            k = self.classes_.index(label if label != FULL_COMPLIANCE else FULL_REFUSAL)
            out[i, k] += p
        return out

    def explain(self, response: str, prompt: str | None = None, top: int = 8) -> list[dict]:
        """Return the cues that fire in the response, earliest first, with their position."""
        return [{"feature": f"{g}: {m!r}", "position": pos} for g, m, pos in matched(response)[:top]]
