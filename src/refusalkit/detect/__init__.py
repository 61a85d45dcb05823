"""Refusal detectors behind one scikit-learn-style interface, and the response taxonomy."""

from refusalkit.detect.taxonomy import LABELS, is_refusal
from refusalkit.detect.keyword import KeywordDetector

__all__ = ["LABELS", "is_refusal", "KeywordDetector", "get_detector"]


def get_detector(name: str = "keyword"):
    """Return a ready detector by name (``keyword``)."""
    if name == "keyword":
        return KeywordDetector()
    from refusalkit.errors import RefusalkitError
    raise RefusalkitError(f"unknown detector {name!r}; known: keyword")
