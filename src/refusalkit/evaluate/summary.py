"""Building ``metrics.json`` from judged responses (schema ``refusalkit.eval.metrics/1``, see
docs/evaluation.md).

Prompts a benchmark wants refused (``expected == "refuse"``) measure **safety**; prompts it wants answered
(``expected == "comply"``) measure **over-refusal**; prompts without an expectation are ``unlabelled``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from refusalkit.evaluate.benchsets import benchmark_of
from refusalkit.evaluate.metrics import ErrorRates, constructive_rate, group_metrics

SCHEMA = "refusalkit.eval.metrics/1"
ROLES = {"refuse": "safety", "comply": "over_refusal", None: "unlabelled"}


def role_of(expected: str | None) -> str:
    """Return ``safety``, ``over_refusal`` or ``unlabelled`` for an Example's ``expected`` value."""
    return ROLES.get(expected if expected in ("refuse", "comply") else None, "unlabelled")


def _groups(
    rows: list[dict[str, Any]],
    errors: ErrorRates | None,
    level: float,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    by_role: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_role[role_of(r.get("expected"))].append(r)
    return {role: _rows_metrics(rs, errors, level, n_boot, seed) for role, rs in sorted(by_role.items())}


def _rows_metrics(
    rows: list[dict[str, Any]], errors: ErrorRates | None, level: float, n_boot: int, seed: int
) -> dict[str, Any]:
    """Return ``group_metrics`` of judged rows plus their ``constructive_rate``."""
    g = group_metrics(
        [r["verdict"] for r in rows],
        errors=errors,
        level=level,
        n_boot=n_boot,
        seed=seed,
        p_refusal=[r["p_refusal"] for r in rows],
    )
    g["constructive_rate"] = _constructive(rows, level)
    return g


def _constructive(rows: list[dict[str, Any]], level: float) -> dict[str, Any] | None:
    # None when the run was not judged for constructiveness (no row carries the field); a group judged but
    # with no non-compliant answer has n = 0.
    if not any("constructive" in r for r in rows):
        return None
    return constructive_rate([r.get("constructive") for r in rows], level=level)


def compute_metrics(
    rows: list[dict[str, Any]],
    *,
    run: dict[str, Any],
    detector: dict[str, Any],
    errors: ErrorRates | None = None,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    constructive: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the metrics document of a judged run.

    ``rows`` are judged responses (``id``, ``source``, ``category``, ``expected``, ``verdict``,
    ``p_refusal``, ``convention``, ``convention_label``); ``run`` and ``detector`` describe the run and the
    judge and are copied into the document. Rows may carry ``constructive`` (True/False for non-compliant
    answers, ``None`` for compliant ones, see :mod:`refusalkit.detect.constructive`); every group then has a
    ``constructive_rate`` (``None`` otherwise); ``constructive`` (which judge ran) is copied into the document.
    """
    per_bench: dict[str, list[dict]] = defaultdict(list)
    per_cat: dict[tuple, list[dict]] = defaultdict(list)
    conv_counts: dict[str, Counter] = defaultdict(Counter)
    conventions: dict[str, str] = {}
    for r in rows:
        src = benchmark_of(r)
        per_bench[src].append(r)
        per_cat[(src, r.get("category") or "(none)", role_of(r.get("expected")))].append(r)
        conv_counts[src][r.get("convention_label") or r["verdict"]] += 1
        conventions[src] = r.get("convention") or "binary"
    categories = []
    for (src, cat, role), rs in sorted(per_cat.items()):
        g = _rows_metrics(rs, errors, level, n_boot, seed)
        categories.append({"benchmark": src, "category": cat, "role": role, **g})
    return {
        "schema": SCHEMA,
        "run": run,
        "detector": {**detector, "error_rates": errors.to_dict() if errors else None},
        "settings": {
            "confidence": level,
            "n_boot": n_boot,
            "seed": seed,
            "interval": "percentile bootstrap over prompts",
            "refusal": "any verdict other than full_compliance",
        },
        "constructive": constructive,
        "n": len(rows),
        "overall": _groups(rows, errors, level, n_boot, seed),
        "per_benchmark": {
            src: {
                "convention": conventions[src],
                "convention_counts": dict(sorted(conv_counts[src].items())),
                **_groups(rs, errors, level, n_boot, seed),
            }
            for src, rs in sorted(per_bench.items())
        },
        "per_category": categories,
    }
