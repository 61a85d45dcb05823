"""The deciding pass of a refusal-token adapter whose answers another model writes, at the cost of the prompts'
own tokens only.

Such an adapter (``--respond-target token``, like the bundled one) must read every prompt to decide, although
the base model writes the answers: the adapter's weights differ from the base model's, so the base model's
pass cannot tell its decision. Chat templates put the same head before every prompt (SmolLM2: its default
system prompt and the user header, 24 of the load test's 34-41 prompt tokens), so :class:`HeadCache` runs the
adapter over that head once per server, keeps its key/value cache, and per batch runs only each prompt's own
tokens on top of it. The suffixes are left-padded after the head (the padding masked out, positions counted
without it), so the first response position is the last column for every row and the model computes its
output head there only (``logits_to_keep=1``). Logits agree with a full pass to float32 noise (tested).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from refusalkit.models.base import PromptLike
from refusalkit.models.prefix import prefix_forward

log = logging.getLogger(__name__)

MARKER = "QZXQZX"  # a user message whose rendering shows where the template's head ends


class HeadCache:
    """First-position logits of a batch with the chat template's head computed once (per system prompt)."""

    def __init__(self, hf: Any):
        self.hf = hf
        self._heads: dict[str | None, tuple[list[int], Any] | None] = {}

    def _head(self, system_prompt: str | None) -> tuple[list[int], Any] | None:
        """Return the head's token ids and its key/value cache (one row), None when the template has none."""
        if system_prompt not in self._heads:
            from transformers import DynamicCache

            text = self.hf.render([{"role": "user", "content": MARKER}], system_prompt)
            i = text.find(MARKER)
            ids = self.hf.tokenizer(text[:i], add_special_tokens=False)["input_ids"] if i > 0 else []
            entry = None
            if len(ids) >= 2:
                cache = DynamicCache()
                with torch.inference_mode():
                    self.hf.model(
                        input_ids=torch.tensor([ids], device=self.hf.device), past_key_values=cache, use_cache=True
                    )
                entry = (ids, cache)
            self._heads[system_prompt] = entry
        return self._heads[system_prompt]

    @torch.inference_mode()
    def first_logits(self, prompts: list[PromptLike], system_prompt: str | None = None) -> torch.Tensor | None:
        """Return the logits at the first response position, ``[n, vocab]`` float32, or None when a prompt
        does not start with the template's head as tokens (a system message of its own, say): the caller then
        decides inside ``generate``, from a full pass."""
        head = self._head(system_prompt)
        if head is None or not prompts:
            return None
        ids, cache = head
        k = len(ids)
        tok = self.hf.tokenizer
        rows = [tok(self.hf.render(p, system_prompt), add_special_tokens=False)["input_ids"] for p in prompts]
        if any(len(r) <= k or r[:k] != ids for r in rows):
            return None
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        return prefix_forward(self.hf.model, rows, pad_id=pad, head=head)
