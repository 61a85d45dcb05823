"""One extraction run: read the harmful/harmless splits, capture mean activations, score and select the
refusal direction, take the harmfulness direction, fit the Latent Guard, run Zhao et al.'s separation check,
and return the artifact's tensors, card and report files."""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from refusalkit.data.io import read_records, rows_to_examples
from refusalkit.data.records import Example
from refusalkit.errors import InputError, RefusalkitError
from refusalkit.latent import capture as cap
from refusalkit.latent import directions as dirs
from refusalkit.latent.artifact import weights_fingerprint
from refusalkit.latent.guard import fit_guard, layer_scores
from refusalkit.latent.layers import hidden_size, layer_stack

log = logging.getLogger(__name__)


@dataclass
class ExtractConfig:
    """Settings of one extraction (every field lands in the card)."""

    harmful: str
    harmless: str
    harmful_val: str | None = None  # a separate file; else rows of ``harmful`` with split == "val"
    harmless_val: str | None = None
    n_train: int = 260  # per class
    n_val_harmful: int = 39
    n_val_harmless: int = 64
    positions: str = "inst,post"
    layers: list[int] | None = None  # candidate layers (default: all below max_layer_frac)
    candidate_positions: list[str] | None = None
    max_candidates: int | None = 16
    max_layer_frac: float = 0.8
    kl_max: float = 0.1
    coefs: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
    batch_size: int = 8
    seed: int = 0
    judge_n: int = 32
    guard_method: str = "projection"  # or "cosine" (Zhao et al.'s score); see latent/guard.py
    guard_positions: list[str] | None = None  # positions the guard may read (default: all captured; ["inst"]: Zhao's)


def _file_sha(path: str) -> str:
    h = hashlib.sha256()
    h.update(Path(path).read_bytes())
    return h.hexdigest()


def load_split(path: str, split: str | None, n: int | None, seed: int) -> list[Example]:
    """Return prompts of ``path`` (rows whose ``split`` field equals ``split`` when given), a seeded sample of
    at most ``n``. Raises InputError when the file has no such rows."""
    if not Path(path).is_file():
        raise InputError("no such file", file=path)
    rows = read_records(path)
    if split is not None:
        if rows and not any("split" in r for r in rows):
            raise InputError(f"no 'split' field: give the {split} prompts as a separate file", file=path, field="split")
        rows = [r for r in rows if r.get("split") == split]
        if not rows:
            raise InputError(f"no rows with split {split!r}", file=path, field="split")
    ex = rows_to_examples(rows, file=path, source=Path(path).stem)
    if n is not None and len(ex) > n:
        ex = random.Random(seed).sample(ex, n)
    return ex


