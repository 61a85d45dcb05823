"""Refusal probes (the refusal-cliff paper, PAPERS.md section 5): a logistic probe per layer (d -> 1) on the
residual stream at the last prompt position, standardised, calibrated on validation prompts, with the best
layer chosen by validation AUROC.

Labels are 1 for "the model refuses" and 0 for "the model answers": by default the harmful and harmless
instruction splits (harmful = 1), or the detector's verdicts on the model's own responses (``labels_from_responses``).
The probe reads the input of each decoder layer (the same tensors ``capture`` records), so a score at layer
``l`` is ``sigmoid(a * (w_l . (h - mu_l) / sd_l + b_l) + c)`` with the Platt scaling ``(a, c)`` fitted on the
validation prompts.

Artifact folder: ``probe.safetensors`` (``mean``, ``scale``, ``weight`` ``[layers, d]``, ``bias`` ``[layers]``),
``card.json`` (model id and weights fingerprint, layers, the best layer, per-layer validation AUROC, the
calibration, every prompt id and the data files' SHA-256s) and ``manifest.json`` (``refusalkit.artifacts``),
checked on load; a probe used with another model is refused (RefusalkitError, exit 2 in the CLI).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from refusalkit.artifacts import file_sha256, write_artifact
from refusalkit.errors import RefusalkitError
from refusalkit.latent import capture as cap
from refusalkit.latent.artifact import read_checked, weights_fingerprint
from refusalkit.latent.guard import auroc
from refusalkit.latent.layers import hidden_size, layer_stack

log = logging.getLogger(__name__)

KIND = "refusalkit-latent-probe"
FORMAT = 1
TENSORS = "probe.safetensors"
CARD = "card.json"


@dataclass
class Probe:
    """Fitted per-layer probes: standardisation ``mean``/``scale`` and logistic ``weight`` ``[layers, d]``,
    ``bias`` ``[layers]``; ``layer`` is the chosen layer and ``calib = (a, c)`` its Platt scaling."""

    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    layer: int
    calib: tuple[float, float] = (1.0, 0.0)
    card: dict[str, Any] | None = None
    path: Path | None = None

    @property
    def n_layers(self) -> int:
        """Return the number of layers the probe has weights for."""
        return int(self.weight.shape[0])

    def logit(self, h: torch.Tensor, layer: int | None = None) -> np.ndarray:
        """Return the uncalibrated probe logit of each row of ``h`` (``[..., d]``) at ``layer`` (default: the
        chosen layer), as a float64 array of ``h``'s leading shape."""
        li = self.layer if layer is None else int(layer)
        x = (h.float() - self.mean[li]) / self.scale[li]
        return (x @ self.weight[li] + self.bias[li]).double().numpy()

    def score(self, h: torch.Tensor, layer: int | None = None) -> np.ndarray:
        """Return the calibrated probability of refusal (0..1) for each row of ``h`` at ``layer`` (default: the
        chosen layer, the only one the calibration was fitted for; other layers use the plain logistic)."""
        z = self.logit(h, layer)
        if layer is None or int(layer) == self.layer:
            a, c = self.calib
            z = a * z + c
        return 1.0 / (1.0 + np.exp(-z))

    def check_model(self, model: torch.nn.Module, model_name: str = "") -> None:
        """Raise RefusalkitError unless ``model`` has the weights this probe was trained on."""
        m = (self.card or {}).get("model", {})
        got = weights_fingerprint(model)
        if m.get("fingerprint") != got:
            raise RefusalkitError(
                f"probe {self.path or ''} was trained on model {m.get('id')!r} (weights "
                f"{str(m.get('fingerprint'))[:12]}), not on {model_name or 'this model'} (weights {got[:12]}); "
                "train a probe for this model with `refusalkit latent probe train`"
            )


