"""Attention-head attribution for the refusal cliff (PAPERS.md section 5): scale one head's output and see what
the refusal probe reads at the last prompt position.

A head's output is its ``head_dim`` slice of the input of the attention output projection (``self_attn.o_proj``
in Llama/Qwen2/Mistral/Gemma, ``attn.c_proj`` in GPT-2, ``out_proj``/``dense`` elsewhere); ``scale_heads``
multiplies that slice by a factor with a removable forward pre-hook at every position. ``attribute`` ablates
(factor 0 by default) each head in turn and records the probe's score; heads whose removal raises the score most
are refusal-suppression heads (ranked first). Only heads below the probe's layer can change what the probe reads,
so heads at or above it are not scored.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from refusalkit.errors import RefusalkitError
from refusalkit.latent.layers import layer_stack
from refusalkit.latent.probe import Probe, prompt_logits

log = logging.getLogger(__name__)

#: names the attention output projection goes by, inside the attention module
OUT_PROJ_NAMES = ("o_proj", "c_proj", "out_proj", "dense", "wo", "out")


@dataclass
class AttentionLayout:
    """Where each layer's attention output projection is, and how its input splits into heads."""

    out_proj: list[nn.Module]
    names: list[str]
    n_heads: int
    head_dim: int

    @property
    def n_layers(self) -> int:
        """Return the number of layers."""
        return len(self.out_proj)

    @property
    def total(self) -> int:
        """Return the number of attention heads in the model."""
        return self.n_layers * self.n_heads


