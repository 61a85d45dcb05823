"""Using a direction artifact: load the model it belongs to (checked), build intervention specs from it,
score prompts with its Latent Guard, and write an orthogonalised copy of the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from refusalkit.errors import RefusalkitError
from refusalkit.latent import capture as cap
from refusalkit.latent.artifact import DirectionArtifact, load_artifact
from refusalkit.latent.guard import LatentGuard, fit_guard, layer_scores
from refusalkit.models.hf import resolve_dtype

VECTORS = ("refusal", "harmfulness")


def load_hf(spec: str, *, batch_size: int = 8, dtype: str = "auto") -> Any:
    """Return the HFModel for a ``--model`` string; endpoints have no residual stream to work on."""
    from refusalkit.models.spec import ModelSpec, load_model

    if ModelSpec.parse(spec).is_endpoint:
        raise RefusalkitError("latent analysis needs the model's weights: give a local model, not an endpoint")
    resolve_dtype(dtype)  # an unknown name fails here, before any weights are read
    return load_model(spec, batch_size=batch_size, dtype=dtype)


def load_for(
    direction: str | Path, model: str | None = None, *, batch_size: int = 8, dtype: str = "auto"
) -> tuple[DirectionArtifact, Any]:
    """Return ``(artifact, hf)``: the artifact and its model (``model`` overrides the card's), checked to be
    the model the directions came from."""
    art = load_artifact(direction)
    spec = model or art.card.get("model", {}).get("id")
    if not spec:
        raise RefusalkitError(f"{direction}: the card names no model; pass --model")
    hf = load_hf(spec, batch_size=batch_size, dtype=dtype)
    art.check_model(hf.model, spec)
    return art, hf


def ablation_spec(art: DirectionArtifact) -> dict[str, Any]:
    """Return the intervention spec that ablates the artifact's refusal direction everywhere."""
    return {"op": "ablate", "direction": art.tensor("refusal_direction")}


def steer_spec(
    art: DirectionArtifact,
    coef: float,
    *,
    layer: int | None = None,
    vector: str = "refusal",
    ablate_first: bool = False,
) -> dict[str, Any]:
    """Return the spec that adds ``coef`` times a direction (its difference of means) at one layer.

    ``vector`` is ``refusal`` (the selected direction; default layer: the selected one) or ``harmfulness``
    (Zhao et al.'s, at ``layer``, default the refusal layer). ``ablate_first`` removes the refusal direction
    everywhere before adding (ablate-then-add).
    """
    n_layers = int(art.card["model"]["n_layers"])
    lay = int(art.card["refusal"]["layer"]) if layer is None else int(layer)
    if not -n_layers <= lay < n_layers:
        raise RefusalkitError(f"--layer {lay} is out of range: the model has {n_layers} layers")
    if vector == "refusal":
        v = (
            art.tensor("refusal_direction")
            if layer is None
            else art.tensor("mean_diff")[lay, art.card["positions"].index(art.card["refusal"]["position"])]
        )
    elif vector == "harmfulness":
        v = art.tensor("harmfulness")[lay]
    else:
        raise RefusalkitError(f"unknown --vector {vector!r}; use {' or '.join(VECTORS)}")
    if ablate_first:
        return {
            "op": "ablate_then_add",
            "direction": art.tensor("refusal_direction"),
            "vector": v,
            "layer": lay,
            "coef": coef,
        }
    return {"op": "add", "vector": v, "layer": lay, "coef": coef}


def guard_of(art: DirectionArtifact) -> LatentGuard:
    """Return the artifact's fitted Latent Guard."""
    if "guard" not in art.card:
        raise RefusalkitError(f"{art.path}: the artifact has no fitted guard")
    return LatentGuard.from_dict(art.card["guard"])


def _offsets(art: DirectionArtifact, names: list[str]) -> cap.Positions:
    have = list(art.card["positions"])
    offs = list(art.card.get("position_offsets") or [])
    missing = [n for n in names if n not in have]
    if missing or len(offs) != len(have):
        raise RefusalkitError(f"{art.path}: the artifact has no position(s) {', '.join(missing) or names}")
    return cap.Positions(tuple(offs[have.index(n)] for n in names), tuple(names))


def guard_acts(
    hf: Any,
    art: DirectionArtifact,
    prompts: list[Any],
    *,
    positions: list[str] | None = None,
    batch_size: int = 8,
    system_prompt: str | None = None,
) -> dict[str, torch.Tensor]:
    """Return the residual stream of ``prompts`` at each of ``positions`` (default: the guard's), as position
    -> ``[n, k, d]`` for layers ``0..k-1``, where ``k - 1`` is the deepest layer the guard uses (one forward
    pass each, stopped after that layer; every layer when ``positions`` is given)."""
    names = positions or guard_of(art).position_names
    upto = int(art.card["model"]["n_layers"]) if positions else max(guard_of(art).layers) + 1
    pos = _offsets(art, names)
    if "template_suffix_ids" in art.card:
        suffix = cap.template_suffix_ids(hf, system_prompt)
        if len(suffix) != len(art.card["template_suffix_ids"]):
            raise RefusalkitError(
                "the chat template puts a different number of tokens after the instruction than when the direction "
                "was extracted (another --system-prompt?); positions would not match"
            )
    acts = cap.capture(hf, prompts, pos, batch_size=batch_size, system_prompt=system_prompt, layers=list(range(upto)))
    return {n: acts[:, :, i, :] for i, n in enumerate(names)}


def scores_of_acts(
    art: DirectionArtifact, acts: dict[str, torch.Tensor] | torch.Tensor, method: str | None = None
) -> dict[str, torch.Tensor]:
    """Return the per-layer guard scores, position -> ``[n, k]``, of ``guard_acts``' output (a bare tensor is
    the ``inst`` position's), computed with ``method`` (by default the guard's own)."""
    names = list(art.card["positions"])
    m = method or guard_of(art).method
    out = {}
    for name, a in ({"inst": acts} if isinstance(acts, torch.Tensor) else acts).items():
        i, k = names.index(name), a.shape[1]
        out[name] = layer_scores(a, art.tensor("mu_harmful")[:k, i], art.tensor("mu_harmless")[:k, i], m)
    return out


def guard_layer_scores(hf: Any, art: DirectionArtifact, prompts: list[Any], **kw: Any) -> dict[str, torch.Tensor]:
    """Return the guard's per-layer scores of ``prompts``, position -> ``[n, k]`` (see ``guard_acts``)."""
    return scores_of_acts(art, guard_acts(hf, art, prompts, **kw))


def p_harmful(hf: Any, art: DirectionArtifact, prompts: list[Any], **kw: Any) -> np.ndarray:
    """Return the Latent Guard's ``p_harmful`` (0..1) for each prompt."""
    return guard_of(art).p_harmful(guard_layer_scores(hf, art, prompts, **kw))


def fit_guard_on(
    hf: Any,
    art: DirectionArtifact,
    harmful: list[Any],
    harmless: list[Any],
    *,
    positions: list[str] | None = None,
    method: str = "projection",
    tolerance: float = 0.01,
    batch_size: int = 8,
) -> LatentGuard:
    """Return a Latent Guard fitted on validation prompts (``harmful`` vs ``harmless``) with the artifact's class
    means, choosing among ``positions`` (default: all the artifact's positions) and layers on them."""
    if not harmful or not harmless:
        raise RefusalkitError("fitting the guard needs harmful and harmless validation prompts")
    names = positions or list(art.card["positions"])
    acts = guard_acts(hf, art, list(harmful) + list(harmless), positions=names, batch_size=batch_size)
    labels = np.array([1] * len(harmful) + [0] * len(harmless))
    return fit_guard(scores_of_acts(art, acts, method), labels, method=method, tolerance=tolerance)


def check_export_dest(out_dir: str | Path) -> Path:
    """Return ``out_dir`` as a Path if an export may be written there: a new or empty folder, or an earlier
    export (it is replaced). Raises RefusalkitError for a folder holding anything else, which is never deleted."""
    dest = Path(out_dir)
    if dest.exists() and not dest.is_dir():
        raise RefusalkitError(f"--output {dest} exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / "config.json").is_file():
        raise RefusalkitError(f"--output {dest} is a folder with other files; give a new folder or an earlier export")
    return dest


def export_orthogonalized(
    hf: Any, art: DirectionArtifact, out_dir: str | Path, *, save_dtype: torch.dtype | None = None
) -> Path:
    """Write the model with the refusal direction orthogonalised out of its weights (plus its tokenizer) to
    ``out_dir`` with ``save_pretrained``, atomically, cast to ``save_dtype`` when given (the model is edited in
    place); return the folder. Plain transformers loads it."""
    import os
    import shutil
    import tempfile

    from refusalkit.latent.intervene import orthogonalize

    dest = check_export_dest(out_dir)
    orthogonalize(hf.model, art.tensor("refusal_direction"))
    if save_dtype is not None:
        hf.model.to(save_dtype)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        hf.model.save_pretrained(tmp)
        hf.tokenizer.save_pretrained(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
