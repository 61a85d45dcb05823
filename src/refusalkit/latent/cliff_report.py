"""The cliff scan's report: a summary PNG (probe score vs relative position, and vs distance to the answer,
refused vs complied) and one self-contained HTML page (every trace's tokens coloured by score, text escaped)."""

from __future__ import annotations

import base64
import html
from typing import Any

import numpy as np

from refusalkit.latent.report import _plt, _png


def _binned(recs: list[dict[str, Any]], bins: int) -> np.ndarray:
    sums, counts = np.zeros(bins), np.zeros(bins)
    for r in recs:
        s = np.asarray(r["scores"], dtype=float)
        if len(s) == 0:
            continue
        b = np.minimum((np.arange(len(s)) / len(s) * bins).astype(int), bins - 1)
        np.add.at(sums, b, s)
        np.add.at(counts, b, 1)
    with np.errstate(invalid="ignore"):
        return sums / counts


def summary_plot(recs: list[dict[str, Any]], window: int = 5, bins: int = 20, before: int = 30) -> bytes:
    """Return a PNG: left, the mean probe score against the relative position in the generation (binned), for
    refused and complied answers; right, the mean score against the token distance to the answer boundary."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    groups = (
        ("refused", "tab:red", [r for r in recs if r["refused"]]),
        ("complied", "tab:blue", [r for r in recs if not r["refused"]]),
    )
    x = (np.arange(bins) + 0.5) / bins
    for name, color, rs in groups:
        for r in rs[:40]:  # faint individual traces
            s = r["scores"]
            if s:
                axes[0].plot(np.arange(len(s)) / len(s), s, color=color, alpha=0.12, lw=0.7)
        if rs:
            axes[0].plot(x, _binned(rs, bins), color=color, lw=2, label=f"{name} (n={len(rs)})")
        rel = np.arange(-before, 4)
        sums, counts = np.zeros(len(rel)), np.zeros(len(rel))
        for r in rs:
            b = r.get("boundary")
            if b is None:
                continue
            for j, d in enumerate(rel):
                if 0 <= b + d < len(r["scores"]):
                    sums[j] += r["scores"][b + d]
                    counts[j] += 1
        if counts.any():
            with np.errstate(invalid="ignore"):
                axes[1].plot(rel, sums / counts, color=color, lw=2, marker="o", ms=2, label=name)
    axes[0].set_xlabel("relative position in the generation")
    axes[1].set_xlabel("tokens from the answer boundary (0 = first answer token)")
    axes[1].axvspan(-window, 0, color="grey", alpha=0.15, label=f"last {window} before the answer")
    for ax in axes:
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("probe p(refusal)")
        ax.legend(fontsize=7)
    axes[0].set_title("refusal intent through the trace")
    axes[1].set_title("around the thinking/answer boundary")
    return _png(fig)


def _colour(p: float) -> str:
    # white (0) to red (1)
    v = int(255 - 200 * min(max(p, 0.0), 1.0))
    return f"rgb(255,{v},{v})"


def report_html(recs: list[dict[str, Any]], summary: dict[str, Any], png: bytes, meta: dict[str, Any]) -> str:
    """Return a self-contained HTML page: the run's settings and summary, the plot, and every trace with its
    tokens coloured by the probe's score (all model text escaped)."""
    e = html.escape
    rows = "".join(f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td></tr>" for k, v in {**meta, **summary}.items())
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>refusal cliff</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:auto}td{padding:2px 8px}"
        ".t{font-family:monospace;white-space:pre-wrap;font-size:12px;line-height:1.6}"
        ".b{border-left:3px solid black}</style></head><body>",
        "<h1>Refusal cliff</h1>",
        f"<table>{rows}</table>",
        f"<img alt='score vs position' src='data:image/png;base64,{base64.b64encode(png).decode()}'>",
    ]
    for i, r in enumerate(recs):
        cl = "n/a" if r.get("cliff") is None else f"{r['cliff']:.3f}"
        parts.append(
            f"<h3>{i + 1}. {e(str(r.get('id', '')))}: {e(str(r.get('verdict')))}, cliff {e(cl)}</h3>"
            f"<p><b>prompt:</b> {e(str(r.get('prompt', '')))}</p><div class='t'>"
        )
        b = r.get("boundary")
        for j, (t, s) in enumerate(zip(r["tokens"], r["scores"])):
            cls = " class='b'" if j == b else ""
            parts.append(f"<span{cls} title='{s:.3f}' style='background:{_colour(s)}'>{e(t)}</span>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)
