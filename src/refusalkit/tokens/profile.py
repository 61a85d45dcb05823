"""Calibration profiles: score the calibration and test splits once, derive thresholds, check them on
the test split, and save everything a deployment needs as one self-describing JSON file."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from refusalkit.errors import RefusalkitError
from refusalkit.tokens.calibrate import (
    curves,
    f1_thresholds,
    gap_table,
    parse_targets,
    rates_by_category,
    score_prompts,
    thresholds_for_rates,
)
from refusalkit.tokens.data import DEFAULT_SEED, LabelledPrompt, read_labelled, split_manifest, stratified_split
from refusalkit.tokens.model import adapter_hash, model_hash
from refusalkit.tokens.policy import Policy
from refusalkit.tokens.scheme import TokenScheme

PROFILE_FORMAT = "refusalkit-profile/1"


def calibration_splits(data: str, info: dict[str, Any]) -> dict[str, list[LabelledPrompt]]:
    """Return the calibration and test splits of ``data``, split as the adapter's training data was.

    Raises RefusalkitError when a calibration or test prompt was among the adapter's training prompts.
    """
    cfg = info.get("config") or {}
    items = read_labelled(data)
    splits = stratified_split(
        items, seed=int(cfg.get("seed", DEFAULT_SEED)), fractions=tuple(cfg.get("split_fractions", (0.6, 0.2, 0.2)))
    )
    adir = info.get("adapter")
    train_ids: set[str] = set()
    if adir and (Path(adir) / "splits.json").is_file():
        train_ids = set(json.loads((Path(adir) / "splits.json").read_text())["train"])
    leaked = [it.id for s in ("calibration", "test") for it in splits[s] if it.id in train_ids]
    if leaked:
        raise RefusalkitError(
            f"{len(leaked)} calibration/test prompts of {data} were used to train the adapter "
            f"(e.g. {leaked[0]!r}); calibrate on data the adapter has not seen"
        )
    return splits


class Scored:
    """Control-token probabilities of a list of labelled prompts, with their categories and labels."""

    def __init__(self, items: list[LabelledPrompt], q: np.ndarray):
        self.items = items
        self.q = q
        self.categories = [it.category for it in items]
        self.refuse = np.array([it.refuse for it in items], dtype=bool)


def score_items(
    hf: Any,
    items: list[LabelledPrompt],
    token_ids: dict[str, int],
    scheme: TokenScheme,
    *,
    temperature: float = 1.0,
    cache_key: str | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Scored:
    """Return the items' scores, cached (as ``.npz``, no pickle) under the runs root by ``cache_key``."""
    from refusalkit.runs.store import runs_root

    path = None
    if cache_key:
        h = hashlib.sha256(json.dumps([cache_key, temperature, [(it.id, it.prompt) for it in items]]).encode())
        path = runs_root() / "tokens-scores" / f"{h.hexdigest()[:20]}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                return Scored(items, z["q"])
    q = score_prompts(hf, [it.prompt for it in items], token_ids, scheme, temperature=temperature, on_batch=on_batch)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, q=q)
        tmp.replace(path)
    return Scored(items, q)


def build_profile(
    *,
    name: str,
    scheme: TokenScheme,
    token_ids: dict[str, int],
    info: dict[str, Any],
    model_spec: str,
    model_dir: str | None,
    cal: Scored,
    test: Scored | None,
    targets: dict[str, float] | None = None,
    rule: str = "threshold",
    temperature: float = 1.0,
    joint: bool = True,
    data: str | None = None,
    splits_manifest: dict | None = None,
    gap_targets: tuple[float, ...] | None = None,
) -> dict[str, Any]:
    """Return a profile: thresholds from ``targets`` (or F1-maximising when None, or none for ``argmax``),
    with calibration figures, held-out test figures and the model/adapter hashes."""
    notes: dict[str, Any] = {}
    if rule == "argmax":
        policy = Policy(scheme, rule="argmax", temperature=temperature)
        how = "argmax (the model's own choice)"
    elif targets:
        thr, notes = thresholds_for_rates(cal.q, cal.categories, cal.refuse, scheme, targets, joint=joint)
        policy = Policy(scheme, thresholds=thr, temperature=temperature)
        how = "target rates"
    else:
        policy = Policy(scheme, thresholds=f1_thresholds(cal.q, cal.refuse, scheme), temperature=temperature)
        how = "max F1 on the calibration split"
    prof: dict[str, Any] = {
        "format": PROFILE_FORMAT,
        "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": model_spec,
        "model_sha256": model_hash(model_dir) if model_dir else "unknown",
        "adapter": Path(info["adapter"]).name if info.get("adapter") else None,
        "adapter_sha256": adapter_hash(info["adapter"]) if info.get("adapter") else None,
        "scheme": scheme.to_dict(),
        "token_ids": token_ids,
        "policy": policy.to_dict(),
        "thresholds_from": how,
        "targets": targets or {},
        "calibration_notes": notes,
        "data": data,
        "splits": splits_manifest or {},
        "rate_definition": "share of a category's should-not-comply prompts for which the policy emits a "
        "refusal token; contrast = the same on its should-comply prompts",
    }
    prof["calibration"] = rates_by_category(policy.refuses(cal.q), cal.categories, cal.refuse)
    if test is not None:
        prof["test"] = rates_by_category(policy.refuses(test.q), test.categories, test.refuse)
        if gap_targets:
            prof["test_gap_table"] = gap_table(
                cal.q,
                cal.categories,
                cal.refuse,
                test.q,
                test.categories,
                test.refuse,
                scheme,
                targets=gap_targets,
                temperature=temperature,
                joint=joint,
            )
            prof["test_gap_floor"] = gap_floor(prof["calibration"], prof["test"], gap_targets)
    prof["curves_auc"] = {c: d["auc"] for c, d in curves(cal.q, cal.categories, cal.refuse, scheme).items()}
    return prof


def gap_floor(cal_rates: dict[str, Any], test_rates: dict[str, Any], targets: tuple[float, ...]) -> dict[str, Any]:
    """Return what sampling alone makes of a gap table with these split sizes (see
    :func:`refusalkit.tokens.gapfloor.sampling_floor`): the expected mean |gap| and share of cells outside
    the 95% interval with exact thresholds (``oracle``) and with thresholds from this calibration split."""
    from refusalkit.tokens.gapfloor import sampling_floor

    def sizes(rates: dict[str, Any]) -> dict[str, int]:
        return {c: int(v["harmful"]["n"]) for c, v in rates.get("per_category", {}).items() if v.get("harmful")}

    floor = sampling_floor(sizes(cal_rates), sizes(test_rates), targets)
    floor.pop("cells", None)
    return floor


__all__ = [
    "build_profile",
    "gap_floor",
    "calibration_splits",
    "score_items",
    "Scored",
    "parse_targets",
    "split_manifest",
]
