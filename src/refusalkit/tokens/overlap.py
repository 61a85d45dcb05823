"""Near-duplicate checks between prompt sets: keeps evaluation-only prompts (XSTest, JailbreakBench) and
held-out splits out of training data.

A prompt is a near-duplicate of a reference prompt when their normalised texts are equal, or when the
cosine similarity of their TF-IDF vectors (character 3-5-grams within words, fitted on both sets) or of
their all-MiniLM-L6-v2 sentence embeddings exceeds a threshold (0.9 by default). Character n-grams catch
light rewordings (a changed word, punctuation, case); the embedding catches rewordings that share
meaning but few characters.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Embed = Callable[[list[str]], np.ndarray]


def normalise(text: str) -> str:
    """Return ``text`` folded for exact comparison: NFKC, lower case, punctuation dropped, spaces collapsed."""
    t = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    t = re.sub(r"[^\w\s]", " ", t)
    return " ".join(t.split())


@dataclass(frozen=True)
class Match:
    """A candidate's nearest reference prompt: ``method`` is ``exact``, ``tfidf`` or ``minilm``."""

    index: int
    ref_index: int
    method: str
    score: float


def minilm_embedder() -> Embed:
    """Return a function that embeds texts with the bundled all-MiniLM-L6-v2 (L2-normalised rows)."""
    from refusalkit.detect.embedding import embed

    return lambda texts: embed(list(texts))


def _tfidf_max(candidates: Sequence[str], reference: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return, per candidate, the highest TF-IDF cosine to any reference prompt and that prompt's index."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    # Fitted on both sets: a vocabulary from the reference alone would drop the candidate's own n-grams
    # and overstate the similarity.
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, lowercase=True)
    m = vec.fit_transform([normalise(t) for t in list(reference) + list(candidates)])
    ref, cand = m[: len(reference)], m[len(reference) :]
    sim = (cand @ ref.T).toarray()
    return sim.max(axis=1), sim.argmax(axis=1)


def near_duplicates(
    candidates: Sequence[str],
    reference: Sequence[str],
    *,
    threshold: float = 0.9,
    embed: Embed | None = None,
) -> list[Match | None]:
    """Return, for each candidate, the :class:`Match` that makes it a near-duplicate of ``reference``
    (exact normalised text, then TF-IDF, then MiniLM cosine ``> threshold``), or None.

    ``embed`` is the sentence embedder (e.g. :func:`minilm_embedder`); None checks text and TF-IDF only.
    """
    out: list[Match | None] = [None] * len(candidates)
    if not candidates or not reference:
        return out
    exact = {normalise(t): j for j, t in enumerate(reference)}
    for i, t in enumerate(candidates):
        j = exact.get(normalise(t))
        if j is not None:
            out[i] = Match(i, j, "exact", 1.0)
    best, arg = _tfidf_max(candidates, reference)
    for i in range(len(candidates)):
        if out[i] is None and best[i] > threshold:
            out[i] = Match(i, int(arg[i]), "tfidf", float(best[i]))
    if embed is not None:
        sim = embed(list(candidates)) @ embed(list(reference)).T
        for i in range(len(candidates)):
            j = int(sim[i].argmax())
            if out[i] is None and sim[i, j] > threshold:
                out[i] = Match(i, j, "minilm", float(sim[i, j]))
    return out
