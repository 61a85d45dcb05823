"""Latent Guard (Zhao et al. 2025): how harmful a prompt is, read from the model's own residual stream at the
last instruction token, with one forward pass and no generation.

Per layer ``l`` the score is, by default (``projection``), the prompt's projection on the harmfulness direction
``r_l = mu_harmful_l - mu_harmless_l`` measured from the midpoint of the two means, in units of ``|r_l|^2``: the
harmful mean scores +0.5 and the harmless mean -0.5 at every layer, so layers average on one scale. ``cosine`` is
Zhao et al.'s ``cos(h_l, mu_harmful_l) - cos(h_l, mu_harmless_l)``, which a large component shared by every
prompt's residual stream compresses (kept for cards written before the projection existed). The guard averages
the score over the layers whose validation AUROC is within ``tolerance`` of the best (several layers rather
than the single best: one validation-picked layer transferred poorly to XSTest in the feasibility run), then
maps it to ``p_harmful`` in 0..1 with a logistic fit on the validation prompts (balanced classes, so 0.5 is the
balanced threshold).

The position is chosen on validation too, among the artifact's positions (``inst``, the last instruction token
where Zhao et al. read harmfulness, and the post-instruction template tokens): on the subject model the harmful -
harmless difference at the last template token separated held-out prompts far better (JailbreakBench-style test
split AUROC 0.98 vs 0.92 at ``inst``; XSTest 0.88 vs 0.84) and validation picks it. ``fit_guard(...,
position="inst")`` keeps Zhao et al.'s position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from refusalkit.errors import RefusalkitError

GUARD_METHODS = ("projection", "cosine")


def layer_scores(
    acts: torch.Tensor, mu_harmful: torch.Tensor, mu_harmless: torch.Tensor, method: str = "projection"
) -> torch.Tensor:
    """Return the harmfulness score per prompt and layer, ``[n, layers]``, from ``acts`` ``[n, layers, d]`` and
    the per-layer class means ``[layers, d]`` (``method``: ``projection`` or ``cosine``, see the module doc)."""
    a, mh, ms = acts.float(), mu_harmful.float().unsqueeze(0), mu_harmless.float().unsqueeze(0)
    if method == "cosine":
        cos = torch.nn.functional.cosine_similarity
        return cos(a, mh, dim=-1) - cos(a, ms, dim=-1)
    if method != "projection":
        raise RefusalkitError(f"unknown guard method {method!r}; choose from {', '.join(GUARD_METHODS)}")
    r = mh - ms
    return ((a - (mh + ms) / 2) * r).sum(-1) / (r * r).sum(-1).clamp_min(1e-12)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Return the area under the ROC curve of ``scores`` for binary ``labels`` (1 = positive)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if labels.min() == labels.max():
        raise RefusalkitError("AUROC needs prompts of both classes")
    return float(roc_auc_score(labels, np.asarray(scores)))


Scores = dict[str, torch.Tensor]  # position name -> per-layer scores [n, layers]


def as_scores(scores: Scores | torch.Tensor) -> Scores:
    """Return ``scores`` as a position -> ``[n, layers]`` dict (a bare tensor is the ``inst`` position's)."""
    return {"inst": scores} if isinstance(scores, torch.Tensor) else scores


@dataclass
class LatentGuard:
    """A fitted Latent Guard: the (position, layer) scores it averages and the logistic map to ``p_harmful``.

    ``positions[i]`` goes with ``layers[i]``; cards written before positions were chosen used ``inst`` only."""

    layers: list[int]
    a: float
    b: float
    val_auroc: dict[str, dict[int, float]] = field(default_factory=dict)  # position -> layer -> AUROC
    val_auroc_combined: float | None = None
    method: str = "cosine"  # what ``layer_scores`` computes for this guard; fit_guard sets it
    positions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.positions:
            self.positions = ["inst"] * len(self.layers)
        if len(self.positions) != len(self.layers):
            raise RefusalkitError("a guard needs one position per layer")

    @property
    def position_names(self) -> list[str]:
        """Return the positions the guard reads, in first-use order."""
        return list(dict.fromkeys(self.positions))

    def score(self, scores: Scores | torch.Tensor) -> np.ndarray:
        """Return the combined score of each prompt: the mean of its scores at the guard's (position, layer)s."""
        sc = as_scores(scores)
        missing = [p for p in self.position_names if p not in sc]
        if missing:
            raise RefusalkitError(f"no scores at position(s) {', '.join(missing)} for this guard")
        cols = [sc[p][:, li] for p, li in zip(self.positions, self.layers)]
        return torch.stack(cols, 1).mean(1).numpy().astype(np.float64)

    def p_harmful(self, scores: Scores | torch.Tensor) -> np.ndarray:
        """Return ``p_harmful`` in 0..1 for each prompt from its per-layer scores."""
        z = self.a * self.score(scores) + self.b
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        """Return the guard's parameters as a JSON-ready dict."""
        return {
            "positions": self.positions,
            "layers": self.layers,
            "a": self.a,
            "b": self.b,
            "val_auroc_by_position": {p: {str(k): v for k, v in d.items()} for p, d in self.val_auroc.items()},
            "val_auroc_combined": self.val_auroc_combined,
            "method": self.method,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatentGuard:
        """Return a guard from ``to_dict``'s output (or an older card's, which read ``inst`` only)."""
        if "val_auroc_by_position" in d:
            val = {p: {int(k): float(v) for k, v in m.items()} for p, m in d["val_auroc_by_position"].items()}
        else:
            val = {"inst": {int(k): float(v) for k, v in (d.get("val_auroc") or {}).items()}}
        layers = [int(x) for x in d["layers"]]
        return cls(
            layers,
            float(d["a"]),
            float(d["b"]),
            val,
            d.get("val_auroc_combined"),
            str(d.get("method", "cosine")),  # cards from before the projection score used Zhao et al.'s cosine
            [str(p) for p in d.get("positions") or ["inst"] * len(layers)],
        )


def fit_guard(
    val_scores: Scores | torch.Tensor,
    val_labels: np.ndarray,
    *,
    layers: list[int] | None = None,
    position: str | None = None,
    tolerance: float = 0.01,
    min_layer: int = 1,
    top: int = 3,
    method: str = "projection",
) -> LatentGuard:
    """Return a LatentGuard fitted on validation prompts: per-position, per-layer scores (computed with
    ``method``) and labels (1 = harmful).

    The position is ``position`` if given, else the one whose ``top`` best layers (from ``min_layer`` on)
    separate the validation prompts best on average; then ``layers`` if given, else every layer of that position
    within ``tolerance`` of its best validation AUROC. One position rather than a mix: averaging layers of
    positions that separate unequally well was worse on held-out prompts than the better position alone.
    """
    from sklearn.linear_model import LogisticRegression

    sc = as_scores(val_scores)
    y = np.asarray(val_labels).astype(int)
    per = {p: {li: auroc(t[:, li].numpy(), y) for li in range(t.shape[1])} for p, t in sc.items()}
    pool = {p: {li: v for li, v in d.items() if li >= min_layer} or d for p, d in per.items()}
    if position is None:
        position = max(pool, key=lambda p: (float(np.mean(sorted(pool[p].values())[-top:])), -list(sc).index(p)))
    elif position not in sc:
        raise RefusalkitError(f"no validation scores at position {position!r}; have {', '.join(sc)}")
    if layers is None:
        best = max(pool[position].values())
        layers = sorted(li for li, v in pool[position].items() if v >= best - tolerance)
    g = LatentGuard(list(layers), 1.0, 0.0, per, method=method, positions=[position] * len(layers))
    s = g.score(sc).reshape(-1, 1)
    lr = LogisticRegression(class_weight="balanced", C=1e4).fit(s, y)
    g.a, g.b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    g.val_auroc_combined = auroc(s[:, 0], y)
    return g


def keyword_score(prompts: list[str]) -> np.ndarray:
    """Return a keyword baseline's harmfulness score: the count of harm words in each prompt (a floor to compare
    the guard with; the word list is fixed here, not tuned on any evaluation set)."""
    import re

    words = (
        "kill",
        "bomb",
        "weapon",
        "drug",
        "hack",
        "steal",
        "poison",
        "murder",
        "explosive",
        "attack",
        "illegal",
        "gun",
        "shoot",
        "terror",
        "suicide",
        "abuse",
        "fraud",
        "scam",
        "malware",
        "virus",
        "racist",
        "hate",
        "violence",
        "violent",
        "harm",
        "cocaine",
        "meth",
        "launder",
        "counterfeit",
        "blackmail",
        "kidnap",
        "torture",
        "rape",
        "exploit",
        "smuggle",
        "assassinate",
        "destroy",
    )
    pat = re.compile(r"\b(" + "|".join(words) + r")\w*", re.I)
    return np.array([len(pat.findall(p)) for p in prompts], dtype=np.float64)
