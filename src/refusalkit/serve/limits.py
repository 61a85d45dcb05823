"""The server's limits: what one request may ask for, so that no request can exhaust memory or hold the
model for minutes."""

from __future__ import annotations

from dataclasses import dataclass, fields

from refusalkit.errors import RefusalkitError


@dataclass(frozen=True)
class ServerLimits:
    """Per-request and per-server bounds (all checked before any generation).

    ``max_body_bytes``: request body size, from ``Content-Length`` and while reading. ``max_messages``:
    messages in one request. ``max_prompt_tokens``: prompt tokens after chat templating (``None``: the
    model's context); prompt plus ``max_tokens`` must also fit in the context. ``max_tokens``: the largest
    ``max_tokens`` a request may ask for. ``max_n``: choices per request. ``max_queue``: requests waiting
    for or running on the model; past it the server answers 503 with ``Retry-After``.
    """

    max_body_bytes: int = 1 << 20
    max_messages: int = 128
    max_prompt_tokens: int | None = None
    max_tokens: int = 2048
    max_n: int = 8
    max_queue: int = 256

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None and f.name == "max_prompt_tokens":
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise RefusalkitError(f"--{f.name.replace('_', '-')} must be a positive integer (got {v!r})")
