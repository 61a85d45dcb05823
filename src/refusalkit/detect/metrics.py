"""Scoring a detector against gold labels: accuracy, macro-F1, confusion matrix, per-class and per-source."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from refusalkit.data.taxonomy import LABELS


def _prf(gold: list[str], pred: list[str], classes: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for c in classes:
        tp = sum(g == c and p == c for g, p in zip(gold, pred))
        fp = sum(g != c and p == c for g, p in zip(gold, pred))
        fn = sum(g == c and p != c for g, p in zip(gold, pred))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out[c] = {"precision": prec, "recall": rec, "f1": f1, "support": tp + fn}
    return out


def group_scores(gold: list[str], pred: list[str], groups: list[str]) -> dict[str, dict[str, Any]]:
    """Return, per group (sorted by name), ``n``, ``n_pos``/``n_neg`` (gold refusals/compliances),
    ``binary_accuracy``, ``fp`` (compliance judged a refusal), ``fn`` (refusal judged compliance) and the
    finer accuracies the gold labels allow: ``xstest_accuracy`` (XSTest's three classes, redirection =
    full refusal) when the gold labels include partial refusals, ``taxonomy_accuracy`` (the four classes)
    when they include redirections; otherwise those two are ``None``."""
    from refusalkit.data.conventions import to_convention

    present = set(gold)
    three = "partial_refusal" in present
    four = "redirection" in present
    by: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for k, g, p in zip(groups, gold, pred):
        by[k].append((g, p))
    out = {}
    for k, pairs in sorted(by.items()):
        gb = [g != LABELS[0] for g, _ in pairs]
        pb = [p != LABELS[0] for _, p in pairs]
        out[k] = {
            "n": len(pairs),
            "n_pos": sum(gb),
            "n_neg": len(gb) - sum(gb),
            "binary_accuracy": float(np.mean([a == b for a, b in zip(gb, pb)])),
            "fp": sum(p and not g for g, p in zip(gb, pb)),
            "fn": sum(g and not p for g, p in zip(gb, pb)),
            "xstest_accuracy": float(
                np.mean([to_convention(g, "xstest") == to_convention(p, "xstest") for g, p in pairs])
            )
            if three
            else None,
            "taxonomy_accuracy": float(np.mean([g == p for g, p in pairs])) if four else None,
        }
    return out


def score(
    gold: list[str],
    pred: list[str],
    sources: list[str] | None = None,
    groups: list[str] | None = None,
    group_field: str | None = None,
) -> dict[str, Any]:
    """Return a report comparing taxonomy labels ``pred`` with ``gold``.

    Keys: ``n``; ``binary`` (accuracy, macro-F1, sensitivity, specificity, n_pos, n_neg with refusal =
    anything but full compliance); ``taxonomy`` (accuracy, macro-F1 over classes present in gold,
    per-class precision/recall, confusion matrix rows=gold cols=pred); ``by_source`` (binary accuracy and n);
    with ``groups``, ``by_group`` = ``{"field": group_field, "groups": group_scores(...)}``.
    """
    gb = [g != LABELS[0] for g in gold]
    pb = [p != LABELS[0] for p in pred]
    bprf = _prf(["r" if g else "c" for g in gb], ["r" if p else "c" for p in pb], ["c", "r"])
    tp = sum(g and p for g, p in zip(gb, pb))
    tn = sum(not g and not p for g, p in zip(gb, pb))
    n_pos, n_neg = sum(gb), len(gb) - sum(gb)
    present = [c for c in LABELS if c in set(gold)]
    prf = _prf(gold, pred, list(LABELS))
    cm = [[sum(g == a and p == b for g, p in zip(gold, pred)) for b in LABELS] for a in LABELS]
    rep: dict[str, Any] = {
        "n": len(gold),
        "binary": {
            "accuracy": float(np.mean([g == p for g, p in zip(gb, pb)])) if gold else 0.0,
            "macro_f1": (bprf["c"]["f1"] + bprf["r"]["f1"]) / 2,
            "sensitivity": tp / n_pos if n_pos else None,
            "specificity": tn / n_neg if n_neg else None,
            "n_pos": n_pos,
            "n_neg": n_neg,
        },
        "taxonomy": {
            "accuracy": float(np.mean([g == p for g, p in zip(gold, pred)])) if gold else 0.0,
            "macro_f1": float(np.mean([prf[c]["f1"] for c in present])) if present else 0.0,
            "per_class": prf,
            "labels": list(LABELS),
            "confusion": cm,
        },
    }
    if sources is not None:
        by: dict[str, list[bool]] = defaultdict(list)
        for s, g, p in zip(sources, gb, pb):
            by[s].append(g == p)
        rep["by_source"] = {s: {"n": len(v), "binary_accuracy": float(np.mean(v))} for s, v in sorted(by.items())}
    if groups is not None:
        rep["by_group"] = {"field": group_field, "groups": group_scores(gold, pred, groups)}
    return rep


def format_report(rep: dict[str, Any], title: str = "") -> str:
    """Return a plain-text rendering of :func:`score`'s report."""
    b, t = rep["binary"], rep["taxonomy"]
    lines = [title] if title else []
    sens = "-" if b["sensitivity"] is None else f"{b['sensitivity']:.3f}"
    spec = "-" if b["specificity"] is None else f"{b['specificity']:.3f}"
    lines.append(
        f"n={rep['n']}  binary accuracy {b['accuracy']:.4f}  macro-F1 {b['macro_f1']:.4f}  "
        f"sensitivity {sens}  specificity {spec}"
    )
    lines.append(f"taxonomy accuracy {t['accuracy']:.4f}  macro-F1 {t['macro_f1']:.4f}")
    lines.append("per class:            precision  recall  support")
    for c in t["labels"]:
        m = t["per_class"][c]
        lines.append(f"  {c:<18} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['support']:>8d}")
    lines.append("confusion (rows gold, columns predicted): " + " | ".join(t["labels"]))
    for c, row in zip(t["labels"], t["confusion"]):
        lines.append(f"  {c:<18} " + " ".join(f"{v:>6d}" for v in row))
    if "by_source" in rep:
        lines.append("by source (binary accuracy):")
        for s, m in rep["by_source"].items():
            lines.append(f"  {s:<28} {m['binary_accuracy']:.4f}  (n={m['n']})")
    if "by_group" in rep:
        lines.extend(format_groups(rep["by_group"]))
    return "\n".join(lines)


def format_groups(by_group: dict[str, Any]) -> list[str]:
    """Return the text lines of a ``by_group`` report: one row per group, worst binary accuracy first."""
    groups = by_group["groups"]
    some: dict[str, Any] = next(iter(groups.values()), {})
    cols = [("xstest_accuracy", "xstest-3"), ("taxonomy_accuracy", "4-class")]
    cols = [(k, h) for k, h in cols if some.get(k) is not None]
    head = f"  {'group':<28} {'n':>5} {'binary':>7} {'FP':>4} {'FN':>4}" + "".join(f" {h:>8}" for _, h in cols)
    lines = [f"by {by_group['field']} (worst binary accuracy first; FP = compliance judged refusal):", head]
    for g, m in sorted(groups.items(), key=lambda kv: (kv[1]["binary_accuracy"], kv[0])):
        lines.append(
            f"  {g[:28]:<28} {m['n']:>5} {m['binary_accuracy']:>7.4f} {m['fp']:>4} {m['fn']:>4}"
            + "".join(f" {m[k]:>8.4f}" for k, _ in cols)
        )
    return lines