def _cfg_int(model: nn.Module, *keys: str) -> int | None:
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    for k in keys:
        v = getattr(cfg, k, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _in_features(mod: nn.Module) -> int | None:
    if isinstance(mod, nn.Linear):
        return mod.in_features
    w = getattr(mod, "weight", None)
    if isinstance(w, torch.Tensor) and w.dim() == 2 and type(mod).__name__ == "Conv1D":
        return int(w.shape[0])  # GPT-2's Conv1D stores [in, out]
    return None


def attention_layout(model: nn.Module) -> AttentionLayout:
    """Return the model's AttentionLayout: per decoder layer, the attention module's output projection (found
    by name among the attention module's children, checked against the config's head count). Raises
    RefusalkitError for an architecture where it cannot be found."""
    stack = layer_stack(model)
    n_heads = _cfg_int(model, "num_attention_heads", "n_head", "num_heads")
    if n_heads is None:
        raise RefusalkitError(f"{type(model).__name__}: the config gives no attention head count")
    projs: list[nn.Module] = []
    names: list[str] = []
    head_dim: int | None = None
    for li, layer in enumerate(stack.layers):
        attn = [(n, m) for n, m in layer.named_children() if "attention" in type(m).__name__.lower()]
        if len(attn) != 1:
            raise RefusalkitError(
                f"{type(model).__name__}: layer {li} has {len(attn)} attention modules (expected one); head "
                "attribution supports Llama, Qwen2, Mistral, Gemma and GPT-2 style decoders"
            )
        an, am = attn[0]
        found = [(n, m) for n, m in am.named_children() if n in OUT_PROJ_NAMES and _in_features(m)]
        if len(found) != 1:
            raise RefusalkitError(
                f"{type(model).__name__}: found no output projection ({'/'.join(OUT_PROJ_NAMES)}) in {stack.path}."
                f"{li}.{an}; head attribution does not support this architecture"
            )
        pn, pm = found[0]
        d_in = _in_features(pm)
        assert d_in is not None
        if d_in % n_heads:
            raise RefusalkitError(
                f"{stack.path}.{li}.{an}.{pn} takes {d_in} features, not a multiple of the {n_heads} heads"
            )
        hd = d_in // n_heads
        cfg_hd = _cfg_int(model, "head_dim")
        if cfg_hd is not None and cfg_hd != hd:
            raise RefusalkitError(f"{stack.path}.{li}.{an}.{pn}: {d_in} features for {n_heads} heads of {cfg_hd}")
        head_dim = hd
        projs.append(pm)
        names.append(f"{stack.path}.{li}.{an}.{pn}")
    assert head_dim is not None
    return AttentionLayout(projs, names, n_heads, head_dim)


Head = tuple[int, int]  # (layer, head)


@contextlib.contextmanager
def scale_heads(model: nn.Module, factors: dict[Head, float] | Sequence[Head], factor: float = 0.0) -> Iterator[None]:
    """Within the block, multiply each listed head's output (its slice of the attention output projection's
    input) by its factor at every position: ``factors`` maps ``(layer, head)`` to a factor, or is a list of
    heads that all get ``factor`` (0 ablates, above 1 amplifies). The hooks are removed on exit."""
    lay = attention_layout(model)
    fmap = dict(factors) if isinstance(factors, dict) else {tuple(h): factor for h in factors}
    per_layer: dict[int, list[tuple[int, float]]] = {}
    for (li, hi), f in fmap.items():
        if not (0 <= li < lay.n_layers and 0 <= hi < lay.n_heads):
            raise RefusalkitError(f"head ({li}, {hi}) does not exist: {lay.n_layers} layers x {lay.n_heads} heads")
        per_layer.setdefault(int(li), []).append((int(hi), float(f)))
    hd = lay.head_dim

    def hook_for(items: list[tuple[int, float]]):
        def pre(_m, args):
            x = args[0]
            scale = torch.ones(x.shape[-1], dtype=x.dtype, device=x.device)
            for hi, f in items:
                scale[hi * hd : (hi + 1) * hd] = f
            return (x * scale, *args[1:])

        return pre

    handles = [lay.out_proj[li].register_forward_pre_hook(hook_for(items)) for li, items in per_layer.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def ablate_heads(model: nn.Module, heads: Sequence[Head]):
    """Return a context manager that zeroes the listed heads' outputs during the block (generation included)."""
    return scale_heads(model, heads, 0.0)


def amplify_heads(model: nn.Module, heads: Sequence[Head], factor: float = 2.0):
    """Return a context manager that multiplies the listed heads' outputs by ``factor`` (> 1) during the block."""
    if not factor > 1:
        raise RefusalkitError(f"an amplification factor must be above 1, got {factor}")
    return scale_heads(model, heads, factor)


def attribute(
    hf: Any,
    probe: Probe,
    prompts: list[Any],
    *,
    factor: float = 0.0,
    batch_size: int = 8,
    system_prompt: str | None = None,
    on_head: Callable[[int, int, float], None] | None = None,
) -> tuple[float, list[dict[str, Any]]]:
    """Return ``(base, ranking)``: the mean probe score (probability) at the last prompt position of ``prompts``,
    and one entry per head below the probe's layer: ``score`` (mean probability with the head scaled by
    ``factor``), ``delta = score - base``, ``logit`` and ``delta_logit`` (the same on the calibrated logit).
    Sorted by ``delta_logit`` descending, refusal-suppression heads first: the logit, because the probability
    saturates near 1 on clearly harmful prompts and then hardly moves."""
    if not 0 <= factor <= 1:
        raise RefusalkitError(f"--factor must be in [0, 1], got {factor}")
    lay = attention_layout(hf.model)
    kw: dict[str, Any] = {"batch_size": batch_size, "system_prompt": system_prompt}

    def measure() -> tuple[float, float]:
        z = prompt_logits(hf, probe, prompts, **kw)
        return float(np.mean(1.0 / (1.0 + np.exp(-z)))), float(np.mean(z))

    base, base_z = measure()
    out: list[dict[str, Any]] = []
    for li in range(min(probe.layer, lay.n_layers)):
        for hi in range(lay.n_heads):
            with scale_heads(hf.model, {(li, hi): factor}):
                s, z = measure()
            out.append(
                {
                    "layer": li,
                    "head": hi,
                    "score": round(s, 6),
                    "delta": round(s - base, 6),
                    "logit": round(z, 5),
                    "delta_logit": round(z - base_z, 5),
                }
            )
            if on_head:
                on_head(li, hi, z - base_z)
    out.sort(key=lambda r: (-r["delta_logit"], r["layer"], r["head"]))
    for i, r in enumerate(out):
        r["rank"] = i + 1
    return base, out


def k_for(fraction: float, total: int) -> int:
    """Return how many heads a fraction of ``total`` means: rounded, at least 1 for a fraction above 0."""
    if not 0 <= fraction <= 1:
        raise RefusalkitError(f"head fractions must be in [0, 1], got {fraction}")
    return 0 if fraction == 0 else max(1, round(fraction * total))


def refusal_curve(
    hf: Any,
    ranking: list[dict[str, Any]],
    groups: dict[str, list[Any]],
    fractions: Sequence[float],
    detector: Any,
    *,
    mode: str = "ablate",
    factor: float = 2.0,
    config: Any = None,
    batch_size: int = 8,
    on_point: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Return one point per fraction: ``k`` top-ranked heads ablated (``mode`` ``ablate``) or amplified by
    ``factor`` (``amplify``) while generating answers to each group of prompts (e.g. ``harmful``, ``harmless``),
    and the share of answers the detector judges refusals, per group (``refusal_rate``), with ``n`` per group."""
    from refusalkit.data.taxonomy import is_refusal

    if mode not in ("ablate", "amplify"):
        raise RefusalkitError(f"--mode must be ablate or amplify, got {mode!r}")
    lay = attention_layout(hf.model)
    points = []
    for frac in fractions:
        k = k_for(float(frac), lay.total)
        heads = [(int(r["layer"]), int(r["head"])) for r in ranking[:k]]
        ctx = ablate_heads(hf.model, heads) if mode == "ablate" else amplify_heads(hf.model, heads, factor)
        point: dict[str, Any] = {"fraction": float(frac), "k": k, "k_used": len(heads), "refusal_rate": {}, "n": {}}
        with ctx:
            for name, prompts in groups.items():
                if not prompts:
                    continue
                gens = hf.generate(prompts, config, batch_size=batch_size)
                labels = detector.predict([g.text for g in gens], [str(p) for p in prompts])
                point["refusal_rate"][name] = round(float(np.mean([is_refusal(x) for x in labels])), 5)
                point["n"][name] = len(prompts)
        points.append(point)
        if on_point:
            on_point(point)
    return points
