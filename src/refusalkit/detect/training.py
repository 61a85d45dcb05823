"""Training a detector on labelled rows and measuring it: the steps ``refusalkit detect train`` and
``detect evaluate`` share. (The recipe that rebuilds the shipped detectors lives in the repository's
``scripts/rebuild_shipped.py``: it reads training data that is not installed with the package.)"""

from __future__ import annotations

from typing import Any, TypeVar

from refusalkit.detect.base import Detector
from refusalkit.detect.metrics import score

D = TypeVar("D", bound=Detector)


def fit_rows(det: D, rows: list[dict]) -> D:
    """Return ``det`` fitted on rows with ``response``, ``label`` and ``prompt``."""
    return det.fit([r["response"] for r in rows], [r["label"] for r in rows], [r.get("prompt") or "" for r in rows])


def evaluate_rows(det: Detector, rows: list[dict], by: str | None = None) -> dict[str, Any]:
    """Return :func:`refusalkit.detect.metrics.score` of ``det`` on labelled rows (with per-source figures,
    and per-group figures over each row's ``group`` when ``by`` names the field the groups came from)."""
    pred = det.predict([r["response"] for r in rows], [r.get("prompt") or "" for r in rows])
    groups = [str(r.get("group")) for r in rows] if by else None
    return score([r["label"] for r in rows], pred, [r.get("source", "?") for r in rows], groups, by)
