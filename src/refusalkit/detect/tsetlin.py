"""A Tsetlin-machine detector (green-tsetlin): Boolean word and cue features, learned conjunctive clauses
that print as readable rules ("IF opening has 'sorry' AND NOT 'here' THEN full_refusal").

Training uses green-tsetlin; the learned rule set is saved as JSON (literals + per-class votes) and
evaluated with numpy, so loading needs no pickle and no native state.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from refusalkit.artifacts import (
    META,
    ArtifactError,
    json_bytes,
    malformed_as_error,
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
from refusalkit.detect.patterns import CUES, _fires
from refusalkit.detect.text import clip, opening

_TOK = re.compile(r"\w[\w']*", re.U)


def _words(text: str) -> set[str]:
    return set(_TOK.findall(text.lower()))


class TsetlinDetector(LearnedDetector):
    """Tsetlin machine over Boolean features: ``open:WORD`` (word in the opening two sentences),
    ``any:WORD`` (anywhere) and ``cue:GROUP@open|any`` (multilingual cue groups)."""

    kind = "tsetlin"

    def __init__(
        self,
        n_words: int = 300,
        n_clauses: int = 600,
        threshold: int = 100,
        s: float = 4.0,
        epochs: int = 15,
        seed: int = 0,
        name: str = "tsetlin",
    ):
        self.n_words, self.n_clauses, self.threshold, self.s = n_words, n_clauses, threshold, s
        self.epochs, self.seed, self.name = epochs, seed, name
        self.classes_ = LABELS
        self.card = None

    def _binarise(self, X: list[str]) -> np.ndarray:
        idx = {f: i for i, f in enumerate(self.features_)}
        B = np.zeros((len(X), len(self.features_)), dtype=np.uint8)
        for r, x in enumerate(X):
            t = clip(x)
            head = opening(t)
            for w in _words(head):
                j = idx.get(f"open:{w}")
                if j is not None:
                    B[r, j] = 1
            for w in _words(t):
                j = idx.get(f"any:{w}")
                if j is not None:
                    B[r, j] = 1
            for g in CUES:
                if _fires(g, head):
                    B[r, idx[f"cue:{g}@open"]] = 1
                if _fires(g, t):
                    B[r, idx[f"cue:{g}@any"]] = 1
        return B

    def fit(self, X, y, prompts=None):
        """Return self after training the Tsetlin machine on responses ``X`` and labels ``y``."""
        import green_tsetlin as gt

        X = check_texts(X)
        check_prompts(prompts, len(X))
        y = check_labels(y, len(X))
        # Vocabulary: the words whose document frequency differs most between refusals and compliance.
        pos, neg = Counter(), Counter()
        for x, lab in zip(X, y):
            t = clip(x)
            ws = {f"open:{w}" for w in _words(opening(t))} | {f"any:{w}" for w in _words(t)}
            (neg if lab == LABELS[0] else pos).update(ws)
        npos, nneg = max(1, sum(lab != LABELS[0] for lab in y)), max(1, sum(lab == LABELS[0] for lab in y))
        cand = set(pos) | set(neg)
        score = {w: abs(pos[w] / npos - neg[w] / nneg) for w in cand if pos[w] + neg[w] >= 3}
        vocab = sorted(score, key=lambda w: (-score[w], w))[: self.n_words]
        self.features_ = sorted(vocab) + [f"cue:{g}@{p}" for g in CUES for p in ("open", "any")]
        B = self._binarise(X)
        yi = np.array([LABELS.index(v) for v in y], dtype=np.uint32)
        tm = gt.TsetlinMachine(
            n_literals=B.shape[1],
            n_clauses=self.n_clauses,
            n_classes=len(LABELS),
            s=self.s,
            threshold=self.threshold,
            literal_budget=6,
        )
        # green-tsetlin 1.1 fails to initialise clause blocks with seed 0, hence the offset.
        tr = gt.Trainer(tm, n_epochs=self.epochs, seed=self.seed + 1, n_jobs=1, progress_bar=False)
        tr.set_train_data(B, yi)
        tr.set_eval_data(B, yi)
        tr.train()
        rs = tm.get_ruleset()
        self.rules_ = [list(map(int, r)) for r in rs.rules]
        self.weights_ = np.array(rs.weights, dtype=np.float32).reshape(len(self.rules_), len(LABELS))
        return self

    def votes(self, X) -> np.ndarray:
        """Return per-class clause votes ``[n, 4]`` (sum of the weights of the rules that fire)."""
        X = check_texts(X)
        B = self._binarise(X).astype(bool)
        n = B.shape[1]
        V = np.zeros((len(X), len(LABELS)), dtype=np.float32)
        for lits, w in zip(self.rules_, self.weights_):
            fire = np.ones(len(X), dtype=bool)
            for k in lits:
                fire &= B[:, k] if k < n else ~B[:, k - n]
            V[fire] += w
        return V

    def predict_proba(self, X, prompts=None) -> np.ndarray:
        """Return class probabilities ``[n, 4]``: a softmax of clause votes scaled by the threshold."""
        X = check_texts(X)
        check_prompts(prompts, len(X))
        if not X:
            return np.zeros((0, len(LABELS)))
        S = self.votes(X) / (self.threshold / 4.0)
        S = S - S.max(axis=1, keepdims=True)
        E = np.exp(S)
        return blank_as_refusal(X, E / E.sum(axis=1, keepdims=True))

    def rule_text(self, lits: list[int]) -> str:
        """Return one clause as text, e.g. ``open:sorry AND NOT any:here``."""
        n = len(self.features_)
        return " AND ".join(self.features_[k] if k < n else f"NOT {self.features_[k - n]}" for k in lits)

    def rules(self, top: int = 20) -> list[dict[str, Any]]:
        """Return the ``top`` learned rules by vote strength: text, class it votes for, and its votes."""
        order = np.argsort(-np.abs(self.weights_).max(axis=1))[:top]
        return [
            {
                "rule": self.rule_text(self.rules_[i]),
                "votes_for": LABELS[int(np.argmax(self.weights_[i]))],
                "votes": dict(zip(LABELS, self.weights_[i].astype(int).tolist())),
            }
            for i in order
        ]

    def explain(self, response: str, prompt: str | None = None, top: int = 8) -> list[dict[str, Any]]:
        """Return the rules that fire on this response, strongest first."""
        B = self._binarise([response]).astype(bool)[0]
        n = B.shape[0]
        fired = [i for i, lits in enumerate(self.rules_) if all(B[k] if k < n else not B[k - n] for k in lits)]
        fired.sort(key=lambda i: -np.abs(self.weights_[i]).max())
        return [
            {
                "feature": self.rule_text(self.rules_[i]),
                "votes_for": LABELS[int(np.argmax(self.weights_[i]))],
                "weight": float(self.weights_[i].max()),
            }
            for i in fired[:top]
        ]

    def save(self, folder: str | Path, card: dict[str, Any] | None = None) -> Path:
        """Write the rules and features to ``folder`` as JSON (``card.json`` when given, manifest) and return
        the folder."""
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "name": self.name,
            "threshold": self.threshold,
            "n_clauses": self.n_clauses,
            "s": self.s,
            "epochs": self.epochs,
            "classes": list(LABELS),
            "features": self.features_,
            "rules": self.rules_,
            "weights": self.weights_.astype(int).tolist(),
        }
        write_artifact(folder, {META: json_bytes(meta)}, card)
        self.card = card if card is not None else self.card
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> TsetlinDetector:
        """Return a detector read from ``folder``; ArtifactError names a missing, changed or damaged file."""
        folder = Path(folder)
        meta, _ = read_meta(folder, cls.kind, "detector")
        with malformed_as_error(folder / META, "detector metadata"):
            d = cls(
                n_clauses=int(meta["n_clauses"]),
                threshold=int(meta["threshold"]),
                s=float(meta["s"]),
                epochs=int(meta["epochs"]),
                name=str(meta["name"]),
            )
            d.features_, d.rules_ = [str(f) for f in meta["features"]], [[int(k) for k in r] for r in meta["rules"]]
            d.weights_ = np.array(meta["weights"], dtype=np.float32).reshape(len(d.rules_), len(LABELS))
        n_lit = 2 * len(d.features_)
        if any(not 0 <= k < n_lit for r in d.rules_ for k in r):
            raise ArtifactError(
                folder / META, f"damaged detector metadata: a rule names a literal outside 0..{n_lit - 1}"
            )
        d.card = read_card(folder)
        return d
