"""A FastAPI app exposing a local ``HFModel`` as ``/v1/chat/completions``, ``/v1/models`` and ``/health``.

Requests pass, in order: the bearer key (checked from the headers, before the body is read), the body size
(from ``Content-Length``, then while reading), JSON and field checks (NaN/inf, ranges, lone surrogates,
unsupported parameters), the message count, ``n`` and ``max_tokens`` bounds, and the prompt's token count
against the model's context. Each failure is a 401/413/400 with an OpenAI-style error object; none reaches
the model. Generation runs in a worker thread, one ``generate`` call at a time (``serve.engine``), so
the server keeps answering while it runs; concurrent compatible requests share a call
(``serve.batching``). ``stream: true`` sends Server-Sent Events in OpenAI's chunk format as tokens are
generated; ``n`` choices are generated together. Bind to 127.0.0.1 unless you mean to share it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from refusalkit.models.base import Generation, GenerationConfig
from refusalkit.models.context import context_size, render_chat
from refusalkit.models.hf import HFModel
from refusalkit.serve.batching import BatchingEngine
from refusalkit.serve.engine import Job, SerialEngine
from refusalkit.serve.errors import APIError, error_body, error_bytes
from refusalkit.serve.guard import GuardMiddleware
from refusalkit.serve.limits import ServerLimits
from refusalkit.serve.metrics import Metrics, MetricsMiddleware
from refusalkit.serve.prefilter import PromptGuard, guard_refusal
from refusalkit.serve.refusal import RefusalControl, RequestPolicy
from refusalkit.serve.schema import ChatRequest, parse_chat_request

log = logging.getLogger(__name__)


class LogitBias:
    """A logits processor adding fixed biases to token ids (the OpenAI ``logit_bias`` semantics)."""

    def __init__(self, bias: dict[int, float]):
        self.ids = torch.tensor(list(bias.keys()), dtype=torch.long)
        self.values = torch.tensor(list(bias.values()), dtype=torch.float)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores[:, self.ids] += self.values.to(scores.dtype)
        return scores


def model_context(model: HFModel) -> int | None:
    """Return the model's context length in tokens (its config, capped by the tokenizer), or None if unknown."""
    return context_size(model.model.config, model.tokenizer)


