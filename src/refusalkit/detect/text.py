"""Text preparation shared by detectors: bounded length, normalised quotes, the opening of a response."""

from __future__ import annotations

import re

# Detectors look at the opening and the end of a response; refusals live there. Bounding the text keeps
# a 1 MB response as cheap as a normal one.
HEAD_CHARS = 4000
TAIL_CHARS = 1000
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u00b4": "'", "\u02bc": "'"})
_SENT = re.compile(r"(?<=[.!?。])\s+|\n+")


def clip(text: str) -> str:
    """Return ``text`` with typographic quotes normalised and the middle of very long texts cut out."""
    if len(text) > HEAD_CHARS + TAIL_CHARS:
        text = text[:HEAD_CHARS] + "\n...\n" + text[-TAIL_CHARS:]
    return text.translate(_QUOTES)


def opening(text: str, n_sentences: int = 2, max_chars: int = 300) -> str:
    """Return the first ``n_sentences`` sentences of ``text`` (at most ``max_chars`` characters)."""
    parts = [p for p in _SENT.split(text.strip(), maxsplit=n_sentences + 1) if p.strip()]
    return " ".join(parts[:n_sentences])[:max_chars]


def ending(text: str, max_chars: int = 300) -> str:
    """Return the last sentence-ish stretch of ``text`` (at most ``max_chars`` characters)."""
    return text.strip()[-max_chars:]


def opening_end(text: str, n_sentences: int = 2, max_chars: int = 300) -> int:
    """Return the index in ``text`` where its first ``n_sentences`` sentences end (at most ``max_chars``)."""
    k = 0
    for m in _SENT.finditer(text):
        if m.start() == 0:
            continue
        k += 1
        if k == n_sentences:
            return min(m.start(), max_chars)
    return min(len(text), max_chars)
