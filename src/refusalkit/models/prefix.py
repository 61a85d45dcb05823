"""One forward pass per prompt with the batch's shared prefix computed once.

Chat templates put the same tokens before every prompt (Qwen2.5 adds a default system prompt of about 25
tokens; SmolLM2 about 20), often half of a short prompt's length. Scoring the first response token or
reading one hidden state per prompt needs only the prefill, so each batch's common prefix is run once, its
key/value cache repeated over the batch, and only the differing suffixes are run on top of it. Suffixes
are left-padded (so every row's last position is real and ``logits_to_keep=1`` applies) and get explicit
position ids that continue the prefix's, so padding shifts no real token's position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def common_prefix_len(rows: Sequence[Sequence[int]]) -> int:
    """Return the number of leading token ids every row shares, leaving at least one token in each row."""
    n = max(min(len(r) for r in rows) - 1, 0)
    first = rows[0]
    for i in range(n):
        t = first[i]
        if any(r[i] != t for r in rows):
            return i
    return n


def _body(model: Any) -> Any:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model if hasattr(base, "model") else base


def prefix_forward(
    model: Any,
    ids: Sequence[Sequence[int]],
    *,
    pad_id: int = 0,
    hidden: bool = False,
    head: tuple[Sequence[int], Any] | None = None,
) -> Any:
    """Return, for one batch of tokenized prompts, the float32 logits of the next token (``[n, vocab]``) or,
    with ``hidden``, the final hidden state after the model's last norm (``[n, d]``), at each prompt's
    last position (on the CPU); equal to a plain forward pass up to float rounding.

    ``model`` is a transformers causal LM (a peft wrapper is unwrapped for ``hidden``); the batch's common
    token prefix is run once and its cache repeated over the rows. ``head`` (token ids and the key/value cache
    of one row that ran them, e.g. kept by a server) is used instead when given: every row must start with
    those ids and go on after them; the cache is copied, never changed.
    """
    import copy

    import torch

    net = _body(model) if hidden else model
    dev = next(net.parameters()).device
    rows = [list(r) for r in ids]
    if head is not None:
        hid = list(head[0])
        if any(len(r) <= len(hid) or r[: len(hid)] != hid for r in rows):
            raise ValueError("every prompt must start with the head's tokens and go on after them")
        p = len(hid)
    else:
        p = common_prefix_len(rows)
    sfx = [r[p:] for r in rows]
    n = max(len(r) for r in sfx)
    x = torch.full((len(rows), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), p + n), dtype=torch.long)
    mask[:, :p] = 1
    pos = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(sfx):
        x[i, n - len(r) :] = torch.tensor(r)
        mask[i, p + n - len(r) :] = 1
        pos[i, n - len(r) :] = torch.arange(p, p + len(r))
    kw: dict[str, Any] = {"attention_mask": mask.to(dev), "position_ids": pos.to(dev)}
    with torch.no_grad():
        if p:
            if head is not None:
                cache = copy.deepcopy(head[1])
            else:
                cache = net(input_ids=torch.tensor([rows[0][:p]], device=dev), use_cache=True).past_key_values
            cache.batch_repeat_interleave(len(rows))
            kw["past_key_values"] = cache
            kw["use_cache"] = True
        if hidden:
            return net(input_ids=x.to(dev), **kw).last_hidden_state[:, -1].float().cpu()
        return net(input_ids=x.to(dev), logits_to_keep=1, **kw).logits[:, -1].float().cpu()


def last_hidden_states(model: Any, ids: Sequence[Sequence[int]], *, batch_size: int = 16, pad_id: int = 0) -> Any:
    """Return a float32 tensor ``(len(ids), d)``: the final hidden state (after the last norm) at each
    tokenized prompt's last position, computed batch by batch with :func:`prefix_forward`."""
    import torch

    out = [
        prefix_forward(model, ids[s : s + batch_size], pad_id=pad_id, hidden=True)
        for s in range(0, len(ids), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros((0, _body(model).config.hidden_size))
