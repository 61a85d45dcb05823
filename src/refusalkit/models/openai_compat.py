"""``OpenAICompatModel``: any server with an OpenAI-compatible ``/v1/chat/completions`` endpoint.

Works with vLLM, llama.cpp server, Ollama, refusalkit's own server and hosted APIs. Requests run with
bounded concurrency, a timeout, and retries with exponential backoff on 429 and 5xx answers (honouring
``Retry-After``) and on network errors. A refused connection before the endpoint has ever answered is retried
once only: nothing listens there, and five backoffs would keep the user waiting ~16 s for the same error. ``logprobs``/``top_logprobs`` and ``logit_bias`` are passed through.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from refusalkit.errors import RefusalkitError
from refusalkit.models.base import Generation, GenerationConfig, PromptLike, to_messages
from refusalkit.models.spec import redact

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def api_key_from_env() -> str | None:
    """Return the client API key: ``$REFUSALKIT_API_KEY``, else the first line of the file named by
    ``$REFUSALKIT_API_KEY_FILE``, else ``$OPENAI_API_KEY``, else None.

    A key file keeps the key out of the environment of child processes and out of shell history. Raises
    RefusalkitError (naming the variable and file, never the key) for an unreadable or empty key file.
    """
    key = os.environ.get("REFUSALKIT_API_KEY", "").strip()
    if key:
        return key
    path = os.environ.get("REFUSALKIT_API_KEY_FILE", "").strip()
    if path:
        try:
            lines = [ln.strip() for ln in Path(path).expanduser().read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise RefusalkitError(f"REFUSALKIT_API_KEY_FILE={path}: cannot read it ({type(e).__name__})") from None
        keys = [ln for ln in lines if ln]
        if len(keys) != 1:
            raise RefusalkitError(f"REFUSALKIT_API_KEY_FILE={path}: must hold the key alone on one line")
        return keys[0]
    return os.environ.get("OPENAI_API_KEY", "").strip() or None


class EndpointError(RefusalkitError):
    """The endpoint failed for good (a non-retryable status, or retries exhausted)."""

    def __init__(self, message: str, status: int | None = None, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body


class OpenAICompatModel:
    """A chat model served over HTTP.

    ``api_key`` defaults to :func:`api_key_from_env` (``$REFUSALKIT_API_KEY``, ``$REFUSALKIT_API_KEY_FILE``,
    ``$OPENAI_API_KEY``); ``base_url`` to ``$OPENAI_BASE_URL``. Credentials in ``base_url`` are used but
    masked in ``name`` and in error messages. ``logit_bias`` (token id -> bias) is sent with every request unless a call
    overrides it through ``GenerationConfig.extra``.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        logprobs: int | None = None,
        logit_bias: dict[int, float] | None = None,
        name: str | None = None,
    ):
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise RefusalkitError("no base URL: use --model openai:MODEL@http://host:port/v1 or set OPENAI_BASE_URL")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or api_key_from_env()
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.logprobs = logprobs
        self.logit_bias = logit_bias
        self._answered = False  # has the endpoint ever answered? (see post)
        self.name = name or f"openai:{model}@{redact(self.base_url)}"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._client = httpx.Client(
            timeout=timeout, headers=headers, limits=httpx.Limits(max_connections=self.concurrency)
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def payload(self, prompt: PromptLike, cfg: GenerationConfig) -> dict[str, Any]:
        """Return the JSON body for one chat completion request."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": to_messages(prompt, cfg.system_prompt),
            "max_tokens": cfg.max_new_tokens,
            "temperature": cfg.temperature,
        }
        if cfg.top_p != 1.0:
            body["top_p"] = cfg.top_p
        if cfg.seed is not None:
            body["seed"] = cfg.seed
        if cfg.stop:
            body["stop"] = list(cfg.stop)
        if self.logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = self.logprobs
        if self.logit_bias:
            body["logit_bias"] = {str(k): v for k, v in self.logit_bias.items()}
        body.update(cfg.extra)
        return body

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``base_url + path`` with retries; return the decoded JSON answer."""
        url = self.base_url + path
        last: str = ""
        for attempt in range(self.max_retries + 1):
            try:
                r = self._client.post(url, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last = redact(f"{type(e).__name__}: {e}")
                status, retry_after = None, None
                if isinstance(e, httpx.ConnectError) and not self._answered and attempt >= 1:
                    raise EndpointError(f"nothing answered at {redact(url)} ({last}); is the server running?") from None
            else:
                self._answered = True
                if r.status_code < 400:
                    return r.json()
                status = r.status_code
                try:
                    err_body: Any = r.json()
                except ValueError:
                    err_body = r.text
                if status not in RETRY_STATUS:
                    raise EndpointError(
                        f"{redact(url)} answered {status}: {redact(str(err_body)[:300])}", status, err_body
                    )
                last = f"HTTP {status}"
                retry_after = r.headers.get("retry-after")
            if attempt == self.max_retries:
                break
            delay = self.backoff * (2**attempt) * (1 + random.random() * 0.25)
            if retry_after:
                try:
                    delay = max(delay, float(retry_after))
                except ValueError:
                    pass
            time.sleep(min(delay, 60.0))
        raise EndpointError(f"{redact(url)} failed after {self.max_retries + 1} attempts ({last})")

    def _one(self, prompt: PromptLike, cfg: GenerationConfig) -> Generation:
        data = self.post("/chat/completions", self.payload(prompt, cfg))
        choice = (data.get("choices") or [{}])[0]
        msg = choice.get("message") or {}
        text = msg.get("content") or ""
        usage = data.get("usage") or {}
        meta: dict[str, Any] = {}
        if choice.get("logprobs") is not None:
            meta["logprobs"] = choice["logprobs"]
        if msg.get("refusal"):
            meta["refusal"] = msg["refusal"]
        return Generation(
            text=text.strip(),
            n_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=choice.get("finish_reason") or "stop",
            meta=meta,
        )

    def generate(self, prompts: list[PromptLike], config: GenerationConfig | None = None) -> list[Generation]:
        """Return one Generation per prompt, in order, sending up to ``concurrency`` requests at once."""
        cfg = config or GenerationConfig()
        if len(prompts) <= 1 or self.concurrency == 1:
            return [self._one(p, cfg) for p in prompts]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(lambda p: self._one(p, cfg), prompts))
