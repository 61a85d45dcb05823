"""The refusal-token part of ``refusalkit demo``: the bundled model with the shipped adapter under its
shipped profiles, on refusalkit's own demo prompts, plus the CoCoNot test figures stored in the profiles
and the calibration curves written to PNG."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

PROFILES = ("strict", "balanced", "lenient")


def shipped_profiles() -> dict[str, dict[str, Any]]:
    """Return the profiles shipped with the bundled adapter, by name (empty when none are shipped)."""
    from refusalkit.tokens.policy import load_profile

    out = {}
    for name in PROFILES:
        try:
            out[name] = load_profile(name)
        except Exception:  # noqa: BLE001 - a missing profile just leaves its column out
            continue
    return out


def policy_rows(examples: list[Any], q: np.ndarray, policy: Any) -> list[dict[str, Any]]:
    """Return ``{"category", "expected", "refused", "token"}`` per demo prompt under ``policy``."""
    choice = policy.decide(q)
    toks = policy.scheme.tokens
    return [{"category": e.category, "expected": e.expected or "refuse", "refused": c < len(toks) - 1,
             "token": toks[c]} for e, c in zip(examples, choice)]


def rates_table(columns: dict[str, list[dict[str, Any]]], title: str):
    """Return a rich table: one row per category, one column per policy, cells 'refused | should refuse'
    and 'refused | should answer'."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column("category")
    for name in columns:
        t.add_column(f"{name}\nharmful | contrast", justify="right")
    cats = sorted({r["category"] or "(none)" for rows in columns.values() for r in rows})
    for c in cats:
        cells = []
        for rows in columns.values():
            agg: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for r in rows:
                if (r["category"] or "(none)") == c:
                    agg[r["expected"]][0] += int(r["refused"])
                    agg[r["expected"]][1] += 1
            parts = [f"{agg[k][0]}/{agg[k][1]}" if agg[k][1] else "-" for k in ("refuse", "comply")]
            cells.append(" | ".join(parts))
        t.add_row(c, *cells)
    return t


def run_tokens_demo(console: Any, examples: list[Any], *, out_dir: Path, n_examples: int = 3,
                    max_new_tokens: int = 48) -> dict[str, Any]:
    """Print the refusal-token demo; return what it measured (rates per policy, example answers, PNGs)."""
    from rich.markup import escape

    from refusalkit.models.base import GenerationConfig
    from refusalkit.tokens.calibrate import plot_curves, score_prompts
    from refusalkit.tokens.generate import PolicyModel, answer_model_for, emits_respond
    from refusalkit.tokens.model import bundled_adapter_dir, load_token_model
    from refusalkit.tokens.policy import Policy, policy_from_profile

    adir = bundled_adapter_dir()
    if not (adir / "adapter_config.json").is_file():
        console.print("[yellow]refusal tokens: no bundled adapter in this install; skipped[/]")
        return {}
    hf, scheme, ids, info = load_token_model("default", "bundled")
    q = score_prompts(hf, [e.prompt for e in examples], ids, scheme)
    profiles = shipped_profiles()
    columns = {"adapter (argmax)": policy_rows(examples, q, Policy(scheme, rule="argmax"))}
    for name, prof in profiles.items():
        columns[name] = policy_rows(examples, q, policy_from_profile(prof))
    console.print(rates_table(columns, "Refusal tokens on the demo prompts: prompts refused by each policy "
                                       "(one forward pass each, no generation)"))
    # CoCoNot held-out figures, measured when the profiles were made
    for name, prof in profiles.items():
        b = (prof.get("test") or {}).get("binary")
        if b:
            per = prof["test"]["per_category"]
            rates = ", ".join(f"{c.split()[0] if c != 'Requests with safety concerns' else 'Safety'} "
                              f"{d['harmful']['rate']:.0%}" for c, d in per.items() if "harmful" in d)
            console.print(f"  CoCoNot test split, profile [bold]{name}[/]: F1 {b['f1']:.3f}; refused: {rates}")
    # a few answers under the balanced profile (or argmax)
    pol = policy_from_profile(profiles["balanced"]) if "balanced" in profiles else Policy(scheme, rule="argmax")
    pick = examples[:: max(1, len(examples) // max(n_examples, 1))][:n_examples]
    gens = PolicyModel(hf, pol, ids, emit_respond=emits_respond(info),
                       answer_model=answer_model_for("default", info)).generate([e.prompt for e in pick], GenerationConfig(max_new_tokens=max_new_tokens))
    for e, g in zip(pick, gens):
        console.print(f"[dim]{escape(str(e.category))} ({e.expected})[/] {escape(e.prompt)}\n"
                      f"  -> {escape(g.meta['control_token'])} {escape(repr(g.text[:160]))}")
    pngs: list[str] = []
    curves_file = adir / "profiles" / "curves.json"
    if curves_file.is_file():
        data = json.loads(curves_file.read_text(encoding="utf-8"))
        thr = profiles.get("balanced", {}).get("policy", {}).get("thresholds")
        pngs = plot_curves(data, out_dir, thresholds=thr, title="CoCoNot calibration split, balanced thresholds")
        console.print(f"calibration curves written to {', '.join(pngs)}")
    return {"columns": columns, "pngs": pngs}
