"""Interventions on the residual stream: context managers that add forward hooks and remove them on exit,
so they compose with plain ``model.generate`` and with a refusal-token ``LogitsProcessor``, and leave the
model as it was; plus weight orthogonalisation, the same ablation baked into the weights.

- ``ablate(model, r)``: project the unit direction ``r`` out of the residual stream at every layer and
  position (``h -= (h . r) r`` on the embedding output and on every module that writes to the stream).
- ``add(model, v, layer, coef)``: add ``coef * v`` to the input of one decoder layer at every position.
- ``ablate_then_add``: both (the stream loses its own component along ``v``, then gets ``coef * v``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from refusalkit.errors import RefusalkitError
from refusalkit.latent.layers import (
    LayerStack,
    input_embeddings,
    layer_input,
    layer_stack,
    output_embeddings,
    replace_layer_input,
    replace_output,
    residual_writers,
    weight_of,
)


def unit(v: torch.Tensor) -> torch.Tensor:
    """Return ``v`` scaled to unit length (float32); raises RefusalkitError for a zero vector."""
    v = v.detach().float().flatten()
    n = v.norm()
    if not n > 0:
        raise RefusalkitError("cannot use a zero direction")
    return v / n


def _project_out(h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    r = r.to(device=h.device, dtype=h.dtype)
    return h - (h @ r).unsqueeze(-1) * r


def _writers_cache(model: nn.Module, stack: LayerStack) -> list:
    cached = getattr(model, "_refusalkit_writers", None)
    if cached is None:
        cached = residual_writers(model, stack)
        object.__setattr__(model, "_refusalkit_writers", cached)  # plain attribute, not a submodule
    return cached


def embeddings(model: nn.Module, stack: LayerStack) -> list[nn.Module]:
    """Return the embeddings that write to the residual stream: the token embedding, plus learned position
    embeddings of the stream's width outside the layer stack (GPT-2's ``wpe``)."""
    emb = input_embeddings(model)
    d = weight_of(emb).shape[1]
    inside = {id(m) for m in stack.layers.modules()}
    out_emb = output_embeddings(model)
    extra = [
        m
        for m in model.modules()
        if isinstance(m, nn.Embedding)
        and m is not emb
        and m is not out_emb
        and m.embedding_dim == d
        and id(m) not in inside
    ]
    return [emb, *extra]


@contextlib.contextmanager
def ablate(model: nn.Module, direction: torch.Tensor) -> Iterator[None]:
    """Within the block, remove ``direction`` from the residual stream at every layer and position."""
    r = unit(direction)
    stack = layer_stack(model)
    handles = []

    def out_hook(_m, _a, out):
        t = out if isinstance(out, torch.Tensor) else out[0]
        return replace_output(out, _project_out(t, r))

    try:
        for emb in embeddings(model, stack):
            handles.append(emb.register_forward_hook(out_hook))
        for writers in _writers_cache(model, stack):
            for w in writers:
                handles.append(w.module.register_forward_hook(out_hook))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def add(
    model: nn.Module, vector: torch.Tensor, layer: int, coef: float = 1.0, *, ablate_first: bool = False
) -> Iterator[None]:
    """Within the block, add ``coef * vector`` to the input of decoder layer ``layer`` at every position
    (with ``ablate_first``, first project the stream's own component along ``vector`` out at that layer)."""
    stack = layer_stack(model)
    if not -len(stack) <= layer < len(stack):
        raise RefusalkitError(f"layer {layer} is out of range: the model has {len(stack)} layers")
    v = vector.detach().float().flatten()
    r = unit(v) if ablate_first else None

    def pre(_m, args, kwargs):
        h = layer_input(args, kwargs)
        if r is not None:
            h = _project_out(h, r)
        return replace_layer_input(args, kwargs, h + coef * v.to(device=h.device, dtype=h.dtype))

    handle = stack.layers[layer].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def ablate_then_add(
    model: nn.Module, direction: torch.Tensor, vector: torch.Tensor, layer: int, coef: float = 1.0
) -> Iterator[None]:
    """Within the block, ablate ``direction`` everywhere, then add ``coef * vector`` at layer ``layer``."""
    with ablate(model, direction), add(model, vector, layer, coef):
        yield


@contextlib.contextmanager
def intervention(model: nn.Module, spec: dict[str, Any] | None) -> Iterator[None]:
    """Apply an intervention described by a dict: ``{"op": "none"}``, ``{"op": "ablate", "direction": r}``,
    ``{"op": "add", "vector": v, "layer": l, "coef": c}`` or ``{"op": "ablate_then_add", ...}`` (both keys)."""
    spec = spec or {}
    op = spec.get("op", "none")
    if op == "none":
        yield
    elif op == "ablate":
        with ablate(model, spec["direction"]):
            yield
    elif op == "add":
        with add(model, spec["vector"], spec["layer"], spec.get("coef", 1.0)):
            yield
    elif op == "ablate_then_add":
        with ablate_then_add(model, spec["direction"], spec["vector"], spec["layer"], spec.get("coef", 1.0)):
            yield
    else:
        raise RefusalkitError(f"unknown intervention {op!r}")


class InterventionModel:
    """A ``LanguageModel`` that generates (and scores first tokens) with an intervention applied, so the run
    store, the runner and refusal-token policies use it like the model itself. ``hf`` is an ``HFModel``."""

    def __init__(self, hf: Any, spec: dict[str, Any] | None, *, name: str | None = None):
        self.hf = hf
        self.spec = spec
        self.name = name or hf.name
        self.batch_size = hf.batch_size
        self.tokenizer = hf.tokenizer
        self.model = hf.model

    def render(self, *a: Any, **kw: Any) -> str:
        """Return the chat-templated prompt text (as ``HFModel.render``)."""
        return self.hf.render(*a, **kw)

    def generate(self, prompts: list[Any], config: Any = None, **kw: Any) -> list[Any]:
        """Return ``HFModel.generate``'s Generations, produced with the intervention applied."""
        with intervention(self.hf.model, self.spec):
            return self.hf.generate(prompts, config, **kw)

    def next_token_logits(self, prompts: list[Any], **kw: Any) -> torch.Tensor:
        """Return first-response-token logits ``[n, vocab]`` with the intervention applied."""
        with intervention(self.hf.model, self.spec):
            return self.hf.next_token_logits(prompts, **kw)


# --- weight orthogonalisation ------------------------------------------------------------------------------


def _orth_out(mod: nn.Module, r: torch.Tensor, d: int) -> None:
    """Make the output of a linear map orthogonal to ``r`` (nn.Linear ``[out, in]`` or GPT-2 Conv1D ``[in, out]``)."""
    W = weight_of(mod)
    rr = r.to(device=W.device, dtype=torch.float32)
    Wf = W.data.float()
    if isinstance(mod, nn.Linear) or (W.shape[0] == d and W.shape[1] != d):
        Wf -= torch.outer(rr, rr @ Wf)
    elif W.shape[1] == d:
        Wf -= torch.outer(Wf @ rr, rr)
    else:
        raise RefusalkitError(f"cannot orthogonalise {type(mod).__name__} of shape {tuple(W.shape)}")
    W.data.copy_(Wf.to(W.dtype))
    b = getattr(mod, "bias", None)
    if isinstance(b, torch.Tensor) and b.shape[-1] == d:
        bf = b.data.float()
        b.data.copy_((bf - (bf @ rr) * rr).to(b.dtype))


@torch.no_grad()
def orthogonalize(model: nn.Module, direction: torch.Tensor) -> nn.Module:
    """Edit ``model`` in place so that no module can write ``direction`` into the residual stream (the weight
    form of ``ablate``) and return it. Tied input/output embeddings are untied first, so the output head keeps
    its weights. Raises RefusalkitError for architectures where a norm follows the writers (Gemma 2/3)."""
    r = unit(direction)
    stack = layer_stack(model)
    writers = _writers_cache(model, stack)
    missing = sorted({w.name for ws in writers for w in ws if w.proj is None})
    if missing:
        raise RefusalkitError(
            f"weight orthogonalisation is not exact for {type(model).__name__}: a norm follows "
            f"{', '.join(missing)}; use the hooked ablation (refusalkit latent ablate) instead"
        )
    emb = input_embeddings(model)
    out = output_embeddings(model)
    if out is not None and out.weight is emb.weight:
        out.weight = nn.Parameter(weight_of(emb).detach().clone())
        cfg = getattr(model, "config", None)
        if cfg is not None:
            cfg.tie_word_embeddings = False
            if hasattr(cfg, "get_text_config"):
                cfg.get_text_config().tie_word_embeddings = False
    d = weight_of(emb).shape[1]
    for e in embeddings(model, stack):
        ew = weight_of(e)
        E = ew.data.float()
        rr = r.to(E.device)
        ew.data.copy_((E - torch.outer(E @ rr, rr)).to(ew.dtype))
    for ws in writers:
        for w in ws:
            _orth_out(w.proj, r, d)
    return model
