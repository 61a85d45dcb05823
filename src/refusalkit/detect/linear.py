"""A linear detector: TF-IDF n-grams of the whole response and of its opening, plus position-aware
multilingual cue features, into a multinomial logistic regression over the four taxonomy classes.

Saved as JSON (vocabularies, settings) + npz (idf, weights), never pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from refusalkit.artifacts import (
    META,
    WEIGHTS,
    ArtifactError,
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
from refusalkit.detect.patterns import FEATURE_NAMES, cue_matrix
from refusalkit.detect.text import clip, opening

_VIEWS: dict[str, dict[str, Any]] = {
    "full": dict(ngram_range=(1, 2), max_features=30000),
    "open": dict(ngram_range=(1, 3), max_features=20000),
}


def _view(name: str, texts: list[str]) -> list[str]:
    return texts if name == "full" else [opening(t, 2, 300) for t in texts]


def _vectorizer(**kw):
    from sklearn.feature_extraction.text import TfidfVectorizer

    # Keep apostrophes inside tokens so "can't" and "I'm" survive as words.
    return TfidfVectorizer(lowercase=True, sublinear_tf=True, token_pattern=r"(?u)\b\w[\w']*\b", dtype=np.float32, **kw)


class LinearDetector(LearnedDetector):
    """TF-IDF n-grams (whole response + opening sentences) and cue features -> logistic regression."""

    kind = "linear"

    def __init__(self, C: float = 4.0, cue_weight: float = 1.0, min_df: int = 2, name: str = "linear"):
        self.C, self.cue_weight, self.min_df, self.name = C, cue_weight, min_df, name
        self.classes_ = LABELS
        self.card = None

    # -- features -------------------------------------------------------------------------------------
    def _features(self, X: list[str], prompts: list[str] | None):
        clipped = [clip(x) for x in X]
        mats = [self.vecs_[v].transform(_view(v, clipped)) for v in _VIEWS]
        mats.append(sparse.csr_matrix(cue_matrix(X, prompts) * self.cue_weight))
        return sparse.hstack(mats, format="csr")

    def feature_names(self) -> list[str]:
        """Return the names of all input features (``full:``/``open:`` n-grams, then ``cue:`` features)."""
        names = []
        for v in _VIEWS:
            voc = self.vecs_[v].vocabulary_
            inv = [""] * len(voc)
            for term, i in voc.items():
                inv[i] = term
            names += [f"{v}:{t}" for t in inv]
        return names + [f"cue:{n}" for n in FEATURE_NAMES]

    # -- estimator API --------------------------------------------------------------------------------
    def fit(
        self,
        X: Sequence[str],
        y: Sequence[str],
        prompts: Sequence[str] | None = None,
        sample_weight: Sequence[float] | None = None,
    ):
        """Return self after fitting the vectorisers and the logistic regression on ``X`` and labels ``y``."""
        from sklearn.linear_model import LogisticRegression

        X = check_texts(X)
        ps = check_prompts(prompts, len(X))
        y = check_labels(y, len(X))
        clipped = [clip(x) for x in X]
        self.vecs_ = {}
        for v, kw in _VIEWS.items():
            self.vecs_[v] = _vectorizer(min_df=self.min_df, **kw).fit(_view(v, clipped))
        F = self._features(X, ps)
        present = [c for c in LABELS if c in set(y)]
        lr = LogisticRegression(C=self.C, max_iter=3000)
        lr.fit(F, y, sample_weight=None if sample_weight is None else np.asarray(sample_weight))
        # Keep every taxonomy class in the output; classes absent from training get no probability.
        coef = np.full((len(LABELS), F.shape[1]), 0.0, dtype=np.float32)
        icpt = np.full(len(LABELS), -30.0, dtype=np.float32)
        lr_classes = list(lr.classes_)
        if len(lr_classes) == 2:
            # binary LR has one row; expand to two so softmax gives the same probabilities
            i0, i1 = LABELS.index(lr_classes[0]), LABELS.index(lr_classes[1])
            coef[i1], icpt[i1] = lr.coef_[0] / 2, lr.intercept_[0] / 2
            coef[i0], icpt[i0] = -lr.coef_[0] / 2, -lr.intercept_[0] / 2
        else:
            for k, c in enumerate(lr_classes):
                coef[LABELS.index(c)], icpt[LABELS.index(c)] = lr.coef_[k], lr.intercept_[k]
        self.coef_, self.intercept_ = coef, icpt
        self.trained_classes_ = present
        return self

    def decision_function(self, X, prompts=None) -> np.ndarray:
        """Return the raw class scores ``[n, 4]``."""
        X = check_texts(X)
        ps = check_prompts(prompts, len(X))
        if not X:
            return np.zeros((0, len(self.classes_)))
        F = self._features(X, ps)
        return np.asarray(F @ self.coef_.T) + self.intercept_

    def predict_proba(self, X, prompts=None) -> np.ndarray:
        """Return class probabilities ``[n, 4]`` in the order of ``classes_``."""
        S = self.decision_function(X, prompts)
        S = S - S.max(axis=1, keepdims=True)
        E = np.exp(S)
        return blank_as_refusal(X, E / E.sum(axis=1, keepdims=True))

    # -- explanation ----------------------------------------------------------------------------------
    def explain(self, response: str, prompt: str | None = None, top: int = 8) -> list[dict[str, Any]]:
        """Return the features that push this response towards refusal (positive) or compliance (negative).

        A feature's weight is its value times (mean refusal-class coefficient - compliance coefficient).
        """
        F = self._features([check_texts([response])[0]], None if prompt is None else [prompt]).tocoo()
        w = self.coef_[1:].mean(axis=0) - self.coef_[0]
        names = self.feature_names()
        contrib = [(names[j], float(v * w[j])) for j, v in zip(F.col, F.data) if v * w[j] != 0]
        contrib.sort(key=lambda x: -abs(x[1]))
        # Show n-grams and cues side by side: dense cue weights would otherwise crowd out the n-grams.
        grams = [c for c in contrib if not c[0].startswith("cue:")][: max(1, top - top // 3)]
        cues = [c for c in contrib if c[0].startswith("cue:")][: top // 3 or 1]
        both = sorted(grams + cues, key=lambda x: -abs(x[1]))
        return [{"feature": n, "weight": round(c, 4)} for n, c in both]

    def top_features(self, k: int = 20) -> dict[str, list[tuple[str, float]]]:
        """Return the ``k`` features that most favour refusal and compliance overall."""
        w = self.coef_[1:].mean(axis=0) - self.coef_[0]
        names = self.feature_names()
        order = np.argsort(w)
        return {
            "refusal": [(names[j], float(w[j])) for j in order[::-1][:k]],
            "compliance": [(names[j], float(w[j])) for j in order[:k]],
        }

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, folder: str | Path, card: dict[str, Any] | None = None) -> Path:
        """Write the detector to ``folder`` (meta.json + weights.npz, ``card.json`` when given, manifest)
        and return the folder."""
        vocabs = {}
        arrays = {"coef": self.coef_.astype(np.float32), "intercept": self.intercept_.astype(np.float32)}
        for v in _VIEWS:
            voc = self.vecs_[v].vocabulary_
            inv = [""] * len(voc)
            for term, i in voc.items():
                inv[i] = term
            vocabs[v] = inv
            arrays[f"idf_{v}"] = self.vecs_[v].idf_.astype(np.float32)
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "name": self.name,
            "classes": list(self.classes_),
            "C": self.C,
            "cue_weight": self.cue_weight,
            "min_df": self.min_df,
            "views": {k: {"ngram_range": list(v["ngram_range"])} for k, v in _VIEWS.items()},
            "cue_features": FEATURE_NAMES,
            "vocabularies": vocabs,
        }
        write_artifact(folder, {META: json_bytes(meta), WEIGHTS: npz_bytes(arrays)}, card)
        self.card = card if card is not None else self.card
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> LinearDetector:
        """Return a detector read from ``folder`` (written by :meth:`save`); ArtifactError names a missing,
        changed or damaged file."""
        folder = Path(folder)
        meta, arrays = read_meta(folder, cls.kind, "detector")
        if meta.get("cue_features") != FEATURE_NAMES:
            raise ArtifactError(folder, "saved with different cue features; retrain it")
        with malformed_as_error(folder / META, "detector metadata"):
            d = cls(
                C=float(meta["C"]),
                cue_weight=float(meta["cue_weight"]),
                min_df=int(meta["min_df"]),
                name=str(meta["name"]),
            )
            d.vecs_ = {}
            n_feat = len(FEATURE_NAMES)
            for v in _VIEWS:
                vocab = meta["vocabularies"][v]
                idf = check_shape(arrays, f"idf_{v}", (len(vocab),), folder / WEIGHTS)
                vec = _vectorizer(
                    vocabulary={t: i for i, t in enumerate(vocab)}, ngram_range=tuple(meta["views"][v]["ngram_range"])
                )
                vec.idf_ = idf.astype(np.float64)
                d.vecs_[v] = vec
                n_feat += len(vocab)
        d.coef_ = check_shape(arrays, "coef", (len(LABELS), n_feat), folder / WEIGHTS)
        d.intercept_ = check_shape(arrays, "intercept", (len(LABELS),), folder / WEIGHTS)
        d.card = read_card(folder)
        return d