def extract(
    hf: Any, model_id: str, cfg: ExtractConfig, *, status: Callable[[str], None] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Run an extraction on ``hf`` (an HFModel) and return ``(tensors, card)`` for ``save_artifact``."""
    say = status or (lambda m: log.info(m))
    tr_h = load_split(cfg.harmful, "train", cfg.n_train, cfg.seed)
    tr_s = load_split(cfg.harmless, "train", cfg.n_train, cfg.seed)
    va_h = load_split(cfg.harmful_val or cfg.harmful, None if cfg.harmful_val else "val", cfg.n_val_harmful, cfg.seed)
    va_s = load_split(
        cfg.harmless_val or cfg.harmless, None if cfg.harmless_val else "val", cfg.n_val_harmless, cfg.seed
    )
    overlap = {e.prompt for e in tr_h + tr_s} & {e.prompt for e in va_h + va_s}
    if overlap:
        raise RefusalkitError(f"{len(overlap)} validation prompt(s) also appear in the training prompts")
    stack = layer_stack(hf.model)
    n_layers, d = len(stack), hidden_size(hf.model)
    suffix = cap.template_suffix_ids(hf)
    pos = cap.parse_positions(cfg.positions, len(suffix))
    if pos.all:
        raise RefusalkitError("extraction needs fixed positions (inst, post, last or offsets), not 'all'")
    if "inst" not in pos.names:
        raise RefusalkitError("--positions must include 'inst' (the harmfulness direction and the guard use it)")
    bs = cfg.batch_size
    say(
        f"capturing {len(tr_h)} harmful + {len(tr_s)} harmless training prompts at {len(pos.offsets)} positions, "
        f"{n_layers} layers"
    )
    mu_h, _ = cap.capture_mean(hf, [e.prompt for e in tr_h], pos, batch_size=bs)
    mu_s, _ = cap.capture_mean(hf, [e.prompt for e in tr_s], pos, batch_size=bs)
    diffs = dirs.diff_in_means(mu_h, mu_s)  # [L, P, d]
    inst = list(pos.names).index("inst")
    refusal_ids = dirs.first_token_ids(hf.tokenizer, dirs.REFUSAL_OPENERS)

    grid = dirs.candidate_grid(
        n_layers,
        pos.names,
        layers=cfg.layers,
        positions=cfg.candidate_positions,
        max_layer_frac=cfg.max_layer_frac,
        max_candidates=cfg.max_candidates,
    )
    if not grid:
        raise RefusalkitError("no candidate (layer, position) to score: check --layers and --candidate-positions")
    say(f"scoring {len(grid)} candidate directions on {len(va_h)} harmful + {len(va_s)} harmless validation prompts")
    best, cands, baseline = dirs.select_direction(
        hf,
        diffs,
        pos.names,
        grid,
        [e.prompt for e in va_h],
        [e.prompt for e in va_s],
        refusal_ids,
        kl_max=cfg.kl_max,
        batch_size=bs,
        on_candidate=lambda c: say(
            f"  layer {c.layer:>2} {c.position:<7} ablated harmful p={c.bypass_p:.3f} "
            f"added harmless p={c.induce_p:.3f} KL={c.kl:.4f}"
            f"{'' if c.eligible else '  (' + c.reason + ')'}"
        ),
    )
    if best is None:
        raise RefusalkitError("no candidate direction could be scored: check --layers and --candidate-positions")
    if not baseline["criteria_met"]:
        say(
            f"warning: no candidate met the selection criteria (KL <= {cfg.kl_max} and induced refusal); kept the "
            "least disruptive one. Does this model refuse the harmful prompts at all?"
        )
    p_idx = list(pos.names).index(best.position)
    r_vec = diffs[best.layer, p_idx]
    say(
        f"selected layer {best.layer} {best.position}: harmful p {baseline['harmful_p']:.3f} -> {best.bypass_p:.3f} "
        f"under ablation, KL {best.kl:.4f}"
    )

    harm = diffs[:, inst]  # [L, d] Zhao et al.'s harmfulness direction at t_inst
    cosine = dirs.cosine_per_layer(harm, diffs[:, p_idx])
    say("refusal vs coefficient sweep and the separation check")
    sweep = dirs.coefficient_sweep(
        hf, r_vec, best.layer, [e.prompt for e in va_s], refusal_ids, cfg.coefs, batch_size=bs
    )
    jn = cfg.judge_n
    sep = dirs.separation_check(
        hf,
        [e.prompt for e in va_s[:jn]],
        [e.prompt for e in va_h[:jn]],
        harm[best.layer],
        r_vec,
        best.layer,
        refusal_ids,
        batch_size=bs,
    )

    say("fitting the Latent Guard on the validation prompts")
    va_prompts = [e.prompt for e in va_h] + [e.prompt for e in va_s]
    acts = cap.capture(hf, va_prompts, pos, batch_size=bs)  # [n, L, P, d]
    scores = {
        name: layer_scores(acts[:, :, i], mu_h[:, i], mu_s[:, i], cfg.guard_method)
        for i, name in enumerate(pos.names)
        if cfg.guard_positions is None or name in cfg.guard_positions
    }
    if not scores:
        raise RefusalkitError(f"--guard-positions {cfg.guard_positions} names none of the positions {pos.names}")
    labels = np.array([1] * len(va_h) + [0] * len(va_s))
    guard = fit_guard(scores, labels, method=cfg.guard_method)

    tensors = {
        "mean_diff": diffs,
        "mu_harmful": mu_h,
        "mu_harmless": mu_s,
        "refusal_direction": r_vec,
        "harmfulness": harm,
    }
    card: dict[str, Any] = {
        "model": {
            "id": model_id,
            "name": getattr(hf, "name", model_id),
            "fingerprint": weights_fingerprint(hf.model),
            "architecture": type(hf.model).__name__,
            "n_layers": n_layers,
            "d_model": d,
            "layer_stack": stack.path,
        },
        "positions": list(pos.names),
        "position_offsets": list(pos.offsets),
        "template_suffix_ids": suffix,
        "refusal": {
            "layer": best.layer,
            "position": best.position,
            "norm": float(r_vec.norm()),
            "refusal_token_ids": refusal_ids,
            "baseline": baseline,
            "selected": best.to_dict(),
            "candidates": [c.to_dict() for c in cands],
        },
        "harmfulness": {"position": "inst"},
        "cosine_per_layer": cosine,
        "coefficient_sweep": sweep,
        "separation_check": sep,
        "guard": guard.to_dict(),
        "data": {
            "harmful": cfg.harmful,
            "harmless": cfg.harmless,
            "harmful_val": cfg.harmful_val,
            "harmless_val": cfg.harmless_val,
            "sha256": {p: _file_sha(p) for p in {cfg.harmful, cfg.harmless, cfg.harmful_val, cfg.harmless_val} if p},
            "ids": {
                "train_harmful": [e.id for e in tr_h],
                "train_harmless": [e.id for e in tr_s],
                "val_harmful": [e.id for e in va_h],
                "val_harmless": [e.id for e in va_s],
            },
        },
        "config": asdict(cfg),
    }
    return tensors, card
