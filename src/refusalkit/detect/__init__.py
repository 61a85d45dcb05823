"""Refusal detectors behind one scikit-learn-style interface, and the response taxonomy.

``get_detector(name)`` returns a ready detector: ``default`` (shipped linear model), ``keyword``,
``linear`` (same model as default), ``embedding``, ``tsetlin``, ``cascade`` (default, then embedding where
unsure), ``judge`` (LLM judge on the bundled model; ``judge:MODEL_SPEC`` for another model), or the path of
a folder written by ``refusalkit detect train``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from refusalkit.detect.keyword import KeywordDetector
from refusalkit.detect.taxonomy import LABELS, is_refusal

__all__ = ["LABELS", "is_refusal", "KeywordDetector", "get_detector", "load_detector", "DETECTORS"]

DETECTORS = ("default", "keyword", "linear", "embedding", "tsetlin", "cascade", "judge")
_SHIPPED = {"default": "default", "linear": "default", "embedding": "embedding", "tsetlin": "tsetlin"}


def shipped_dir(name: str) -> Path:
    """Return the folder of a detector shipped inside the package (``default``, ``embedding``, ``tsetlin``)."""
    return Path(str(resources.files("refusalkit") / "resources" / "detect" / _SHIPPED.get(name, name)))


def load_detector(folder: str | Path):
    """Return the detector saved in ``folder`` (its ``meta.json`` names the kind)."""
    import json

    from refusalkit.errors import RefusalkitError

    folder = Path(folder)
    mp = folder / "meta.json"
    if not mp.is_file():
        raise RefusalkitError(f"{folder}: not a saved detector (no meta.json); train one with "
                              "`refusalkit detect train`")
    kind = json.loads(mp.read_text(encoding="utf-8")).get("kind")
    if kind == "linear":
        from refusalkit.detect.linear import LinearDetector
        return LinearDetector.load(folder)
    if kind == "embedding":
        from refusalkit.detect.embedding import EmbeddingDetector
        return EmbeddingDetector.load(folder)
    if kind == "tsetlin":
        from refusalkit.detect.tsetlin import TsetlinDetector
        return TsetlinDetector.load(folder)
    raise RefusalkitError(f"{folder}: unknown detector kind {kind!r}")


def get_detector(name: str = "default"):
    """Return a ready detector by name (see the module docstring); ``get_detector()`` is the default."""
    from refusalkit.errors import RefusalkitError

    if name == "keyword":
        return KeywordDetector()
    if name in _SHIPPED:
        d = load_detector(shipped_dir(name))
        if name == "default":
            d.name = "default"
        return d
    if name == "cascade":
        from refusalkit.detect.cascade import CascadeDetector
        return CascadeDetector([(get_detector("default"), 0.25, 0.75), (get_detector("embedding"), 0, 1)])
    if name == "judge" or name.startswith("judge:"):
        from refusalkit.detect.judge import LLMJudge
        from refusalkit.models.spec import load_model
        spec = name.split(":", 1)[1] if ":" in name else "default"
        return LLMJudge(load_model(spec), fallback=get_detector("default"))
    if Path(name).is_dir():
        return load_detector(name)
    raise RefusalkitError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}, or a saved detector folder")
