"""Direction artifacts: a folder with ``directions.safetensors`` (tensors only) and ``card.json`` (what the
tensors are: the model's id and weights fingerprint, layers, positions, data, selection figures), plus a
``manifest.json`` of SHA-256s (``refusalkit.artifacts``). Loading verifies the manifest, and checking
against a model refuses a direction that was extracted from another model (RefusalkitError, exit 2 in the
CLI). No pickle anywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from refusalkit.artifacts import read_json, verify, write_artifact
from refusalkit.errors import RefusalkitError

KIND = "refusalkit-latent-directions"
FORMAT = 1
TENSORS = "directions.safetensors"
CARD = "card.json"


@torch.no_grad()
def weights_fingerprint(model: torch.nn.Module) -> str:
    """Return a SHA-256 fingerprint of a model's weights: every tensor's name, shape and its first and last
    512 values (as float32, so bf16 and fp32 copies of one checkpoint agree). Fast on multi-GB models and
    different for any two checkpoints that differ in architecture or trained values."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        flat = t.detach().reshape(-1)
        h.update(f"{name}:{tuple(t.shape)}".encode())
        if flat.is_floating_point():
            part = torch.cat([flat[:512], flat[-512:]]).float().cpu().contiguous()
            h.update(part.numpy().tobytes())
    return h.hexdigest()


@dataclass
class DirectionArtifact:
    """Loaded direction tensors (name -> tensor) and their card."""

    tensors: dict[str, torch.Tensor]
    card: dict[str, Any]
    path: Path | None = None

    def check_model(self, model: torch.nn.Module, model_name: str = "") -> None:
        """Raise RefusalkitError unless ``model`` has the weights these directions were extracted from."""
        want = self.card.get("model", {}).get("fingerprint")
        got = weights_fingerprint(model)
        if want != got:
            raise RefusalkitError(
                f"direction {self.path or ''} was extracted from model {self.card.get('model', {}).get('id')!r} "
                f"(weights {str(want)[:12]}), not from {model_name or 'this model'} (weights {got[:12]}); "
                "extract a direction for this model with `refusalkit latent extract`"
            )

    def tensor(self, name: str) -> torch.Tensor:
        """Return the tensor ``name`` or raise RefusalkitError naming the artifact."""
        if name not in self.tensors:
            raise RefusalkitError(f"direction artifact {self.path or ''} has no tensor {name!r}")
        return self.tensors[name]


def save_artifact(
    folder: str | Path,
    tensors: dict[str, torch.Tensor],
    card: dict[str, Any],
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write the artifact folder (whole or not at all, via ``refusalkit.artifacts.write_artifact``) and return it.

    ``extra_files`` (name -> bytes: plots, the HTML report) are written beside the card and listed in the
    manifest too.
    """
    from safetensors.torch import save

    data = save({k: v.detach().float().cpu().clone().contiguous() for k, v in tensors.items()})  # own memory
    return write_artifact(folder, {TENSORS: data, **(extra_files or {})}, {"kind": KIND, "format": FORMAT, **card})


def read_checked(
    folder: str | Path, *, kind: str, fmt: int, tensors_file: str, what: str, create: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """Return ``(tensors, card, path)`` of a latent artifact folder (a card, a safetensors file and a manifest)
    after checking the manifest and the card's ``kind`` and ``format``; RefusalkitError names what is wrong
    (``what`` names the artifact, ``create`` the command that makes one)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(folder)
    if not (p / CARD).is_file():
        raise RefusalkitError(f"{p}: not a {what} artifact (no {CARD}); create one with `{create}`")
    verify(p, required=True)
    card = read_json(p / CARD, "card")
    if not isinstance(card, dict) or card.get("kind") != kind:
        got = card.get("kind") if isinstance(card, dict) else None
        raise RefusalkitError(f"{p / CARD}: field 'kind' is {got!r}, expected {kind!r} (not a {what} artifact)")
    if card.get("format") != fmt:
        raise RefusalkitError(f"{p / CARD}: field 'format' is {card.get('format')!r}; this refusalkit reads {fmt}")
    try:
        tensors = load_file(str(p / tensors_file))
    except (SafetensorError, OSError) as e:
        raise RefusalkitError(f"{p / tensors_file}: cannot read ({e})") from None
    return tensors, card, p


def load_artifact(folder: str | Path) -> DirectionArtifact:
    """Return the direction artifact in ``folder`` after checking its manifest; RefusalkitError names what is
    wrong."""
    tensors, card, p = read_checked(
        folder, kind=KIND, fmt=FORMAT, tensors_file=TENSORS, what="direction", create="refusalkit latent extract"
    )
    return DirectionArtifact(tensors, card, p)
