"""Refusal detectors behind one scikit-learn-style interface, and the response taxonomy.

``get_detector(name)`` returns a ready detector: ``default`` (shipped linear model), ``keyword``,
``linear`` (same model as default), ``embedding``, ``tsetlin``, ``cascade`` (default, then embedding where
unsure), ``judge`` (LLM judge on the bundled model; ``judge:MODEL_SPEC`` for another model), ``t2i``
(text-to-image refusal flags), or the path of a folder written by ``refusalkit detect train``. The names
come from :mod:`refusalkit.detect.registry`.
"""

from __future__ import annotations

from refusalkit.data.taxonomy import LABELS, is_refusal
from refusalkit.detect.base import Detector
from refusalkit.detect.keyword import KeywordDetector
from refusalkit.detect.registry import get_detector, load_detector, make_detector, names, shipped_dir

__all__ = [
    "LABELS",
    "is_refusal",
    "Detector",
    "KeywordDetector",
    "get_detector",
    "load_detector",
    "make_detector",
    "shipped_dir",
    "DETECTORS",
]

DETECTORS = names()
