"""Prompt features from a causal language model's residual stream: the hidden state at the last token of
the chat-templated prompt (``t_post_inst``, where Zhao et al. find the refusal direction), at one layer.

A small local model (the bundled SmolLM2-135M-Instruct by default) already encodes how "sensitive" a
request reads; a prompt classifier can use that state next to its n-grams to predict another model's
refusals. States are memoised per (model, prompt) for all layers, so cross-validation and grid searches
featurise each prompt once.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from refusalkit.errors import RefusalkitError
from refusalkit.memo import BoundedMemo

MAX_CHARS = 2000  # a 1 MB prompt is cut: the state at the end of the template is what is read
# Every layer is kept (about 70 KB a prompt for SmolLM2), so a layer search featurises once; bounded.
_MEMO = BoundedMemo(4000)


@lru_cache(maxsize=2)
def _model(spec: str):
    from refusalkit.models.spec import load_model

    m = load_model(spec)
    if not hasattr(m, "hidden_states"):
        raise RefusalkitError(
            f"model {spec!r} does not expose hidden states; prompt lm features need a local "
            "Hugging Face model ('default' or a model folder)"
        )
    return m


def n_layers(spec: str = "default") -> int:
    """Return the number of transformer layers of ``spec`` (valid ``layer`` values are 0..n_layers)."""
    return int(_model(spec).model.config.num_hidden_layers)


def prompt_states(prompts: list[str], spec: str = "default", layer: int = 18, batch_size: int = 16) -> np.ndarray:
    """Return float32 ``[n, d_model]``: the residual stream after ``layer`` at the last chat-template token
    of each prompt, for the local model ``spec``."""
    n = n_layers(spec)
    if not 0 <= layer <= n:
        raise RefusalkitError(f"layer {layer} is out of range for {spec!r} (0..{n})")
    if not prompts:
        return np.zeros((0, int(_model(spec).model.config.hidden_size)), np.float32)

    def compute(todo: list[tuple[str, str]]) -> list[np.ndarray]:
        m = _model(spec)
        out: dict[int, np.ndarray] = {}  # index into todo -> state; `order` covers every index
        # Similar lengths share a batch, so little padding is computed.
        order = sorted(range(len(todo)), key=lambda i: len(todo[i][1]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            hs = m.hidden_states([todo[i][1][:MAX_CHARS] for i in idx], batch_size=batch_size)[:, :, -1, :].numpy()
            for i, h in zip(idx, hs):
                out[i] = h.astype(np.float32)
        return [out[i] for i in range(len(todo))]

    return np.stack([s[layer] for s in _MEMO.get_many([(spec, p) for p in prompts], compute)])


def clear_state_cache() -> None:
    """Forget memoised states (tests call this to compare batched and one-at-a-time states)."""
    _MEMO.clear()
