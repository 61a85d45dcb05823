"""Judging stored responses: choosing a detector, its known error rates, each benchmark's label
convention, and committing verdicts to the run store so every response is judged exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from refusalkit.data.records import Response
from refusalkit.errors import RefusalkitError
from refusalkit.evaluate.metrics import ErrorRates
from refusalkit.evaluate.store import RunStore

T2I_DETECTOR = "t2i"


def convention_label(label: str, convention: str) -> str:
    """Return the benchmark-convention class of a taxonomy label (e.g. ``2_full_refusal`` for XSTest)."""
    from refusalkit.detect.conventions import to_convention
    return to_convention(label, convention)


def benchmark_convention(source: str | None) -> str:
    """Return the label convention of a registered benchmark (``binary`` for files and unknown sources)."""
    from refusalkit.data.registry import REGISTRY
    b = REGISTRY.get(source or "")
    return b.convention if b is not None else "binary"


class T2IRefusalJudge:
    """Judges text-to-image responses as OVERT counts them: the backend marks a refusal (content-policy
    error, all-black image or safety flag) in the response's ``gen_t2i_refusal`` field."""

    name = T2I_DETECTOR

    def predict_responses(self, responses: Sequence[Response]) -> list[str]:
        """Return ``full_refusal`` for each refused image request, else ``full_compliance``."""
        return ["full_refusal" if r.meta.get("gen_t2i_refusal") else "full_compliance" for r in responses]


def resolve_detector(name: str | None):
    """Return a ready detector: ``name``, or the shipped ``default`` detector, else the keyword one."""
    from refusalkit.detect import get_detector

    if name == T2I_DETECTOR:
        return T2IRefusalJudge()
    if name:
        return get_detector(name)
    try:
        return get_detector("default")
    except (RefusalkitError, FileNotFoundError, OSError, ValueError):
        return get_detector("keyword")  # no shipped default detector in this install


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
            return ErrorRates(float(scope["sensitivity"]), float(scope["specificity"]),
                              n_pos=int(n_pos) if n_pos else None, n_neg=int(n_neg) if n_neg else None,
                              source=str(scope.get("source") or card.get("source") or
                                         f"{det.name} model card: " + str((card.get("metrics") or {}).get(
                                             "protocol", "measured sensitivity/specificity"))))
    return None


def judge_responses(det: Any, responses: Sequence[Response]) -> tuple[list[str], list[float]]:
    """Return (taxonomy labels, P(refusal)) for ``responses`` from ``det``."""
    if isinstance(det, T2IRefusalJudge):
        labels = det.predict_responses(responses)
        return labels, [1.0 if lab != "full_compliance" else 0.0 for lab in labels]
    texts = [r.response for r in responses]
    prompts = [r.prompt for r in responses]
    labels = [str(x) for x in det.predict(texts, prompts=prompts)]
    p = np.asarray(det.p_refusal(texts, prompts=prompts), dtype=float).reshape(-1)
    if len(labels) != len(responses) or len(p) != len(responses):
        raise RefusalkitError(f"detector {det.name!r} returned {len(labels)} labels for {len(responses)} responses")
    return labels, [float(v) for v in p]


def judge_pending(store: RunStore, det: Any, *, pass_no: int = 1, batch_size: int = 64) -> int:
    """Judge every stored response that has no verdict from ``det`` yet, committing each batch.

    A verdict records the taxonomy label, P(refusal), the benchmark-convention label, when it was made and
    in which invocation (``pass``). Returns the number judged by this call.
    """
    done = store.verdicts(det.name)
    todo = [r for r in store.responses() if r.id not in done]
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        labels, probs = judge_responses(det, batch)
        now = time.time()
        rows = []
        for r, lab, p in zip(batch, labels, probs):
            conv = benchmark_convention(r.meta.get("benchmark") or r.source)
            rows.append({"id": r.id, "verdict": lab, "p_refusal": p, "detector": det.name,
                         "convention": conv, "convention_label": convention_label(lab, conv),
                         "judged_at": now, "pass": pass_no})
        store.add_verdicts(det.name, rows)
    return len(todo)
