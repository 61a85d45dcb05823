"""Judging stored responses: choosing a detector, its known error rates, each benchmark's label
convention, and committing verdicts to the run store so every response is judged exactly once.
"""

from __future__ import annotations

import time
from typing import Any

from refusalkit.detect.base import Detector
from refusalkit.errors import RefusalkitError
from refusalkit.evaluate.metrics import ErrorRates
from refusalkit.runs.store import RunStore

T2I_DETECTOR = "t2i"


def convention_label(label: str, convention: str) -> str:
    """Return the benchmark-convention class of a taxonomy label (e.g. ``2_full_refusal`` for XSTest)."""
    from refusalkit.data.conventions import to_convention

    return to_convention(label, convention)


def benchmark_convention(source: str | None) -> str:
    """Return the label convention of a registered benchmark (``binary`` for files and unknown sources)."""
    from refusalkit.data.registry import REGISTRY

    b = REGISTRY.get(source or "")
    return b.convention if b is not None else "binary"


def resolve_detector(name: str | None) -> Detector:
    """Return a ready detector: ``name`` (any name of :mod:`refusalkit.detect.registry`, ``t2i`` for image
    models), or the shipped ``default`` detector (the keyword one in an install without it). A damaged
    shipped detector is an error, never a silent switch to keywords."""
    from refusalkit.detect import get_detector, shipped_dir

    if name:
        return get_detector(name)
    if not (shipped_dir("default") / "meta.json").is_file():
        return get_detector("keyword")  # no shipped default detector in this install
    return get_detector("default")


def detector_error_rates(det: Any, sens: float | None = None, spec: float | None = None) -> ErrorRates | None:
    """Return the detector's sensitivity/specificity: from ``sens``/``spec`` when both are given, else from
    its model card (``det.card``: a dict or object with ``sensitivity``/``specificity`` and optional
    ``n_pos``/``n_neg``, at the top level or under ``metrics``/``validation``), else ``None``."""
    if (sens is None) != (spec is None):
        raise RefusalkitError("give both --sens and --spec (the detector's sensitivity and specificity)")
    if sens is not None and spec is not None:
        return ErrorRates(float(sens), float(spec), source="command line")
    card = getattr(det, "card", None)
    if callable(card):
        card = card()
    if card is None:
        return None
    if not isinstance(card, dict):
        card = dict(getattr(card, "__dict__", {}))
    for scope in (card, card.get("metrics") or {}, card.get("validation") or {}):
        if isinstance(scope, dict) and "sensitivity" in scope and "specificity" in scope:
            n_pos, n_neg = scope.get("n_pos"), scope.get("n_neg")
            return ErrorRates(
                float(scope["sensitivity"]),
                float(scope["specificity"]),
                n_pos=int(n_pos) if n_pos else None,
                n_neg=int(n_neg) if n_neg else None,
                source=str(
                    scope.get("source")
                    or card.get("source")
                    or f"{det.name} model card: "
                    + str((card.get("metrics") or {}).get("protocol", "measured sensitivity/specificity"))
                ),
            )
    return None


def judge_pending(store: RunStore, det: Detector, *, pass_no: int = 1, batch_size: int = 64) -> int:
    """Judge every stored response that has no verdict from ``det`` yet, committing each batch.

    A verdict records the taxonomy label, P(refusal), the benchmark-convention label, when it was made and
    in which invocation (``pass``). Returns the number judged by this call.
    """
    done = store.verdicts(det.name)
    todo = [r for r in store.responses() if r.id not in done]
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        verdicts = det.judge(batch)  # one predict_proba pass: an LLM judge generates once per response
        if len(verdicts) != len(batch) or any(v.id != r.id for v, r in zip(verdicts, batch)):
            raise RefusalkitError(f"detector {det.name!r} returned {len(verdicts)} verdicts for {len(batch)} responses")
        now = time.time()
        for r, v in zip(batch, verdicts):
            conv = benchmark_convention(r.meta.get("benchmark") or r.source)
            v.detector = det.name
            v.meta.update(
                {
                    "convention": conv,
                    "convention_label": convention_label(v.verdict, conv),
                    "judged_at": now,
                    "pass": pass_no,
                }
            )
        # stored flat, as before: id, verdict, p_refusal, detector, convention, convention_label, judged_at, pass
        store.add_verdicts(det.name, [v.to_dict() for v in verdicts])
    return len(todo)
