"""OpenAI-style error answers: ``{"error": {"message", "type", "param", "code"}}`` with the right status."""

from __future__ import annotations

import json
from typing import Any


class APIError(Exception):
    """A request the server refuses; ``status`` is the HTTP status and the rest fills the error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """Return the JSON-ready error object."""
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """Return ``{"error": {...}}`` in the shape OpenAI's API and clients use."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_bytes(err: APIError) -> bytes:
    """Return the error object as UTF-8 JSON bytes (for the raw ASGI layer)."""
    return json.dumps(err.body()).encode()


def unauthorized(message: str) -> APIError:
    """Return the 401 answer for a missing or wrong bearer key."""
    return APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def too_large(limit: int) -> APIError:
    """Return the 413 answer for a body over ``limit`` bytes."""
    return APIError(413, f"request body is larger than the server's limit of {limit} bytes", code="request_too_large")
