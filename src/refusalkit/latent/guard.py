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


@dataclass
class LatentGuard:
    """A fitted Latent Guard: the layers it averages and the logistic map from the score to ``p_harmful``."""

    layers: list[int]
    a: float
    b: float
    val_auroc: dict[int, float] = field(default_factory=dict)
    val_auroc_combined: float | None = None
    method: str = "cosine"  # what ``layer_scores`` computes for this guard; fit_guard sets it

    def score(self, layer_score: torch.Tensor) -> np.ndarray:
        """Return the combined score of each prompt from its per-layer scores ``[n, all_layers]``."""
        return layer_score[:, self.layers].mean(1).numpy().astype(np.float64)

    def p_harmful(self, layer_score: torch.Tensor) -> np.ndarray:
        """Return ``p_harmful`` in 0..1 for each prompt from its per-layer scores."""
        z = self.a * self.score(layer_score) + self.b
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        """Return the guard's parameters as a JSON-ready dict."""
        return {
            "layers": self.layers,
            "a": self.a,
            "b": self.b,
            "val_auroc": {str(k): v for k, v in self.val_auroc.items()},
            "val_auroc_combined": self.val_auroc_combined,
            "method": self.method,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatentGuard:
        """Return a guard from ``to_dict``'s output."""
        return cls(
            [int(x) for x in d["layers"]],
            float(d["a"]),
            float(d["b"]),
            {int(k): float(v) for k, v in (d.get("val_auroc") or {}).items()},
            d.get("val_auroc_combined"),
            str(d.get("method", "cosine")),  # cards from before the projection score used Zhao et al.'s cosine
        )


def fit_guard(
    val_scores: torch.Tensor,
    val_labels: np.ndarray,
    *,
    layers: list[int] | None = None,
    tolerance: float = 0.01,
    min_layer: int = 1,
    method: str = "projection",
) -> LatentGuard:
    """Return a LatentGuard fitted on validation prompts: per-layer scores ``[n, layers]`` (computed with
    ``method``) and labels (1 = harmful).

    Without ``layers``, it averages every layer from ``min_layer`` on whose validation AUROC is within
    ``tolerance`` of the best layer's.
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(val_labels).astype(int)
    per = {li: auroc(val_scores[:, li].numpy(), y) for li in range(val_scores.shape[1])}
    if layers is None:
        pool = {li: v for li, v in per.items() if li >= min_layer} or per
        top = max(pool.values())
        layers = sorted(li for li, v in pool.items() if v >= top - tolerance)
    g = LatentGuard(list(layers), 1.0, 0.0, per, method=method)
    s = g.score(val_scores).reshape(-1, 1)
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
