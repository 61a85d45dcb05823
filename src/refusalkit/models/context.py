"""Prompt length against a model's context window, checked for every prompt before any generation starts.

A prompt longer than the context either fails deep inside attention (a 5 MB prompt asked for a 390 GB
allocation) or is processed silently past the positions the model was trained on. :class:`ContextBudget`
counts each chat-templated prompt's tokens and refuses the ones that do not fit with the answer's
``max_new_tokens``, naming the row's ``FILE:LINE`` and the count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from refusalkit.errors import InputError, RefusalkitError
from refusalkit.models.base import PromptLike, to_messages

if TYPE_CHECKING:
    from refusalkit.models.spec import ModelSpec

if TYPE_CHECKING:
    from refusalkit.models.spec import ModelSpec

# config fields that hold a model's trained context length, in the order transformers families use them
_CTX_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


class PromptTooLongError(RefusalkitError):
    """A prompt does not fit the model's context; ``index`` is its position in the list checked."""

    def __init__(self, message: str, *, index: int, n_tokens: int, limit: int):
        super().__init__(message)
        self.index, self.n_tokens, self.limit = index, n_tokens, limit


def context_size(config: Any, tokenizer: Any = None) -> int | None:
    """Return the number of positions a model was trained for (from its config, capped by the tokenizer's
    ``model_max_length`` when that is a real value), or None when neither says."""
    sizes = [v for f in _CTX_FIELDS if isinstance(v := getattr(config, f, None), int) and v > 0]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 10**8:  # transformers uses ~1e30 for "unknown"
        sizes.append(tok_max)
    return min(sizes) if sizes else None


def render_chat(tokenizer: Any, prompt: PromptLike, system_prompt: str | None = None) -> str:
    """Return the chat-templated text of one prompt, ending with the assistant header (plain lines
    when the tokenizer has no chat template)."""
    msgs = to_messages(prompt, system_prompt)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return "\n".join(m["content"] for m in msgs) + "\n"


class ContextBudget:
    """Counts chat-templated prompt tokens for one tokenizer and context size."""

    def __init__(self, tokenizer: Any, n_ctx: int | None):
        self.tokenizer = tokenizer
        self.n_ctx = n_ctx
        self._chars_per_token: int | None = None

    @property
    def chars_per_token(self) -> int:
        """Return an upper bound on the characters one token covers: the longest vocabulary entry.

        Token strings are at least as long as the text they decode to (byte-level BPE writes one character
        per byte), so a text of ``c`` characters has at least ``c / chars_per_token`` tokens."""
        if self._chars_per_token is None:
            vocab = self.tokenizer.get_vocab()
            self._chars_per_token = max((len(t) for t in vocab), default=1) or 1
        return self._chars_per_token

    def count(self, text: str, limit: int | None = None) -> tuple[int, bool]:
        """Return ``(n_tokens, exact)`` for rendered ``text``. When the text is too many characters to fit
        ``limit`` tokens whatever it says, it is not tokenized and a lower bound comes back (``exact``
        False): a 5 MB prompt is refused in microseconds, not after seconds of tokenizing."""
        if limit is not None and len(text) > limit * self.chars_per_token:
            return math.ceil(len(text) / self.chars_per_token), False
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]), True

    def check(
        self, prompts: Sequence[PromptLike], *, max_new_tokens: int = 0, system_prompt: str | None = None
    ) -> None:
        """Return None when every prompt plus ``max_new_tokens`` fits the context; else raise
        PromptTooLongError for the first that does not (its ``index``, token count and the limit)."""
        if self.n_ctx is None:
            return
        limit = self.n_ctx - max(max_new_tokens, 0)
        for i, p in enumerate(prompts):
            text = render_chat(self.tokenizer, p, system_prompt)
            n, exact = self.count(text, limit)
            if n > limit:
                size = f"{n:,} tokens" if exact else f"at least {n:,} tokens ({len(text):,} characters)"
                room = (
                    (f"the {limit:,} that fit" if limit > 0 else "no room")
                    + f" (context {self.n_ctx:,} tokens"
                    + (f" minus --max-new-tokens {max_new_tokens:,})" if max_new_tokens > 0 else ")")
                )
                raise PromptTooLongError(
                    f"prompt of {size} with the chat template, over {room}; shorten or remove it",
                    index=i,
                    n_tokens=n,
                    limit=limit,
                )


def budget_for_spec(spec: str | ModelSpec) -> ContextBudget | None:
    """Return a ContextBudget for a ``--model`` spec from its tokenizer and config alone (no weights are
    loaded), or None for endpoint models (their server enforces its own limit) and for a spec whose
    tokenizer cannot be read here (loading the model then reports that)."""
    from refusalkit.models.spec import ModelSpec

    ms = ModelSpec.parse(spec)
    if ms.is_endpoint:
        return None
    src = ms.weights_source()
    try:
        from transformers import AutoConfig, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(src)
        cfg = AutoConfig.from_pretrained(src)
    except (OSError, ValueError):
        return None
    return ContextBudget(tok, context_size(cfg, tok))


def check_examples(
    spec: str | ModelSpec, examples: Sequence[Any], *, max_new_tokens: int = 0, system_prompt: str | None = None
) -> None:
    """Check every example's prompt against ``spec``'s context before any run starts; raise an
    InputError naming the row's ``FILE:LINE`` (its ``origin``), the field and the token count."""
    budget = budget_for_spec(spec)
    if budget is None:
        return
    try:
        budget.check([ex.prompt for ex in examples], max_new_tokens=max_new_tokens, system_prompt=system_prompt)
    except PromptTooLongError as e:
        ex = examples[e.index]
        origin = getattr(ex, "origin", None) or f"prompt id {ex.id!r}"
        file, _, line = origin.rpartition(":")
        if file and line.isdigit():
            raise InputError(str(e), file=file, line=int(line), field="prompt") from None
        raise InputError(str(e), file=origin, field="prompt") from None
