"""Turning a ``--model`` string into a model.

Syntax:
- ``default``: the bundled SmolLM2-135M-Instruct (converted once to the cache, see ``models.bundled``);
- a path to a local transformers folder (``./my-model``, ``/models/llama``);
- a Hugging Face id (``org/name``), loaded from the local hub cache when offline;
- ``openai:MODEL@BASE_URL`` for an OpenAI-compatible endpoint, e.g.
  ``openai:llama3@http://127.0.0.1:8000/v1``; the key comes from ``$REFUSALKIT_API_KEY`` or
  ``$OPENAI_API_KEY``. ``openai:MODEL`` alone uses ``$OPENAI_BASE_URL``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from refusalkit.errors import ModelSpecError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_model_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Return ``(kind, params)`` for a model spec: kind is ``default``, ``local``, ``hub`` or ``openai``.

    Raises ModelSpecError for a spec that fits none of the forms.
    """
    s = spec.strip()
    if not s:
        raise ModelSpecError("empty --model; use 'default', a folder, an org/name hub id, or openai:MODEL@URL")
    if s == "default":
        return "default", {}
    if s.startswith("openai:"):
        rest = s[len("openai:"):]
        model, _, url = rest.partition("@")
        if not model:
            raise ModelSpecError(f"bad endpoint spec {spec!r}: expected openai:MODEL@http://host:port/v1")
        if url and not url.startswith(("http://", "https://")):
            raise ModelSpecError(f"bad endpoint spec {spec!r}: the base URL must start with http:// or https://")
        return "openai", {"model": model, "base_url": url or None}
    p = Path(s).expanduser()
    if p.exists():
        return "local", {"path": str(p)}
    if s.startswith((".", "/", "~")):
        raise ModelSpecError(f"model folder {s!r} does not exist")
    if HUB_ID.match(s):
        return "hub", {"id": s}
    raise ModelSpecError(
        f"unknown model spec {spec!r}: use 'default', a local folder, an org/name hub id, "
        "or openai:MODEL@http://host:port/v1")


def load_model(spec: str, **kw: Any):
    """Return a LanguageModel for ``spec`` (see the module docstring for the syntax)."""
    kind, params = parse_model_spec(spec)
    if kind == "openai":
        from refusalkit.models.openai_compat import OpenAICompatModel
        return OpenAICompatModel(params["model"], params["base_url"], **kw)
    from refusalkit.models.hf import HFModel
    if kind == "default":
        from refusalkit.models.bundled import MODEL_ID, default_model_dir
        return HFModel(default_model_dir(), name=f"default:{MODEL_ID}", **kw)
    return HFModel(params.get("path") or params["id"], **kw)
