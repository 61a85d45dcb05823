"""The data behind the refusal-token part of ``refusalkit demo``: the bundled model with the shipped adapter
under its shipped profiles, on refusalkit's own demo prompts, plus the CoCoNot test figures stored in the
profiles and the calibration curves written to PNG. The console output is ``refusalkit.cli.demo``'s job."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refusalkit.models.base import Generation

log = logging.getLogger(__name__)

PROFILES = ("strict", "balanced", "lenient")


@dataclass
class TokensDemo:
    """What the refusal-token demo measured.

    ``columns`` maps a policy name to one ``policy_rows`` row per demo prompt; ``test_figures`` holds, per
    shipped profile, the CoCoNot test-split figures stored in it (``profile_test_figures``); ``examples``
    pairs a few demo prompts with their answer under the balanced profile (or argmax); ``pngs`` are the
    calibration curves written.
    """

    columns: dict[str, list[dict[str, Any]]]
    test_figures: list[dict[str, Any]] = field(default_factory=list)
    examples: list[tuple[Any, Generation]] = field(default_factory=list)
    pngs: list[str] = field(default_factory=list)


def shipped_profiles() -> dict[str, dict[str, Any]]:
    """Return the profiles shipped with the bundled adapter, by name (empty when none are shipped)."""
    from refusalkit.tokens.policy import load_profile

    out = {}
    for name in PROFILES:
        try:
            out[name] = load_profile(name)
        except Exception:  # noqa: BLE001 - a missing profile just leaves its column out
            log.debug("shipped profile %s not found; its column is left out", name)
            continue
    return out


def policy_rows(examples: list[Any], q: np.ndarray, policy: Any) -> list[dict[str, Any]]:
    """Return ``{"category", "expected", "refused", "token"}`` per demo prompt under ``policy``."""
    choice = policy.decide(q)
    toks = policy.scheme.tokens
    return [
        {"category": e.category, "expected": e.expected or "refuse", "refused": c < len(toks) - 1, "token": toks[c]}
        for e, c in zip(examples, choice)
    ]


def profile_test_figures(profiles: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Return, per profile that stores CoCoNot test figures, ``{"name", "f1", "rates"}`` where ``rates`` maps
    a short category name (its first word; ``Safety`` for "Requests with safety concerns") to the share of
    its harmful test prompts refused."""
    out = []
    for name, prof in profiles.items():
        b = (prof.get("test") or {}).get("binary")
        if not b:
            continue
        per = prof["test"]["per_category"]
        rates = {
            (c.split()[0] if c != "Requests with safety concerns" else "Safety"): d["harmful"]["rate"]
            for c, d in per.items()
            if "harmful" in d
        }
        out.append({"name": name, "f1": b["f1"], "rates": rates})
    return out


def run_tokens_demo(
    examples: list[Any], *, out_dir: Path, n_examples: int = 3, max_new_tokens: int = 48
) -> TokensDemo | None:
    """Score the demo prompts under the shipped adapter and profiles, answer a few of them under the balanced
    profile and write the calibration curves to ``out_dir``; return a :class:`TokensDemo`, or None when this
    install has no bundled adapter."""
    from refusalkit.models.base import GenerationConfig
    from refusalkit.tokens.calibrate import plot_curves, score_prompts
    from refusalkit.tokens.generate import PolicyModel, answer_model_for, emits_respond
    from refusalkit.tokens.model import bundled_adapter_dir, load_token_model
    from refusalkit.tokens.policy import Policy, policy_from_profile

    adir = bundled_adapter_dir()
    if not (adir / "adapter_config.json").is_file():
        log.info("no bundled refusal-token adapter in this install (%s)", adir)
        return None
    hf, scheme, ids, info = load_token_model("default", "bundled")
    q = score_prompts(hf, [e.prompt for e in examples], ids, scheme)
    profiles = shipped_profiles()
    columns = {"adapter (argmax)": policy_rows(examples, q, Policy(scheme, rule="argmax"))}
    for name, prof in profiles.items():
        columns[name] = policy_rows(examples, q, policy_from_profile(prof))
    # a few answers under the balanced profile (or argmax)
    pol = policy_from_profile(profiles["balanced"]) if "balanced" in profiles else Policy(scheme, rule="argmax")
    pick = examples[:: max(1, len(examples) // max(n_examples, 1))][:n_examples]
    gens = PolicyModel(
        hf, pol, ids, emit_respond=emits_respond(info), answer_model=answer_model_for("default", info)
    ).generate([e.prompt for e in pick], GenerationConfig(max_new_tokens=max_new_tokens))
    pngs: list[str] = []
    curves_file = adir / "profiles" / "curves.json"
    if curves_file.is_file():
        data = json.loads(curves_file.read_text(encoding="utf-8"))
        thr = profiles.get("balanced", {}).get("policy", {}).get("thresholds")
        pngs = plot_curves(data, out_dir, thresholds=thr, title="CoCoNot calibration split, balanced thresholds")
    return TokensDemo(
        columns=columns, test_figures=profile_test_figures(profiles), examples=list(zip(pick, gens)), pngs=pngs
    )
