"""Plots for eval and comparison reports (matplotlib, Agg backend), returned as PNG bytes.

The frontier plot follows OVERT: over-refusal (refusal rate on benign prompts) on x, refusal rate on
harmful prompts on y; the ideal model sits at the top left.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def base_category(name: str) -> str:
    """Return a category name without a contrast marker, so a benign category and its harmful contrast
    (XSTest's ``homonyms`` / ``contrast_homonyms``) pair up."""
    return re.sub(r"^(contrast[_ -]?)", "", name, flags=re.I)


def frontier_points(metrics: dict[str, Any], label: str, *, per_category: bool = False) -> list[dict[str, Any]]:
    """Return frontier points ``{label, x, y, x_ci, y_ci, n_x, n_y}`` of one run's metrics: one overall, or
    one per category that has both benign and harmful prompts."""
    if not per_category:
        o = metrics["overall"]
        if "safety" not in o or "over_refusal" not in o:
            return []
        return [
            {
                "label": label,
                "x": o["over_refusal"]["refusal"]["rate"],
                "x_ci": o["over_refusal"]["refusal"]["ci"],
                "y": o["safety"]["refusal"]["rate"],
                "y_ci": o["safety"]["refusal"]["ci"],
                "n_x": o["over_refusal"]["n"],
                "n_y": o["safety"]["n"],
            }
        ]
    halves: dict[str, dict[str, list]] = defaultdict(lambda: {"safety": [], "over_refusal": []})
    for c in metrics["per_category"]:
        if c["role"] in ("safety", "over_refusal"):
            halves[base_category(c["category"])][c["role"]].append(c)
    pts = []
    for cat, h in sorted(halves.items()):
        if not h["safety"] or not h["over_refusal"]:
            continue
        k = {role: sum(c["refusal"]["k"] for c in cs) for role, cs in h.items()}
        n = {role: sum(c["n"] for c in cs) for role, cs in h.items()}
        pts.append(
            {
                "label": f"{label}: {cat}" if label else cat,
                "x": k["over_refusal"] / n["over_refusal"],
                "y": k["safety"] / n["safety"],
                "x_ci": None,
                "y_ci": None,
                "n_x": n["over_refusal"],
                "n_y": n["safety"],
            }
        )
    return pts


def frontier_plot(points: list[dict[str, Any]], title: str = "Safety vs over-refusal") -> bytes:
    """Return a PNG of the safety-vs-over-refusal frontier: one marker per point, with its intervals."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    for i, p in enumerate(points):
        xerr = yerr = None
        if p.get("x_ci") and None not in p["x_ci"]:
            xerr = [[max(p["x"] - p["x_ci"][0], 0)], [max(p["x_ci"][1] - p["x"], 0)]]
        if p.get("y_ci") and None not in p["y_ci"]:
            yerr = [[max(p["y"] - p["y_ci"][0], 0)], [max(p["y_ci"][1] - p["y"], 0)]]
        ax.errorbar(
            [p["x"]],
            [p["y"]],
            xerr=xerr,
            yerr=yerr,
            fmt="o",
            capsize=3,
            color=f"C{i % 10}",
            label=f"{p['label']} (n benign={p['n_x']}, harmful={p['n_y']})",
        )
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=0.8)
    ax.set_xlabel("over-refusal: refusal rate on benign prompts")
    ax.set_ylabel("safety: refusal rate on harmful prompts")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def category_bars(metrics: dict[str, Any], title: str = "Refusal rate per category") -> bytes:
    """Return a PNG of horizontal bars: refusal rate per (benchmark, category) with 95% intervals,
    coloured by role (safety / over-refusal / unlabelled), with the share of partial refusals and
    redirections stacked inside."""
    plt = _plt()
    cats = metrics["per_category"]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * max(len(cats), 3) + 1.2))
    colours = {"safety": "C3", "over_refusal": "C0", "unlabelled": "C7"}
    for i, c in enumerate(cats):
        full = c["full_refusal"]["rate"] or 0.0
        part = c["partial_refusal"]["rate"] or 0.0
        red = c["redirection"]["rate"] or 0.0
        col = colours.get(c["role"], "C7")
        ax.barh(i, full, color=col, alpha=0.85)
        ax.barh(i, part, left=full, color=col, alpha=0.5, hatch="//")
        ax.barh(i, red, left=full + part, color=col, alpha=0.3, hatch="..")
        r = c["refusal"]
        if r["rate"] is not None:
            ax.errorbar(
                [r["rate"]],
                [i],
                xerr=[[r["rate"] - r["ci"][0]], [r["ci"][1] - r["rate"]]],
                fmt="|",
                color="black",
                capsize=2,
            )
    ax.set_yticks(range(len(cats)))
    ax.set_yticklabels([f"{c['category'][:38]} [{c['role']}]" for c in cats], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("refusal rate (solid: full, hatched: partial, dotted: redirection; bar: 95% CI)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def grouped_bars(table: dict[str, dict[str, float]], *, title: str, xlabel: str, ylabel: str) -> bytes:
    """Return a PNG of grouped bars: ``table[group][series] = value`` (e.g. refusal rate per topic and
    language)."""
    plt = _plt()
    groups = sorted(table)
    series = sorted({s for g in table.values() for s in g})
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(groups) + 2), 4))
    w = 0.8 / max(len(series), 1)
    for j, s in enumerate(series):
        ax.bar(
            [i + j * w for i in range(len(groups))],
            [table[g].get(s, 0.0) for g in groups],
            width=w,
            label=s,
            color=f"C{j % 10}",
        )
    ax.set_xticks([i + 0.4 - w / 2 for i in range(len(groups))])
    ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)
