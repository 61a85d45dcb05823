"""A FastAPI app exposing a local ``HFModel`` as ``/v1/chat/completions`` and ``/v1/models``.

It serves one request at a time (a CPU model gains nothing from concurrency), checks a bearer API key
when one is configured, and honours ``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``,
``logprobs``/``top_logprobs`` and ``logit_bias``. Bind it to 127.0.0.1 unless you mean to share it.
"""

from __future__ import annotations

import hmac
import threading
import time
import uuid
from typing import Any

import torch
from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

from refusalkit.models.base import GenerationConfig
from refusalkit.models.hf import HFModel


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=8192)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: dict[str, float] | None = None


class LogitBias:
    """A logits processor adding fixed biases to token ids (the OpenAI ``logit_bias`` semantics)."""

    def __init__(self, bias: dict[int, float]):
        self.ids = torch.tensor(list(bias.keys()), dtype=torch.long)
        self.values = torch.tensor(list(bias.values()), dtype=torch.float)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores[:, self.ids] += self.values.to(scores.dtype)
        return scores


def create_app(model: HFModel, *, api_key: str | None = None, max_tokens_default: int = 256) -> FastAPI:
    """Return a FastAPI app serving ``model``; requests need ``Authorization: Bearer API_KEY`` if set."""
    app = FastAPI(title="refusalkit server")
    lock = threading.Lock()
    vocab = len(model.tokenizer)

    def check_key(authorization: str | None = Header(default=None)) -> None:
        if api_key is None:
            return
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(token, api_key):
            raise HTTPException(status_code=401, detail={"error": {"message": "invalid API key",
                                                                   "type": "invalid_request_error"}})

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model.name, "object": "model", "owned_by": "refusalkit"}]}

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    def chat(req: ChatRequest) -> dict[str, Any]:
        bias: dict[int, float] = {}
        for k, v in (req.logit_bias or {}).items():
            try:
                tid = int(k)
            except ValueError:
                raise HTTPException(400, detail={"error": {"message": f"logit_bias key {k!r} is not a token id"}})
            if not 0 <= tid < vocab:
                raise HTTPException(400, detail={"error": {"message": f"logit_bias token id {tid} out of range"}})
            bias[tid] = max(-100.0, min(100.0, float(v)))
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        cfg = GenerationConfig(max_new_tokens=req.max_completion_tokens or req.max_tokens or max_tokens_default,
                               temperature=req.temperature, top_p=req.top_p, seed=req.seed, stop=stop)
        msgs = [m.model_dump() for m in req.messages]
        with lock:
            gen = model.generate([msgs], cfg, logits_processor=LogitBias(bias) if bias else None,
                                 logprobs=(req.top_logprobs or 0) if req.logprobs else None)[0]
        prompt_tokens = int(model.encode([msgs])["input_ids"].shape[1])
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": gen.text},
                                  "finish_reason": gen.finish_reason, "logprobs": gen.meta.get("logprobs")}
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": model.name, "choices": [choice],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": gen.n_tokens,
                          "total_tokens": prompt_tokens + gen.n_tokens}}

    return app
