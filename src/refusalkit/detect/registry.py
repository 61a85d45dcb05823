"""The detector registry: one entry per detector class, keyed by the class's ``kind``. It drives
:func:`get_detector` (names), :func:`load_detector` (saved folders: ``meta.json`` names the kind),
:func:`make_detector` (training) and the CLI help (:func:`detector_help`).

Adding a detector means writing its class (a :class:`~refusalkit.detect.base.Detector` with ``kind``,
``predict_proba`` and, if it is learned, ``fit``/``save``/``load``) and one :class:`Kind` line below.
Classes are imported only when used, so listing the kinds (for ``--help``) stays cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from refusalkit.detect.base import Detector, LearnedDetector
from refusalkit.errors import RefusalkitError


@dataclass(frozen=True)
class Kind:
    """A registered detector kind: ``target`` is ``module:Class`` (whose ``kind`` equals ``kind``);
    ``shipped`` the folder under ``resources/detect`` that ``get_detector(kind)`` loads (learned kinds);
    ``trainable`` whether ``detect train --kind`` accepts it; ``usage`` how the name is written in help."""

    kind: str
    target: str
    summary: str
    shipped: str | None = None
    trainable: bool = False
    usage: str | None = None

    def cls(self) -> type[Detector]:
        """Return the detector class (imported on first use)."""
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def learned_cls(self) -> type[LearnedDetector]:
        """Return the class of a learned kind (shipped or trainable: it saves to and loads from a folder)."""
        cls = self.cls()
        if not issubclass(cls, LearnedDetector):
            raise RefusalkitError(f"detector kind {self.kind!r} ({self.target}) cannot be saved or loaded")
        return cls


KINDS: dict[str, Kind] = {
    k.kind: k
    for k in (
        Kind("keyword", "refusalkit.detect.keyword:KeywordDetector", "multilingual keyword rules, no training"),
        Kind(
            "linear",
            "refusalkit.detect.linear:LinearDetector",
            "TF-IDF n-grams + cue features (the shipped default)",
            shipped="default",
            trainable=True,
        ),
        Kind(
            "embedding",
            "refusalkit.detect.embedding:EmbeddingDetector",
            "MiniLM embeddings + cue features",
            shipped="embedding",
            trainable=True,
        ),
        Kind(
            "tsetlin",
            "refusalkit.detect.tsetlin:TsetlinDetector",
            "Tsetlin machine with readable rules",
            shipped="tsetlin",
            trainable=True,
        ),
        Kind("cascade", "refusalkit.detect.cascade:CascadeDetector", "default, then embedding where unsure"),
        Kind(
            "judge",
            "refusalkit.detect.judge:LLMJudge",
            "an LLM grades each response (bundled model, or judge:MODEL)",
            usage="judge[:MODEL]",
        ),
        Kind("t2i", "refusalkit.detect.t2i:T2IRefusalJudge", "text-to-image refusals flagged by the image backend"),
    )
}
# Names that stand for a kind: ``default`` is the shipped linear detector under its own name.
ALIASES = {"default": "linear"}


def names() -> tuple[str, ...]:
    """Return every name :func:`get_detector` accepts besides a folder: ``default`` first, then the kinds."""
    return (*ALIASES, *KINDS)


def detector_help() -> str:
    """Return the ``--detector`` help text of the CLI, built from the registry."""
    kinds = ", ".join(k.usage or k.kind for k in KINDS.values())
    return f"Detector: {', '.join(ALIASES)}, {kinds}, or a saved detector folder."


def trainable_help() -> str:
    """Return the ``detect train --kind`` help text: the trainable kinds, e.g. ``linear, embedding or tsetlin``."""
    *first, last = trainable_kinds()
    return f"{', '.join(first)} or {last}." if first else f"{last}."


def trainable_kinds() -> tuple[str, ...]:
    """Return the kinds that ``make_detector`` (and ``detect train --kind``) accepts."""
    return tuple(k.kind for k in KINDS.values() if k.trainable)


def shipped_dir(name: str) -> Path:
    """Return the folder of a detector shipped inside the package (``default``/``linear``, ``embedding``,
    ``tsetlin``)."""
    entry = KINDS.get(ALIASES.get(name, name))
    folder = entry.shipped if entry is not None and entry.shipped else name
    return Path(str(resources.files("refusalkit") / "resources" / "detect" / folder))


def _entry(name: str) -> Kind:
    kind = ALIASES.get(name, name)
    if kind not in KINDS:
        raise RefusalkitError(f"unknown detector {name!r}; known: {', '.join(names())}, or a saved detector folder")
    return KINDS[kind]


def get_detector(name: str = "default") -> Detector:
    """Return a ready detector: a registered name (``default``, ``keyword``, ``linear``, ``embedding``,
    ``tsetlin``, ``cascade``, ``judge[:MODEL]``, ``t2i``) or the folder of a saved detector."""
    head, sep, arg = name.partition(":")
    if head in ALIASES or head in KINDS:
        entry = _entry(head)
        if entry.shipped:
            if sep:
                raise RefusalkitError(f"detector {head!r} takes no ':' argument (got {name!r})")
            det = entry.learned_cls().load(shipped_dir(entry.shipped))
            if head in ALIASES:
                det.name = head
            return det
        return entry.cls().ready(arg if sep else None)
    if Path(name).is_dir():
        return load_detector(name)
    raise RefusalkitError(f"unknown detector {name!r}; known: {', '.join(names())}, or a saved detector folder")


def load_detector(folder: str | Path) -> Detector:
    """Return the detector saved in ``folder``: its ``meta.json`` names the kind, whose class loads it
    (checking the folder's manifest)."""
    from refusalkit.artifacts import META, ArtifactError, read_json

    folder = Path(folder)
    mp = folder / META
    if not mp.is_file():
        raise RefusalkitError(
            f"{folder}: not a saved detector (no meta.json); train one with `refusalkit detect train`"
        )
    meta = read_json(mp, "detector metadata")
    kind = meta.get("kind") if isinstance(meta, dict) else None
    entry = KINDS.get(kind) if isinstance(kind, str) else None
    if entry is None or not entry.trainable:
        raise ArtifactError(mp, f"unknown detector kind {kind!r}; saved kinds: {', '.join(trainable_kinds())}")
    return entry.learned_cls().load(folder)


def make_detector(kind: str, **kw: Any) -> LearnedDetector:
    """Return an untrained detector of a trainable ``kind`` (``linear`` or its alias ``default``,
    ``embedding``, ``tsetlin``), built with settings ``kw``."""
    entry = KINDS.get(ALIASES.get(kind, kind))
    if entry is None or not entry.trainable:
        raise RefusalkitError(f"cannot train a {kind!r} detector; trainable kinds: {', '.join(trainable_kinds())}")
    return entry.learned_cls()(**kw)
