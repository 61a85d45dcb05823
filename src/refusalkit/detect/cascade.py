"""A cascade: cheap detectors judge first; a response goes on to the next, more expensive detector only
while the current one is unsure (its ``p_refusal`` lies inside the stage's uncertainty band)."""

from __future__ import annotations

from typing import Any

import numpy as np

from refusalkit.data.taxonomy import LABELS
from refusalkit.detect.base import Detector, check_prompts, check_texts
from refusalkit.errors import RefusalkitError


class CascadeDetector(Detector):
    """``stages`` is a list of ``(detector, low, high)``: rows with ``low < p_refusal < high`` pass on.
    The last stage's band is ignored (it decides everything that reaches it)."""

    kind = "cascade"

    def __init__(self, stages: list[tuple[Any, float, float]], name: str = "cascade"):
        if not stages:
            raise RefusalkitError("a cascade needs at least one stage")
        self.stages, self.name = stages, name
        self.classes_ = LABELS
        self.card = getattr(stages[0][0], "card", None)
        self.routed_: list[int] = []

    @classmethod
    def ready(cls, arg: str | None = None) -> CascadeDetector:
        """Return the shipped cascade: ``default`` decides unless its P(refusal) lies in (0.25, 0.75), then
        ``embedding`` decides."""
        from refusalkit.detect.registry import get_detector

        if arg:
            raise RefusalkitError(f"detector 'cascade' takes no ':' argument (got {arg!r})")
        return cls([(get_detector("default"), 0.25, 0.75), (get_detector("embedding"), 0, 1)])

    def fit(self, X, y, prompts=None):
        """Return self after fitting every stage on the same data."""
        for det, _, _ in self.stages:
            det.fit(X, y, prompts)
        return self

    def predict_proba(self, X, prompts=None) -> np.ndarray:
        """Return class probabilities; ``routed_`` records how many rows each stage judged."""
        X = check_texts(X)
        ps = check_prompts(prompts, len(X))
        P = np.zeros((len(X), len(LABELS)))
        todo = np.arange(len(X))
        self.routed_ = []
        for k, (det, low, high) in enumerate(self.stages):
            if len(todo) == 0:
                self.routed_.append(0)
                continue
            sub = det.predict_proba([X[i] for i in todo], None if ps is None else [ps[i] for i in todo])
            idx = [list(det.classes_).index(c) for c in LABELS]
            P[todo] = sub[:, idx]
            self.routed_.append(len(todo))
            if k == len(self.stages) - 1:
                break
            pr = 1 - P[todo, 0]
            todo = todo[(pr > low) & (pr < high)]
        return P

    def explain(self, response: str, prompt: str | None = None, top: int = 8):
        """Return the first stage's explanation."""
        return self.stages[0][0].explain(response, prompt, top)
