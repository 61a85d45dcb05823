"""Refusal-token schemes: which control tokens exist, which category each stands for, and how the
tokenizer and the embedding matrix gain them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from refusalkit.errors import RefusalkitError

RESPOND = "[respond]"
REFUSE = "[refuse]"

#: The five CoCoNot categories (Brahman et al. 2024) and the short names used in their token names.
COCONOT_CATEGORIES: dict[str, str] = {
    "Humanizing requests": "humanizing",
    "Incomplete requests": "incomplete",
    "Indeterminate requests": "indeterminate",
    "Requests with safety concerns": "safety",
    "Unsupported requests": "unsupported",
}

# Words whose embeddings seed the new rows: a refusal token starts near "sorry / cannot", [respond] near
# "Sure / Here", so that the new tokens begin with sensible logits instead of random noise.
REFUSAL_SEED_WORDS = (" sorry", "Sorry", " cannot", " unable", " refuse", " decline", " can't", " won't")
RESPOND_SEED_WORDS = ("Sure", " Sure", " Here", "Here", "Certainly", " happy", " glad")


def slug(name: str) -> str:
    """Return a lower-case token-safe short name for a category (``"medical advice"`` -> ``medical_advice``)."""
    s = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not s:
        raise RefusalkitError(f"category {name!r} has no letters or digits to name its token after")
    return s


@dataclass
class TokenScheme:
    """The control tokens of a refusal-token model.

    ``mode`` is ``"category"`` (one ``[refuse:NAME]`` token per category) or ``"single"`` (one
    ``[refuse]`` token for every category). ``categories`` maps a category (as it appears in data files)
    to its short name. Refusal tokens come first in :attr:`tokens`, ``[respond]`` last.
    """

    mode: str = "category"
    categories: dict[str, str] = field(default_factory=lambda: dict(COCONOT_CATEGORIES))

    def __post_init__(self) -> None:
        if self.mode not in ("category", "single"):
            raise RefusalkitError(f"unknown token scheme {self.mode!r}; use 'category' or 'single'")
        if not self.categories:
            raise RefusalkitError("a token scheme needs at least one category")
        shorts = list(self.categories.values())
        if len(set(shorts)) != len(shorts):
            raise RefusalkitError(f"two categories share a token name: {shorts}")

    @classmethod
    def from_categories(cls, names: list[str] | None = None, mode: str = "category") -> TokenScheme:
        """Return a scheme for ``names`` (default: the five CoCoNot categories), short names derived."""
        if not names:
            return cls(mode=mode)
        return cls(mode=mode, categories={n: COCONOT_CATEGORIES.get(n) or slug(n) for n in names})

    def refusal_token(self, category: str | None) -> str:
        """Return the refusal token for ``category`` (``[refuse]`` in the single scheme).

        Raises RefusalkitError for a category the scheme does not know.
        """
        if self.mode == "single":
            return REFUSE
        if category not in self.categories:
            raise RefusalkitError(
                f"category {category!r} is not in the token scheme "
                f"({', '.join(self.categories)}); add it with --categories"
            )
        return f"[refuse:{self.categories[category]}]"

    @property
    def refusal_tokens(self) -> list[str]:
        """Return the refusal tokens in category order (one entry in the single scheme)."""
        if self.mode == "single":
            return [REFUSE]
        return [f"[refuse:{s}]" for s in self.categories.values()]

    @property
    def tokens(self) -> list[str]:
        """Return every control token: the refusal tokens, then ``[respond]``."""
        return self.refusal_tokens + [RESPOND]

    def token_category(self, token: str) -> str | None:
        """Return the category a refusal token stands for (``"*"`` for ``[refuse]``, None for ``[respond]``)."""
        if token == RESPOND:
            return None
        if token == REFUSE:
            return "*"
        for cat, s in self.categories.items():
            if token == f"[refuse:{s}]":
                return cat
        raise RefusalkitError(f"{token!r} is not a control token of this scheme")

    def to_dict(self) -> dict[str, Any]:
        """Return the scheme as JSON-ready data."""
        return {"mode": self.mode, "categories": dict(self.categories), "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenScheme:
        """Return the scheme stored by :meth:`to_dict`."""
        return cls(mode=d.get("mode", "category"), categories=dict(d["categories"]))


def add_control_tokens(tokenizer: Any, model: Any, scheme: TokenScheme, *, init: bool = True) -> dict[str, int]:
    """Add the scheme's tokens to ``tokenizer`` as special tokens, resize ``model``'s embeddings and seed
    the new rows; return ``{token: id}``.

    New refusal rows start at the mean embedding of refusal words, ``[respond]`` at the mean of answer
    openers (with tied embeddings the same rows are the output rows). Tokens already in the vocabulary
    keep their ids and rows.
    """
    import torch

    missing = [t for t in scheme.tokens if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in scheme.tokens}
    need = max(ids.values()) + 1
    emb = model.get_input_embeddings()
    if emb.weight.shape[0] < need:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        emb = model.get_input_embeddings()
    if init and missing:
        with torch.no_grad():
            W = emb.weight
            ref = _mean_rows(tokenizer, W, REFUSAL_SEED_WORDS)
            res = _mean_rows(tokenizer, W, RESPOND_SEED_WORDS)
            for t in missing:
                W[ids[t]] = res if t == RESPOND else ref
            out = model.get_output_embeddings()
            if out is not None and out.weight.data_ptr() != W.data_ptr():
                for t in missing:
                    out.weight[ids[t]] = W[ids[t]]
    return ids


def _mean_rows(tokenizer: Any, W: Any, words: tuple[str, ...]):
    rows = sorted({i for w in words for i in tokenizer.encode(w, add_special_tokens=False)[:1]})
    return W[rows].mean(0)