def fit_layer(
    X_train: np.ndarray, y_train: np.ndarray, *, c: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Return ``(mean, scale, weight, bias)`` of a standardised, class-balanced L2 logistic regression of
    ``y_train`` (0/1) on ``X_train`` ``[n, d]`` (``c``: inverse regularisation strength, as scikit-learn)."""
    from sklearn.linear_model import LogisticRegression

    X = np.asarray(X_train, dtype=np.float64)
    mu = X.mean(0)
    sd = X.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)  # constant features (e.g. a dead dimension) stay at 0
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
    clf.fit((X - mu) / sd, np.asarray(y_train))
    return mu, sd, clf.coef_[0], float(clf.intercept_[0])


def platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Return the Platt scaling ``(a, c)``: ``sigmoid(a * z + c)`` fitted to labels ``y`` (0/1) by a
    class-balanced one-feature logistic regression, so 0.5 is the balanced threshold."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y)
    if y.min() == y.max():
        raise RefusalkitError("calibration needs validation prompts of both classes")
    # moderate regularisation: a small, often separable validation set would otherwise give an unbounded slope
    clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    clf.fit(np.asarray(z, dtype=np.float64).reshape(-1, 1), y)
    return float(clf.coef_[0, 0]), float(clf.intercept_[0])


def fit_probe(
    X_train: torch.Tensor,
    y_train: np.ndarray,
    X_val: torch.Tensor,
    y_val: np.ndarray,
    *,
    c: float = 1.0,
    seed: int = 0,
    on_layer: Callable[[int, float], None] | None = None,
) -> tuple[Probe, list[float]]:
    """Fit a probe per layer on ``X_train`` ``[n, layers, d]`` and choose the layer with the highest validation
    AUROC on ``X_val`` (ties: the lower validation log-loss decides; layer 0, the embedding, only for a one-layer
    model); return ``(probe, per-layer validation AUROC)``. The chosen layer is Platt-calibrated on the
    validation prompts."""
    y_train, y_val = np.asarray(y_train, dtype=int), np.asarray(y_val, dtype=int)
    for name, y in (("training", y_train), ("validation", y_val)):
        if len(y) == 0 or y.min() == y.max():
            raise RefusalkitError(f"the {name} prompts must include both classes (refused and answered)")
    n_layers = X_train.shape[1]
    means, scales, weights, biases, aucs, losses = [], [], [], [], [], []
    for li in range(n_layers):
        mu, sd, w, b = fit_layer(X_train[:, li].numpy(), y_train, c=c, seed=seed)
        z = ((X_val[:, li].double().numpy() - mu) / sd) @ w + b
        a = auroc(z, y_val)
        p = np.clip(1 / (1 + np.exp(-z)), 1e-7, 1 - 1e-7)
        losses.append(float(-np.mean(y_val * np.log(p) + (1 - y_val) * np.log(1 - p))))
        means.append(mu)
        scales.append(sd)
        weights.append(w)
        biases.append(b)
        aucs.append(a)
        if on_layer:
            on_layer(li, a)
    # layer 0's input is the token embedding: at the last template token it is the same for every prompt
    first = 1 if n_layers > 1 else 0
    best = max(range(first, n_layers), key=lambda i: (round(aucs[i], 6), -losses[i]))
    probe = Probe(
        mean=torch.tensor(np.stack(means), dtype=torch.float32),
        scale=torch.tensor(np.stack(scales), dtype=torch.float32),
        weight=torch.tensor(np.stack(weights), dtype=torch.float32),
        bias=torch.tensor(biases, dtype=torch.float32),
        layer=best,
    )
    probe.calib = platt(probe.logit(X_val[:, best], best), y_val)
    return probe, aucs


def last_position(hf: Any, system_prompt: str | None = None) -> cap.Positions:
    """Return the capture Positions of the last prompt token (the last template token after the instruction)."""
    return cap.parse_positions("last", len(cap.template_suffix_ids(hf, system_prompt)))


def last_position_acts(
    hf: Any, prompts: list[Any], *, layers: list[int] | None = None, batch_size: int = 8, **kw: Any
) -> torch.Tensor:
    """Return the residual stream at the last prompt position, ``[n, layers, d]`` (float32, CPU)."""
    pos = last_position(hf, kw.get("system_prompt"))
    return cap.capture(hf, prompts, pos, layers=layers, batch_size=batch_size, **kw)[:, :, 0, :]


def prompt_scores(hf: Any, probe: Probe, prompts: list[Any], *, batch_size: int = 8, **kw: Any) -> np.ndarray:
    """Return the probe's calibrated refusal probability at the last prompt position of each prompt (one
    forward pass each, stopped after the probe's layer)."""
    acts = last_position_acts(hf, prompts, layers=[probe.layer], batch_size=batch_size, **kw)
    return probe.score(acts[:, 0])


def prompt_logits(hf: Any, probe: Probe, prompts: list[Any], *, batch_size: int = 8, **kw: Any) -> np.ndarray:
    """Return the probe's calibrated logit (``a * z + c``, whose sigmoid is ``prompt_scores``) at the last prompt
    position of each prompt: unlike the probability it keeps moving when the probability saturates near 0 or 1."""
    acts = last_position_acts(hf, prompts, layers=[probe.layer], batch_size=batch_size, **kw)
    a, c = probe.calib
    return a * probe.logit(acts[:, 0]) + c


def labels_from_responses(rows: list[dict[str, Any]], detector: Any, *, file: str = "") -> np.ndarray:
    """Return 1 (refused) / 0 (answered) per row from ``detector``'s verdict on the row's ``response`` (the
    model's own answer to ``prompt``). Raises RefusalkitError naming the file for a row without a response."""
    from refusalkit.data.taxonomy import is_refusal
    from refusalkit.errors import InputError

    texts = []
    for i, r in enumerate(rows):
        t = r.get("response")
        if not isinstance(t, str):
            raise InputError(
                "missing or not a string (the model's response is needed for --responses)",
                file=file,
                line=r.get("__line__", i + 1),
                field="response",
            )
        texts.append(t)
    labels = detector.predict(texts, [str(r.get("prompt", "")) for r in rows])
    return np.array([1 if is_refusal(x) else 0 for x in labels], dtype=int)


@dataclass
class ProbeData:
    """Prompts and 0/1 labels for training and validation, with where they came from (for the card)."""

    train: list[Any]
    y_train: np.ndarray
    val: list[Any]
    y_val: np.ndarray
    files: list[str]
    label_source: str


def train_probe(
    hf: Any,
    model_id: str,
    data: ProbeData,
    *,
    c: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    status: Callable[[str], None] | None = None,
) -> tuple[Probe, dict[str, Any]]:
    """Capture the last-position residual stream of every layer for ``data``'s prompts, fit and calibrate the
    probes and return ``(probe, card)`` (``probe.card`` is the card too)."""
    say = status or log.info
    stack = layer_stack(hf.model)
    say(f"capturing {len(data.train)} training + {len(data.val)} validation prompts at {len(stack)} layers")
    X_tr = last_position_acts(hf, [e.prompt for e in data.train], batch_size=batch_size)
    X_va = last_position_acts(hf, [e.prompt for e in data.val], batch_size=batch_size)
    probe, aucs = fit_probe(
        X_tr,
        data.y_train,
        X_va,
        data.y_val,
        c=c,
        seed=seed,
        on_layer=lambda li, a: say(f"  layer {li:>2}: validation AUROC {a:.4f}"),
    )
    card: dict[str, Any] = {
        "model": {
            "id": model_id,
            "name": getattr(hf, "name", model_id),
            "fingerprint": weights_fingerprint(hf.model),
            "architecture": type(hf.model).__name__,
            "n_layers": len(stack),
            "d_model": hidden_size(hf.model),
            "layer_stack": stack.path,
        },
        "position": "last prompt token (input of each decoder layer)",
        "layer": probe.layer,
        "layers": list(range(len(stack))),
        "val_auroc": [round(a, 6) for a in aucs],
        "calibration": {"a": probe.calib[0], "c": probe.calib[1], "method": "platt, balanced, validation"},
        "c": c,
        "seed": seed,
        "labels": data.label_source,
        "data": {
            "files": data.files,
            "sha256": {p: file_sha256(p) for p in data.files},
            "ids": {
                "train": [e.id for e in data.train],
                "y_train": [int(v) for v in data.y_train],
                "val": [e.id for e in data.val],
                "y_val": [int(v) for v in data.y_val],
            },
        },
    }
    probe.card = card
    return probe, card


def save_probe(folder: str | Path, probe: Probe, card: dict[str, Any]) -> Path:
    """Write the probe artifact folder (whole or not at all, with its manifest) and return it."""
    from safetensors.torch import save

    tensors = {"mean": probe.mean, "scale": probe.scale, "weight": probe.weight, "bias": probe.bias}
    data = save({k: v.detach().float().cpu().clone().contiguous() for k, v in tensors.items()})
    return write_artifact(folder, {TENSORS: data}, {"kind": KIND, "format": FORMAT, **card})


def load_probe(folder: str | Path) -> Probe:
    """Return the probe in ``folder`` after checking its manifest and card; RefusalkitError names what is wrong."""
    t, card, p = read_checked(
        folder, kind=KIND, fmt=FORMAT, tensors_file=TENSORS, what="probe", create="refusalkit latent probe train"
    )
    missing = [k for k in ("mean", "scale", "weight", "bias") if k not in t]
    if missing:
        raise RefusalkitError(f"{p / TENSORS}: missing tensor(s) {', '.join(missing)}")
    layer = card.get("layer")
    if not isinstance(layer, int) or not 0 <= layer < t["weight"].shape[0]:
        raise RefusalkitError(f"{p / CARD}: field 'layer' is {layer!r}, not a layer of the probe")
    cal = card.get("calibration") or {}
    return Probe(
        t["mean"],
        t["scale"],
        t["weight"],
        t["bias"],
        layer,
        (float(cal.get("a", 1.0)), float(cal.get("c", 0.0))),
        card,
        p,
    )


def load_probe_for(folder: str | Path, model: str | None = None, *, batch_size: int = 8, dtype: str = "auto"):
    """Return ``(probe, hf)``: the probe and its model (``model`` overrides the card's), checked to be the
    model the probe was trained on."""
    from refusalkit.latent.use import load_hf

    probe = load_probe(folder)
    spec = model or (probe.card or {}).get("model", {}).get("id")
    if not spec:
        raise RefusalkitError(f"{folder}: the card names no model; pass --model")
    hf = load_hf(spec, batch_size=batch_size, dtype=dtype)
    probe.check_model(hf.model, spec)
    return probe, hf


def data_from_splits(
    harmful: str,
    harmless: str,
    *,
    harmful_val: str | None = None,
    harmless_val: str | None = None,
    n_train: int = 260,
    n_val_harmful: int = 39,
    n_val_harmless: int = 39,
    seed: int = 0,
) -> ProbeData:
    """Return ProbeData from the harmful (label 1) and harmless (label 0) instruction files: their ``train``
    rows (a seeded sample of ``n_train`` each) and ``val`` rows (or separate validation files)."""
    from refusalkit.latent.extract import load_split

    tr_h = load_split(harmful, "train", n_train, seed)
    tr_s = load_split(harmless, "train", n_train, seed)
    va_h = load_split(harmful_val or harmful, None if harmful_val else "val", n_val_harmful, seed)
    va_s = load_split(harmless_val or harmless, None if harmless_val else "val", n_val_harmless, seed)
    overlap = {e.prompt for e in tr_h + tr_s} & {e.prompt for e in va_h + va_s}
    if overlap:
        raise RefusalkitError(f"{len(overlap)} validation prompt(s) also appear in the training prompts")
    files = sorted({p for p in (harmful, harmless, harmful_val, harmless_val) if p})
    return ProbeData(
        tr_h + tr_s,
        np.array([1] * len(tr_h) + [0] * len(tr_s)),
        va_h + va_s,
        np.array([1] * len(va_h) + [0] * len(va_s)),
        files,
        "harmful (1) vs harmless (0) instructions",
    )


def data_from_responses(path: str, detector: Any, *, val_frac: float = 0.25, seed: int = 0) -> ProbeData:
    """Return ProbeData from a file of the model's own responses (``prompt``, ``response``, e.g. the output of
    ``refusalkit generate``), labelled by ``detector`` (1 = refused). Rows with ``split`` ``val`` (else a seeded
    ``val_frac``, stratified by label) are the validation prompts; ``test`` rows are left out."""
    import random

    from refusalkit.data.io import read_records, rows_to_examples
    from refusalkit.errors import InputError

    if not Path(path).is_file():
        raise InputError("no such file", file=path)
    rows = [r for r in read_records(path) if r.get("split") != "test"]
    ex = rows_to_examples(rows, file=path, source=Path(path).stem)
    y = labels_from_responses(rows, detector, file=path)
    if any("split" in r for r in rows):
        is_val = [r.get("split") == "val" for r in rows]
    else:
        rng = random.Random(seed)
        is_val = [False] * len(rows)
        for cls in (0, 1):
            idx = [i for i in range(len(rows)) if y[i] == cls]
            rng.shuffle(idx)
            for i in idx[: max(1, round(val_frac * len(idx)))] if len(idx) > 1 else []:
                is_val[i] = True
    tr = [i for i in range(len(rows)) if not is_val[i]]
    va = [i for i in range(len(rows)) if is_val[i]]
    for name, idx in (("training", tr), ("validation", va)):
        if len({int(y[i]) for i in idx}) < 2:
            raise InputError(
                f"the {name} rows need both refused and answered responses (the detector judged "
                f"{int(y.sum())} of {len(y)} refusals)",
                file=path,
                field="response",
            )
    return ProbeData(
        [ex[i] for i in tr],
        y[tr],
        [ex[i] for i in va],
        y[va],
        [path],
        f"detector verdicts on the model's responses ({getattr(detector, 'name', 'detector')}): refused (1) vs answered (0)",
    )
