"""The request body of ``/v1/chat/completions``, parsed and checked into a ``ChatRequest``.

Every malformed body is an ``APIError`` (400) naming the field: bad JSON or UTF-8, NaN/inf or out-of-range
numbers, ints past 64 bits, lone surrogates, unknown roles, and parameters this server does not implement
(rejected rather than silently ignored).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from refusalkit.serve.errors import APIError

INT64 = 2**63
# Accepted and ignored: they change nothing about the answer.
IGNORED = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls", "modalities"})
# Parameters that would change the answer but are not implemented: a 400 says so instead of ignoring them.
UNSUPPORTED = frozenset(
    {
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "response_format",
        "audio",
        "prediction",
        "web_search_options",
        "reasoning_effort",
        "presence_penalty",
        "frequency_penalty",
    }
)

Finite = Annotated[float, Field(allow_inf_nan=False)]


def _valid_unicode(s: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains a lone surrogate (not valid Unicode)") from None
    return s


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    type: Literal["text"]
    text: str

    _unicode = field_validator("text")(_valid_unicode)


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    @field_validator("content")
    @classmethod
    def _unicode(cls, v: Any) -> Any:
        if isinstance(v, str):
            _valid_unicode(v)
        return v

    def as_dict(self) -> dict[str, str]:
        """Return ``{"role", "content"}`` with text parts joined and ``developer`` read as ``system``."""
        content = self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content or [])
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class RefusalRequest(BaseModel):
    """The ``refusal`` body field (refusalkit's extension; OpenAI clients send it through ``extra_body``):
    a named profile of the server, or thresholds per category (full name, short name, or ``*``), not both.
    Whether the names exist is checked against the server's adapter (``serve.refusal``)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    profile: str | None = Field(default=None, min_length=1, max_length=200)
    thresholds: dict[str, Annotated[Finite, Field(ge=0.0, le=1.0)]] | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _one_of(self) -> RefusalRequest:
        if (self.profile is None) == (self.thresholds is None):
            raise ValueError("give exactly one of 'profile' or 'thresholds'")
        if self.thresholds is not None and not self.thresholds:
            raise ValueError("'thresholds' is empty")
        return self


class ChatRequest(BaseModel):
    """A chat completion request as OpenAI's API defines it (the subset this server implements)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, lt=INT64)
    max_completion_tokens: int | None = Field(default=None, ge=1, lt=INT64)
    temperature: Finite = Field(default=1.0, ge=0.0, le=2.0)
    top_p: Finite = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, lt=INT64)
    seed: int | None = Field(default=None, ge=-INT64, lt=INT64)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: dict[str, Annotated[Finite, Field(ge=-100.0, le=100.0)]] | None = None
    refusal: RefusalRequest | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: Any) -> Any:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        for s in stops:
            if not s:
                raise ValueError("stop sequences must not be empty")
            _valid_unicode(s)
        return v

    @property
    def stops(self) -> tuple[str, ...]:
        """Return the stop sequences as a tuple."""
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    @property
    def requested_max_tokens(self) -> int | None:
        """Return ``max_completion_tokens`` or ``max_tokens``, whichever was given (None: neither)."""
        return self.max_completion_tokens or self.max_tokens


def _param(loc: tuple[Any, ...]) -> str:
    # Pydantic puts the union member's type name into loc ("content.str"); keep the field path only.
    parts = [str(p) for p in loc if isinstance(p, int) or not str(p).startswith(("str", "list[", "function-"))]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Return the checked ``ChatRequest`` for a raw body; raise ``APIError`` (400) naming what is wrong."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise APIError(400, f"request body is not valid UTF-8 (byte {e.start})") from None
    except (ValueError, RecursionError) as e:
        raise APIError(400, f"request body is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object")
    for key in data:
        if key in UNSUPPORTED and data[key] not in (None, 0, [], "none", {"type": "text"}):
            raise APIError(
                400, f"parameter '{key}' is not supported by this server", param=key, code="unsupported_parameter"
            )
    data = {k: v for k, v in data.items() if k not in IGNORED and k not in UNSUPPORTED}
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        param = _param(err["loc"])
        if err["type"] == "extra_forbidden":
            raise APIError(400, f"unknown parameter '{param}'", param=param, code="unknown_parameter") from None
        msg = err["msg"].removeprefix("Value error, ")
        raise APIError(400, f"{param or 'body'}: {msg}", param=param or None, code="invalid_value") from None
