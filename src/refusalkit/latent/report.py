"""The extraction report: PNG plots (cosine per layer, candidate scores, refusal vs coefficient) and one
self-contained HTML page that shows them with the figures from the card."""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def cosine_plot(cos: list[float], chosen_layer: int | None) -> bytes:
    """Return a PNG of the cosine between the harmfulness and refusal directions at each layer."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(range(len(cos)), cos, marker="o", ms=3)
    if chosen_layer is not None:
        ax.axvline(chosen_layer, color="grey", ls="--", lw=1)
    ax.set_xlabel("layer")
    ax.set_ylabel("cosine")
    ax.set_title("harmfulness (t_inst) vs refusal (post-instruction) direction")
    ax.set_ylim(-1, 1)
    return _png(fig)


def candidates_plot(cands: list[dict[str, Any]], baseline: dict[str, float]) -> bytes:
    """Return a PNG of every candidate's refusal probability under ablation (harmful val) and addition
    (harmless val), and its harmless KL, by layer and position."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    for pos in sorted({c["position"] for c in cands}):
        cs = sorted((c for c in cands if c["position"] == pos), key=lambda c: c["layer"])
        xs = [c["layer"] for c in cs]
        axes[0].plot(xs, [c["bypass_p"] for c in cs], marker="o", ms=3, label=pos)
        axes[1].plot(xs, [c["induce_p"] for c in cs], marker="o", ms=3, label=pos)
        axes[2].plot(xs, [c["kl"] for c in cs], marker="o", ms=3, label=pos)
    axes[0].axhline(baseline["harmful_p"], color="grey", ls="--", lw=1)
    axes[1].axhline(baseline["harmless_p"], color="grey", ls="--", lw=1)
    axes[0].set_title("harmful val: refusal p, ablated")
    axes[1].set_title("harmless val: refusal p, added")
    axes[2].set_title("harmless val: first-token KL, ablated")
    axes[2].set_yscale("symlog", linthresh=0.01)
    for ax in axes:
        ax.set_xlabel("layer")
    axes[0].legend(fontsize=7)
    return _png(fig)


def sweep_plot(sweep: list[dict[str, float]], layer: int | None) -> bytes:
    """Return a PNG of the harmless prompts' refusal probability against the addition coefficient."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([s["coef"] for s in sweep], [s["p_refusal"] for s in sweep], marker="o")
    ax.set_xlabel("coefficient (x difference of means)")
    ax.set_ylabel("refusal p (first token)")
    ax.set_title(f"harmless val, refusal direction added at layer {layer}")
    ax.set_ylim(0, 1)
    return _png(fig)


def report_files(card: dict[str, Any]) -> dict[str, bytes]:
    """Return the report's files (name -> bytes): three PNGs and ``report.html``."""
    sel = card.get("refusal", {})
    files = {
        "cosine.png": cosine_plot(card["cosine_per_layer"], sel.get("layer")),
        "candidates.png": candidates_plot(sel.get("candidates", []), sel.get("baseline", {})),
        "sweep.png": sweep_plot(card.get("coefficient_sweep", []), sel.get("layer")),
    }
    imgs = "".join(
        f'<h2>{html.escape(n)}</h2><img src="data:image/png;base64,{base64.b64encode(b).decode()}">'
        for n, b in files.items()
    )
    summary = {k: card.get(k) for k in ("model", "refusal", "separation_check", "guard") if k in card}
    if "refusal" in summary and summary["refusal"]:
        summary["refusal"] = {k: v for k, v in summary["refusal"].items() if k != "candidates"}
    page = (
        "<!doctype html><meta charset='utf-8'><title>refusalkit latent report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}pre{background:#f4f4f4;padding:8px}"
        "</style><h1>Refusal and harmfulness directions</h1>"
        f"<pre>{html.escape(json.dumps(summary, indent=1, default=float))}</pre>{imgs}"
    )
    files["report.html"] = page.encode("utf-8")
    return files
