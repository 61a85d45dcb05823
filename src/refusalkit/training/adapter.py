"""Loading a plain LoRA adapter (as ``refusalkit train derta`` writes, or any peft LoRA adapter folder) onto
a local model, merged into its weights so generation runs at the base model's speed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from refusalkit.artifacts import ArtifactError, file_sha256, verify
from refusalkit.errors import RefusalkitError

if TYPE_CHECKING:
    from refusalkit.models.hf import HFModel

NEEDS = ("adapter_config.json", "adapter_model.safetensors")


def check_adapter(adapter: str | os.PathLike) -> Path:
    """Return the adapter folder after checking it: its manifest (when it has one), the peft files, and
    that it is not a refusal-token adapter (those add tokens; use ``refusalkit tokens generate``)."""
    p = Path(adapter).expanduser()
    if not p.is_dir():
        raise RefusalkitError(f"--adapter {p}: no such folder")
    verify(p)
    missing = [f for f in NEEDS if not (p / f).is_file()]
    if missing:
        raise ArtifactError(p, f"not a LoRA adapter folder (missing {', '.join(missing)})")
    if (p / "refusal_tokens.json").is_file():
        raise RefusalkitError(
            f"--adapter {p} is a refusal-token adapter; generate with it through `refusalkit tokens generate`"
        )
    return p


def adapter_id(adapter: str | os.PathLike) -> str:
    """Return a short identity of an adapter's weights (the first 16 hex digits of their SHA-256), used
    to key runs made with it."""
    return file_sha256(Path(adapter) / "adapter_model.safetensors")[:16]


def load_adapted(model: str, adapter: str | os.PathLike, *, batch_size: int = 16) -> HFModel:
    """Return the local ``model`` (a ``--model`` spec) with the LoRA adapter merged into its weights; its
    ``name`` is ``MODEL+ADAPTER_FOLDER_NAME``. Raises RefusalkitError for an endpoint or a bad adapter."""
    from peft import PeftModel

    from refusalkit.models.spec import load_local_model

    p = check_adapter(adapter)
    hf = load_local_model(model, batch_size=batch_size)
    try:
        pm = PeftModel.from_pretrained(hf.model, str(p))
    except Exception as e:  # shape mismatch (another base model), bad config, damaged weights
        raise ArtifactError(
            p, f"cannot load the LoRA adapter: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
        ) from None
    hf.model = pm.merge_and_unload()
    hf.model.eval()
    hf.name = f"{hf.name}+{p.name}"
    return hf
