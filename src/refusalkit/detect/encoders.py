"""Sentence encoders for embedding features: the bundled all-MiniLM-L6-v2, or a local folder the user
trusts (any sentence-transformers or plain transformers encoder saved as safetensors, e.g. all-mpnet-base-v2).

A user folder is never fetched from a hub, never runs remote code and must hold ``*.safetensors`` weights
(no pickle). A classifier trained on a user encoder records the encoder's path and the sha256 of its
weights, so that it is never silently applied with a different encoder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from refusalkit.errors import RefusalkitError


def check_encoder_dir(folder: str | Path) -> Path:
    """Return ``folder`` resolved, after checking that it holds a local encoder with safetensors weights."""
    p = Path(folder).expanduser()
    if not p.is_dir():
        raise RefusalkitError(
            f"encoder {folder}: not a folder (give the local folder of a sentence-transformers "
            "or transformers encoder; hub ids are not fetched)"
        )
    if not (p / "config.json").is_file():
        raise RefusalkitError(f"encoder {p}: no config.json; not a transformers model folder")
    if not weight_files(p):
        raise RefusalkitError(
            f"encoder {p}: no *.safetensors weights (pickled weights such as pytorch_model.bin are not loaded)"
        )
    return p.resolve()


def weight_files(folder: Path) -> list[Path]:
    """Return the safetensors weight files of an encoder folder, sorted."""
    return sorted(folder.glob("*.safetensors"))


def encoder_sha256(folder: str | Path) -> str:
    """Return one sha256 over the encoder's safetensors weight files (names and contents, in order)."""
    from refusalkit.artifacts import update_sha256

    h = hashlib.sha256()
    for f in weight_files(check_encoder_dir(folder)):
        h.update(f.name.encode())
        update_sha256(h, f)
    return h.hexdigest()


def verify_encoder(folder: str | Path, sha256: str | None, *, owner: str) -> Path:
    """Return the checked encoder folder; raise when its weights differ from ``sha256`` (recorded when
    ``owner``, a saved model, was trained)."""
    try:
        p = check_encoder_dir(folder)
    except RefusalkitError as e:
        raise RefusalkitError(
            f"{owner} was trained with the encoder at {folder}, which cannot be used here: {e}"
        ) from None
    if sha256 and encoder_sha256(p) != sha256:
        raise RefusalkitError(
            f"{owner} was trained with the encoder at {folder} (weights sha256 {sha256[:12]}...), "
            "but that folder now holds different weights; retrain the classifier"
        )
    return p