class PromptCounter:
    """Counts a request's prompt tokens after chat templating, off the generation thread.

    It uses its own copy of the tokenizer under its own lock: a fast tokenizer is not thread-safe (a count
    in one thread switches padding off under a padded batch encode in the generation thread, which then
    fails), and counting must not wait for the model's lock.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = copy.deepcopy(tokenizer)
        self.lock = threading.Lock()

    def __call__(self, messages: list[dict[str, str]]) -> int:
        """Return the token count of ``messages`` as the model will see them; a template error is a 400."""
        with self.lock:
            try:
                text = render_chat(self.tokenizer, messages)
            except Exception as e:  # jinja2 raises its own errors for e.g. roles out of order
                raise APIError(
                    400, f"messages cannot be rendered by the model's chat template: {str(e)[:200]}", param="messages"
                ) from None
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def _logit_bias(req: ChatRequest, vocab: int) -> LogitBias | None:
    bias: dict[int, float] = {}
    for k, v in (req.logit_bias or {}).items():
        try:
            tid = int(k)
        except ValueError:
            raise APIError(400, f"logit_bias key {k!r} is not a token id", param="logit_bias") from None
        if not 0 <= tid < vocab:
            raise APIError(400, f"logit_bias token id {tid} is out of range [0, {vocab})", param="logit_bias")
        bias[tid] = float(v)
    return LogitBias(bias) if bias else None


def _check_limits(req: ChatRequest, limits: ServerLimits) -> None:
    if len(req.messages) > limits.max_messages:
        raise APIError(
            400,
            f"{len(req.messages)} messages; this server accepts at most {limits.max_messages}",
            param="messages",
            code="too_many_messages",
        )
    if req.n > limits.max_n:
        raise APIError(400, f"n is {req.n}; this server generates at most {limits.max_n} choices", param="n")
    mt = req.requested_max_tokens
    if mt is not None and mt > limits.max_tokens:
        raise APIError(
            400,
            f"max_tokens is {mt}; this server allows at most {limits.max_tokens}",
            param="max_completion_tokens" if req.max_completion_tokens else "max_tokens",
        )
    if req.top_logprobs is not None and not req.logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    if req.stream and req.logprobs:
        raise APIError(400, "logprobs are not supported with stream: true", param="logprobs")


def _request_policy(req: ChatRequest, refusal: RefusalControl | None) -> RequestPolicy | None:
    """Return the request's refusal policy (its ``refusal`` field, else the server default), None on a
    server without a refusal-token adapter; 400 for what cannot be combined with a policy."""
    if refusal is None:
        if req.refusal is not None:
            raise APIError(
                400,
                "this server has no refusal-token adapter: start it with `refusalkit serve --adapter ...` "
                "to use the 'refusal' field",
                param="refusal",
                code="unsupported_parameter",
            )
        return None
    policy = refusal.resolve(req.refusal)
    # the policy decides the first token from the model's probabilities: a bias would change what it
    # decides on, and the log-probabilities of forced tokens say nothing about the model
    if req.logit_bias:
        raise APIError(400, "logit_bias cannot be combined with refusal-token control", param="logit_bias")
    if req.logprobs:
        raise APIError(
            400,
            "logprobs are not available under refusal-token control (the first token is forced); the "
            "response's 'refusal' object has the control-token probabilities",
            param="logprobs",
        )
    return policy


def _choose_max_tokens(
    req: ChatRequest, prompt_tokens: int, ctx: int | None, limits: ServerLimits, default: int
) -> int:
    cap = limits.max_prompt_tokens if limits.max_prompt_tokens is not None else ctx
    if cap is not None and prompt_tokens > cap:
        what = "this model's context" if cap == ctx else "this server's limit (--max-prompt-tokens)"
        raise APIError(
            400,
            f"the prompt is {prompt_tokens} tokens, more than {what} of {cap} tokens",
            param="messages",
            code="context_length_exceeded",
        )
    asked = req.requested_max_tokens
    if ctx is None:
        return asked or default
    room = ctx - prompt_tokens
    if asked is not None and asked > room:
        raise APIError(
            400,
            f"this model's context is {ctx} tokens; the prompt is {prompt_tokens} tokens and "
            f"max_tokens {asked}: reduce the prompt or max_tokens",
            param="messages",
            code="context_length_exceeded",
        )
    if asked is None and room < 1:
        raise APIError(
            400,
            f"the prompt is {prompt_tokens} tokens and fills this model's context ({ctx})",
            param="messages",
            code="context_length_exceeded",
        )
    return asked if asked is not None else min(default, room)


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


def create_app(
    model: HFModel,
    *,
    api_key: str | None = None,
    max_tokens_default: int = 256,
    limits: ServerLimits | None = None,
    max_batch: int = 16,
    batch_wait_s: float = 0.005,
    max_batch_tokens: int = 8192,
    refusal: RefusalControl | None = None,
    guard: PromptGuard | None = None,
) -> FastAPI:
    """Return a FastAPI app serving ``model``; with ``api_key`` every path but ``/health`` needs
    ``Authorization: Bearer API_KEY``. ``limits`` bounds each request (see ``ServerLimits``); concurrent
    compatible requests are generated in batches of up to ``max_batch`` sequences (1: one at a time) and
    ``max_batch_tokens`` padded tokens. With ``refusal`` (whose ``hf`` must be ``model``) every request is
    generated under a refusal-token policy: its ``refusal`` field's, or the server default. With ``guard``
    (bound to its model) every prompt is scored first; the response carries a ``guard`` object, and with the
    action ``refuse`` a flagged prompt is answered with a fixed refusal without generating."""
    limits = limits or ServerLimits()
    if refusal is not None and refusal.hf is not model:
        raise ValueError("refusal.hf must be the served model")
    engine: SerialEngine
    if max_batch > 1:
        engine = BatchingEngine(
            model,
            max_queue=limits.max_queue,
            max_batch=max_batch,
            max_wait_s=batch_wait_s,
            max_batch_tokens=max_batch_tokens,
        )
    else:
        engine = SerialEngine(model, max_queue=limits.max_queue, max_batch_tokens=max_batch_tokens)
    ctx = model_context(model)
    vocab = len(model.tokenizer)
    count_prompt_tokens = PromptCounter(model.tokenizer)
    app = FastAPI(title="refusalkit server", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics()
    engine.on_batch = metrics.observe_batch
    app.add_middleware(GuardMiddleware, api_key=api_key, max_body_bytes=limits.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last: outermost, so 401/413 are counted
    app.state.engine = engine
    engine.refusal = refusal
    engine.guard = guard

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> Response:
        # ASCII-escaped JSON: a message quoting the request (a parameter name) may hold a lone surrogate
        return Response(error_bytes(e), status_code=e.status, headers=e.headers, media_type="application/json")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(str(e.detail), code=str(e.status_code)),
            status_code=e.status_code,
            headers=getattr(e, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _crash(_: Request, e: Exception) -> JSONResponse:
        log.exception("request failed")
        return JSONResponse(error_body("internal server error", type="server_error"), status_code=500)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        # no model name here: /health needs no key, and a local model's name is its folder path
        out = {"status": "ok", "running": engine.running, "active": engine.active}
        if isinstance(engine, BatchingEngine):
            out.update(batches=engine.batches, batched_sequences=engine.batched_sequences)
        return out

    @app.get("/metrics")
    async def prometheus() -> Response:
        gauges = {
            "refusalkit_active_requests": ("Admitted requests, waiting or running.", engine.active),
            "refusalkit_generating": ("1 while a generate call runs.", int(engine.running)),
        }
        return Response(metrics.render(gauges), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        entry: dict[str, Any] = {"id": model.name, "object": "model", "owned_by": "refusalkit"}
        if refusal is not None:
            entry["refusal"] = refusal.summary()
        if guard is not None:
            entry["guard"] = guard.summary()
        return {"object": "list", "data": [entry]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        req = parse_chat_request(await request.body())
        _check_limits(req, limits)
        policy = _request_policy(req, refusal)
        processor = _logit_bias(req, vocab)
        msgs = [m.as_dict() for m in req.messages]
        # Tokenizing up to max_body_bytes of text takes a while: keep it off the event loop.
        prompt_tokens = await asyncio.to_thread(count_prompt_tokens, msgs)
        max_tokens = _choose_max_tokens(req, prompt_tokens, ctx, limits, max_tokens_default)
        cfg = GenerationConfig(
            max_new_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, seed=req.seed, stop=req.stops
        )
        job = Job(
            msgs,
            cfg,
            n=req.n,
            logits_processor=processor,
            logprobs=(req.top_logprobs or 0) if req.logprobs else None,
            prompt_tokens=prompt_tokens,
            policy=policy,
        )
        ticket = engine.admit()
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            gen = _stream_policy if policy is not None else _stream
            return StreamingResponse(
                gen(job, rid, created, prompt_tokens, include_usage, ticket),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                background=BackgroundTask(ticket.release),
            )
        try:
            gens = await engine.complete(job)
        finally:
            ticket.release()
        completion = sum(g.n_tokens for g in gens)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": g.text},
                "finish_reason": g.finish_reason,
                "logprobs": g.meta.get("logprobs"),
            }
            for i, g in enumerate(gens)
        ]
        out = {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model.name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            },
        }
        if policy is not None and refusal is not None and "control_token" in gens[0].meta:
            # one decision per request: every choice answers the same prompt, whose first-position
            # control-token probabilities (and so the policy's choice) are the same
            decision = refusal.describe(policy, gens[0].meta)
            out["refusal"] = decision
            metrics.observe_decision(str(decision["control_token"]))
        if "guard" in job.meta:  # a prompt the guard refused was not generated: it has no refusal object
            out["guard"] = job.meta["guard"]
            metrics.observe_guard(job.meta["guard"])
        return out

    async def _stream_policy(
        job: Job, rid: str, created: int, prompt_tokens: int, include_usage: bool, ticket: Any
    ) -> AsyncIterator[bytes]:
        """Stream a request under a refusal policy: each choice is generated whole (the policy model decides
        for a batch, it has no token streamer) and sent as one content chunk; the last chunk before
        ``[DONE]`` carries the ``refusal`` object."""

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return _sse(
                {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model.name,
                    "choices": choices,
                    **extra,
                }
            )

        try:
            gens = await engine.complete(job)
            for i, g in enumerate(gens):
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
                if g.text:
                    yield chunk([{"index": i, "delta": {"content": g.text}, "finish_reason": None}])
                yield chunk([{"index": i, "delta": {}, "finish_reason": g.finish_reason}])
            completion = sum(g.n_tokens for g in gens)
            extra: dict[str, Any] = {}
            if refusal is not None and "control_token" in gens[0].meta:
                extra["refusal"] = refusal.describe(job.policy, gens[0].meta)
                metrics.observe_decision(str(extra["refusal"]["control_token"]))
            if "guard" in job.meta:
                extra["guard"] = job.meta["guard"]
                metrics.observe_guard(job.meta["guard"])
            if include_usage:
                extra["usage"] = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion,
                    "total_tokens": prompt_tokens + completion,
                }
            yield chunk([], **extra)
            yield b"data: [DONE]\n\n"
        except Exception:
            log.exception("streamed generation failed")
            yield _sse(error_body("internal server error during generation", type="server_error"))
        finally:
            ticket.release()

    async def _stream(
        job: Job, rid: str, created: int, prompt_tokens: int, include_usage: bool, ticket: Any
    ) -> AsyncIterator[bytes]:
        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return _sse(
                {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model.name,
                    "choices": choices,
                    **extra,
                }
            )

        completion = 0
        try:
            verdict = await engine.screen(job)  # the guard's score, before anything is generated
            if verdict is not None:
                metrics.observe_guard(verdict)
            for i in range(job.n):
                yield chunk(
                    [
                        {
                            "index": i,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
                # Each choice gets its own seed so that n sampled choices differ.
                seed = None if job.config.seed is None else job.config.seed + i
                source = engine.stream(job, seed=seed) if not (verdict and verdict["refused"]) else _refused()
                async for item in source:
                    if isinstance(item, Generation):
                        completion += item.n_tokens
                        yield chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": item.finish_reason}])
                    elif item:
                        yield chunk([{"index": i, "delta": {"content": item}, "logprobs": None, "finish_reason": None}])
            tail: dict[str, Any] = {"guard": verdict} if verdict is not None else {}
            if include_usage:
                tail["usage"] = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion,
                    "total_tokens": prompt_tokens + completion,
                }
            if tail:
                yield chunk([], **tail)
            yield b"data: [DONE]\n\n"
        except Exception:
            # The 200 and earlier chunks are already sent: report the failure in the stream itself.
            log.exception("streamed generation failed")
            yield _sse(error_body("internal server error during generation", type="server_error"))
        finally:
            ticket.release()

    async def _refused() -> AsyncIterator[str | Generation]:
        """The guard's fixed refusal in place of a streamed generation: the text, then its Generation."""
        g = guard_refusal(model.tokenizer)
        yield g.text
        yield g

    return app
