"""Find the parts of a Hugging Face decoder that latent analysis works on, without hard-coded names.

``layer_stack`` finds the ModuleList of decoder layers (``model.model.layers`` in Llama/Qwen/Gemma/Mistral/Phi-3,
``transformer.h`` in GPT-2, ...). ``residual_writers`` finds, by tracing one forward pass, the modules inside each
layer whose outputs are added to the residual stream (attention and MLP, or Gemma 2/3's post-norms), and the
linear map that produces each one: what directional ablation hooks and weight orthogonalisation edit.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from refusalkit.errors import RefusalkitError


@dataclass
class LayerStack:
    """The decoder layers of a model: ``path`` (e.g. ``model.layers``) and the modules themselves."""

    path: str
    layers: nn.ModuleList

    def __len__(self) -> int:
        return len(self.layers)


def _n_layers_from_config(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    if hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        v = getattr(cfg, key, None)
        if isinstance(v, int):
            return v
    return None


def layer_stack(model: nn.Module) -> LayerStack:
    """Return the model's stack of decoder layers: the ModuleList of identical blocks whose length is the
    config's layer count (else the longest such list). Raises RefusalkitError when there is none."""
    want = _n_layers_from_config(model)
    cands: list[tuple[str, nn.ModuleList]] = []
    for name, mod in model.named_modules():
        if (
            isinstance(mod, nn.ModuleList)
            and len(mod) > 0
            and len({type(m) for m in mod}) == 1
            and any(True for _ in mod[0].parameters())
        ):
            cands.append((name, mod))
    if not cands:
        raise RefusalkitError(f"{type(model).__name__}: found no stack of decoder layers (a ModuleList of blocks)")
    exact = [c for c in cands if want is not None and len(c[1]) == want]
    # prefer the shallowest exact match (vision towers and MoE expert lists sit deeper)
    pool = exact or cands
    name, mod = min(pool, key=lambda c: (c[0].count("."), -len(c[1])))
    if not exact:
        name, mod = max(cands, key=lambda c: len(c[1]))
    return LayerStack(name, mod)


def input_embeddings(model: nn.Module) -> nn.Module:
    """Return the model's input token embedding (Hugging Face ``get_input_embeddings()``)."""
    # torch types a Module's undeclared attributes as ``Tensor | Module``; Hugging Face models define this method
    return model.get_input_embeddings()  # type: ignore[operator]


def output_embeddings(model: nn.Module) -> nn.Module | None:
    """Return the model's output head (Hugging Face ``get_output_embeddings()``), or None when it has none."""
    # same torch typing gap as ``input_embeddings``
    return model.get_output_embeddings()  # type: ignore[operator]


def weight_of(mod: nn.Module) -> torch.Tensor:
    """Return ``mod.weight``, the weight tensor of an embedding or linear map."""
    w = mod.weight
    if not isinstance(w, torch.Tensor):
        raise RefusalkitError(f"{type(mod).__name__} has no weight tensor")
    return w


def hidden_size(model: nn.Module) -> int:
    """Return the width of the residual stream (the input embedding's dimension)."""
    return int(weight_of(input_embeddings(model)).shape[1])


def _first_tensor(x: Any) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    return None


def layer_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """Return the residual-stream tensor a decoder layer is called with (positional or ``hidden_states=``)."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    hs = kwargs.get("hidden_states")
    if isinstance(hs, torch.Tensor):
        return hs
    raise RuntimeError("could not find the hidden states among a decoder layer's inputs")


def replace_layer_input(args: tuple, kwargs: dict, new: torch.Tensor) -> tuple[tuple, dict]:
    """Return ``(args, kwargs)`` with the layer's residual input replaced by ``new``."""
    if args and isinstance(args[0], torch.Tensor):
        return (new, *args[1:]), kwargs
    kwargs = dict(kwargs)
    kwargs["hidden_states"] = new
    return args, kwargs


def replace_output(out: Any, new: torch.Tensor) -> Any:
    """Return a module output (a Tensor or a tuple starting with one) with its first tensor replaced."""
    if isinstance(out, torch.Tensor):
        return new
    return (new, *out[1:]) if isinstance(out, tuple) else [new, *out[1:]]


@dataclass
class Writer:
    """A module whose output is added to the residual stream, and the linear map (``proj``) producing that
    output, or None when a norm comes after it (Gemma 2/3): then only hooks can ablate exactly."""

    module: nn.Module
    name: str
    proj: nn.Module | None


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / (b.norm() + 1e-12))


@torch.no_grad()
def residual_writers(model: nn.Module, stack: LayerStack | None = None) -> list[list[Writer]]:
    """Return, for each decoder layer, the modules whose outputs sum to the layer's residual update.

    Found by tracing one short forward pass: the smallest set of the layer's direct children whose outputs
    add up to ``layer_out - layer_in``; then, inside each, the descendant whose output equals it.
    """
    stack = stack or layer_stack(model)
    records: dict[int, dict[str, Any]] = {}
    outputs: dict[int, torch.Tensor] = {}
    handles = []

    def rec_out(mod: nn.Module):
        def hook(_m, _a, out):
            t = _first_tensor(out)
            if t is not None:
                outputs[id(mod)] = t.detach().float().clone()

        return hook

    for i, layer in enumerate(stack.layers):

        def pre(_m, args, kwargs, i=i):
            records.setdefault(i, {})["in"] = layer_input(args, kwargs).detach().float().clone()

        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(layer.register_forward_hook(rec_out(layer)))
        for sub in layer.modules():
            if sub is not layer:
                handles.append(sub.register_forward_hook(rec_out(sub)))
    try:
        emb_w = weight_of(input_embeddings(model))
        dev, vocab = emb_w.device, emb_w.shape[0]
        ids = (torch.arange(6, device=dev).unsqueeze(0) * 7 + 3) % vocab
        model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    result: list[list[Writer]] = []
    for i, layer in enumerate(stack.layers):
        delta = outputs[id(layer)] - records[i]["in"]
        kids = [(n, m) for n, m in layer.named_children() if id(m) in outputs and outputs[id(m)].shape == delta.shape]
        best: tuple[float, tuple] | None = None
        for k in range(1, min(len(kids), 4) + 1):
            for combo in itertools.combinations(kids, k):
                err = _rel_err(functools.reduce(torch.add, [outputs[id(m)] for _, m in combo]), delta)
                if best is None or err < best[0]:
                    best = (err, combo)
            if best is not None and best[0] < 0.02:
                break
        if best is None or best[0] >= 0.05:
            raise RefusalkitError(
                f"{type(layer).__name__}: could not find which submodules write to the residual "
                "stream (unsupported architecture)"
            )
        writers = []
        for n, m in best[1]:
            proj = None
            for sub in reversed(list(m.modules())):
                w = getattr(sub, "weight", None)
                if sub is m and isinstance(w, torch.Tensor) and w.dim() == 1:
                    break  # a norm writes to the stream: no linear map to orthogonalise
                if (
                    isinstance(w, torch.Tensor)
                    and w.dim() == 2
                    and id(sub) in outputs
                    and outputs[id(sub)].shape == outputs[id(m)].shape
                    and _rel_err(outputs[id(sub)], outputs[id(m)]) < 1e-3
                ):
                    proj = sub
                    break
            writers.append(Writer(m, n, proj))
        result.append(writers)
    return result
