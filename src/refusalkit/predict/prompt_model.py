"""A prompt classifier: TF-IDF word n-grams (plus, optionally, sentence embeddings of the prompt: the bundled
MiniLM or a local encoder folder; and the hidden state of a small local language model at the end of the
chat-templated prompt) into a logistic regression that gives P(the target model refuses this prompt).
Saved as JSON + npz, with a model card."""

from __future__ import annotations

from importlib import resources
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
from refusalkit.detect.base import check_texts
from refusalkit.detect.encoders import check_encoder_dir, encoder_sha256, verify_encoder
from refusalkit.errors import InputError, RefusalkitError

KIND = "prompt_classifier"
FEATURE_SETS = ("tfidf", "tfidf+embedding", "tfidf+lm", "tfidf+embedding+lm")


def features_use_lm(features: str) -> bool:
    """Return whether a feature string (one of ``FEATURE_SETS``) includes a language model's hidden state."""
    return "lm" in features.split("+")


class PromptClassifier:
    """P(refusal) from the prompt alone. ``features``: one of :data:`FEATURE_SETS`; ``encoder``: the
    folder of a local sentence encoder for the embedding (default: the bundled MiniLM); ``lm`` and
    ``lm_layer``: the local model (a model spec: ``default`` is the bundled SmolLM2) and layer whose state
    at the last prompt token the ``lm`` features use. ``C`` defaults to 3, or 1 with ``lm`` features."""

    def __init__(
        self,
        features: str = "tfidf+embedding",
        C: float | None = None,
        embedding_weight: float = 2.0,
        target_model: str = "unknown",
        encoder: str | Path | None = None,
        lm: str = "default",
        lm_layer: int = 18,
        lm_weight: float = 2.0,
    ):
        if features not in FEATURE_SETS:
            raise RefusalkitError(f"unknown prompt features {features!r}; use one of {', '.join(FEATURE_SETS)}")
        if encoder is not None and "embedding" not in features:
            raise RefusalkitError("an encoder is only used with embedding features (tfidf+embedding[+lm])")
        self.features, self.embedding_weight, self.target_model = features, embedding_weight, target_model
        # The dense LM block needs stronger regularisation than n-grams alone (C=1 beat C=3 in the Quora CV).
        self.C = C if C is not None else (1.0 if self.uses_lm else 3.0)
        self.lm, self.lm_layer, self.lm_weight = lm, int(lm_layer), float(lm_weight)
        self.encoder = None if encoder is None else str(check_encoder_dir(encoder))
        self.encoder_sha256_: str | None = None
        self.card: dict[str, Any] | None = None

    def _X(self, prompts: list[str], states: np.ndarray | None = None):
        M = [self.vec_.transform(prompts)]
        if "embedding" in self.features:
            from refusalkit.detect.embedding import embed

            M.append(sparse.csr_matrix(embed(prompts, encoder=self.encoder) * self.embedding_weight))
        if self.uses_lm:
            S = self._states(prompts) if states is None else states
            # Standardised, then scaled so the whole block weighs lm_weight whatever the model's width.
            M.append(sparse.csr_matrix((S - self.lm_mean_) / self.lm_std_ * (self.lm_weight / np.sqrt(S.shape[1]))))
        return sparse.hstack(M, format="csr")

    @property
    def uses_lm(self) -> bool:
        """Return whether the features include a language model's hidden state."""
        return features_use_lm(self.features)

    def _states(self, prompts: list[str]) -> np.ndarray:
        from refusalkit.predict.lm_features import prompt_states

        return prompt_states(prompts, self.lm, self.lm_layer)

    def fit(self, prompts, y):
        """Return self after fitting on prompts and binary labels ``y`` (1 = the model refused)."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        P = check_texts(prompts, "prompt")
        y = np.asarray([int(v) for v in y])
        if len(y) != len(P):
            raise InputError(f"{len(y)} labels for {len(P)} prompts", field="label")
        if len(set(y.tolist())) < 2:
            raise RefusalkitError(
                f"all {len(y)} training prompts have the same label ({int(y[0]) if len(y) else '-'}); "
                "a prompt classifier needs both refused and answered prompts"
            )
        self.vec_ = TfidfVectorizer(
            ngram_range=(1, 2),
            sublinear_tf=True,
            token_pattern=r"(?u)\b\w[\w']*\b",
            max_features=50000,
            dtype=np.float32,
        ).fit(P)
        S = None
        if self.uses_lm:
            # Computed once here and passed on: past the state memo's bound a second call would recompute.
            S = self._states(P)
            self.lm_mean_, self.lm_std_ = S.mean(0), S.std(0) + 1e-6
        lr = LogisticRegression(C=self.C, max_iter=3000).fit(self._X(P, S), y)
        self.coef_, self.intercept_ = lr.coef_[0].astype(np.float32), float(lr.intercept_[0])
        if self.encoder is not None and self.encoder_sha256_ is None:
            self.encoder_sha256_ = encoder_sha256(self.encoder)
        return self

    def p_refusal(self, prompts) -> np.ndarray:
        """Return P(refusal) per prompt."""
        P = check_texts(prompts, "prompt")
        if not P:
            return np.zeros(0)
        z = np.asarray(self._X(P) @ self.coef_).ravel() + self.intercept_
        return 1 / (1 + np.exp(-z))

    def predict(self, prompts) -> np.ndarray:
        """Return 1 (refused) / 0 per prompt (``p_refusal >= 0.5``)."""
        return (self.p_refusal(prompts) >= 0.5).astype(int)

    def top_ngrams(self, k: int = 15) -> dict[str, list[tuple[str, float]]]:
        """Return the ``k`` n-grams with the largest coefficients towards refusal and towards compliance."""
        inv = sorted(self.vec_.vocabulary_, key=self.vec_.vocabulary_.get)
        w = self.coef_[: len(inv)]
        order = np.argsort(w)
        return {
            "refusal": [(inv[j], round(float(w[j]), 3)) for j in order[::-1][:k]],
            "compliance": [(inv[j], round(float(w[j]), 3)) for j in order[:k]],
        }

    def save(self, folder: str | Path, card: dict[str, Any] | None = None) -> Path:
        """Write the classifier (meta.json, weights.npz, card.json when given, manifest) into ``folder``;
        return it."""
        inv = sorted(self.vec_.vocabulary_, key=self.vec_.vocabulary_.get)
        meta = {
            "kind": KIND,
            "format_version": 1,
            "features": self.features,
            "C": self.C,
            "embedding_weight": self.embedding_weight,
            "target_model": self.target_model,
            "encoder": self.encoder,
            "encoder_sha256": self.encoder_sha256_,
            "lm": self.lm,
            "lm_layer": self.lm_layer,
            "lm_weight": self.lm_weight,
            "vocabulary": inv,
        }
        extra = {"lm_mean": self.lm_mean_, "lm_std": self.lm_std_} if self.uses_lm else {}
        arrays = {
            "coef": self.coef_,
            "intercept": np.array([self.intercept_]),
            "idf": self.vec_.idf_.astype(np.float32),
            **extra,
        }
        write_artifact(folder, {META: json_bytes(meta, indent=None), WEIGHTS: npz_bytes(arrays)}, card)
        if card is not None:
            self.card = card
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> PromptClassifier:
        """Return a classifier read from ``folder``; ArtifactError names a missing, changed or damaged file."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        folder = Path(folder)
        meta, arrays = read_meta(folder, KIND, what="prompt classifier")
        with malformed_as_error(folder / META, "prompt classifier metadata"):
            vocab = [str(t) for t in meta["vocabulary"]]
            features = str(meta["features"])
            if features not in FEATURE_SETS:
                raise ArtifactError(folder / META, f"damaged: unknown features {features!r}")
            enc = meta.get("encoder")
            if enc is not None:
                enc = verify_encoder(enc, meta.get("encoder_sha256"), owner=f"the prompt classifier in {folder}")
            m = cls(
                features=features,
                C=float(meta["C"]),
                embedding_weight=float(meta["embedding_weight"]),
                target_model=str(meta["target_model"]),
                encoder=enc,
                lm=str(meta.get("lm", "default")),
                lm_layer=int(meta.get("lm_layer", 18)),
                lm_weight=float(meta.get("lm_weight", 2.0)),
            )
        wp = folder / WEIGHTS
        idf = check_shape(arrays, "idf", (len(vocab),), wp)
        icpt = check_shape(arrays, "intercept", (1,), wp)
        n = len(vocab)
        if m.uses_lm:
            m.lm_mean_ = check_shape(arrays, "lm_mean", (None,), wp)
            m.lm_std_ = check_shape(arrays, "lm_std", m.lm_mean_.shape, wp)
            n += m.lm_mean_.shape[0]
        if "embedding" in features and enc is None:
            n += 384  # the bundled MiniLM; a user encoder's width is checked when it is loaded
        coef = check_shape(arrays, "coef", (None,), wp)
        if coef.shape[0] != n and not ("embedding" in features and enc is not None and coef.shape[0] > n):
            raise ArtifactError(
                wp,
                f"damaged weights: array 'coef' has {coef.shape[0]} weights, expected {n} for "
                f"{len(vocab)} n-grams and features {features}",
            )
        m.encoder_sha256_ = meta.get("encoder_sha256")
        m.vec_ = TfidfVectorizer(
            ngram_range=(1, 2),
            sublinear_tf=True,
            token_pattern=r"(?u)\b\w[\w']*\b",
            dtype=np.float32,
            vocabulary={t: i for i, t in enumerate(vocab)},
        )
        m.vec_.idf_ = idf.astype(np.float64)
        m.coef_, m.intercept_ = coef, float(icpt[0])
        m.card = read_card(folder)
        return m


_SHIPPED = {"chatgpt": "prompt_chatgpt", "default": "prompt_chatgpt", "chatgpt-lm": "prompt_chatgpt_lm"}


def shipped_predictor_dir(name: str = "chatgpt") -> Path:
    """Return the folder of a shipped prompt classifier (target: ChatGPT gpt-3.5-turbo, 2023): ``chatgpt``
    (TF-IDF + MiniLM) or ``chatgpt-lm`` (also the bundled SmolLM2's state at the end of the prompt)."""
    return Path(str(resources.files("refusalkit") / "resources" / "detect" / _SHIPPED[name]))


def get_predictor(name_or_dir: str = "chatgpt") -> PromptClassifier:
    """Return a ready prompt classifier: ``chatgpt`` or ``chatgpt-lm`` (shipped) or a folder written by
    ``refusalkit predict train``."""
    if name_or_dir in _SHIPPED:
        return PromptClassifier.load(shipped_predictor_dir(name_or_dir))
    return PromptClassifier.load(name_or_dir)
