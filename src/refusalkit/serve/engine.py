"""Running generations for the server without blocking its event loop.

``SerialEngine`` runs one generation at a time (a CPU model gains little from overlapping two) in a worker
thread, so ``/health`` and the 401/413/400 answers stay instant while a generation runs. Waiting requests
queue on an ``asyncio.Lock`` in the event loop, not on threads. Admission is bounded (``max_queue``):
past it a request gets 503 with ``Retry-After`` instead of waiting without end.

``serve.batching.BatchingEngine`` keeps this interface (``admit``, ``complete``, ``stream``) and batches
concurrent compatible ``complete`` calls.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from refusalkit.models.base import Generation, GenerationConfig, PromptLike
from refusalkit.models.hf import HFModel
from refusalkit.serve.errors import APIError
from refusalkit.serve.prefilter import guard_refusal

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One chat request's work: the messages, the generation settings and the choices wanted."""

    messages: list[dict[str, str]]
    config: GenerationConfig
    n: int = 1
    logits_processor: Any = None
    logprobs: int | None = None
    prompt_tokens: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    policy: Any = None  # a serve.refusal.RequestPolicy: generate under refusal-token control

    @property
    def sequence_tokens(self) -> int:
        """Return the most tokens one of this job's sequences can reach (prompt plus new tokens)."""
        return self.prompt_tokens + self.config.max_new_tokens


class _Cancelled:
    """A stopping criterion that ends generation once ``event`` is set (stop string seen, client gone)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kw: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class Ticket:
    """A place in the engine's bounded admission; ``release`` (idempotent) gives it back."""

    def __init__(self, engine: SerialEngine):
        self._engine = engine
        self._held = True

    def release(self) -> None:
        """Give the place back (a second call does nothing)."""
        if self._held:
            self._held = False
            self._engine.active -= 1


def _visible(text: str, stops: tuple[str, ...], final: bool) -> tuple[str, bool]:
    """Return (the part of ``text`` that can be sent now, whether a stop string was found).

    Mirrors ``HFModel.generate``: cut at the first stop string, strip whitespace. Until the end, the last
    ``len(longest stop) - 1`` characters and trailing whitespace are held back, since they may still
    become a stop string or be stripped.
    """
    cut = min((i for s in stops if (i := text.find(s)) >= 0), default=-1)
    if cut >= 0:
        return text[:cut].strip(), True
    if not final and stops:
        text = text[: max(0, len(text) - (max(map(len, stops)) - 1))]
    return (text.strip() if final else text.lstrip().rstrip()), False


class SerialEngine:
    """Generate with one ``HFModel``, one request at a time, off the event loop."""

    def __init__(self, model: HFModel, *, max_queue: int = 256, max_batch_tokens: int = 8192):
        self.model = model
        self.max_queue = max_queue
        # padded tokens (sequences x longest prompt-plus-answer) in one generate call: bounds the memory
        # of n choices of a long prompt, and of long and short prompts batched together
        self.max_batch_tokens = max_batch_tokens
        self.on_batch: Callable[[int], None] = lambda sequences: None  # metrics hook: one generate call
        self.active = 0  # admitted requests, waiting or running
        self.refusal: Any = None  # a serve.refusal.RefusalControl when the server has a refusal-token adapter
        self.guard: Any = None  # a serve.prefilter.PromptGuard when the server has a guard pre-filter
        self.running = False
        self._lock: asyncio.Lock | None = None

    @property
    def lock(self) -> asyncio.Lock:
        """Return the lock that serialises generations (made in the running loop on first use)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def admit(self) -> Ticket:
        """Return a ticket for one more request, or raise 503 when ``max_queue`` requests are already in."""
        if self.active >= self.max_queue:
            raise APIError(
                503,
                f"server busy: {self.active} requests already queued; retry later",
                type="server_error",
                code="server_overloaded",
                headers={"Retry-After": "1"},
            )
        self.active += 1
        return Ticket(self)

    async def _run(self, fn: Any) -> Any:
        """Run ``fn`` in a worker thread once the lock is free (see ``_run_locked``)."""
        await self.lock.acquire()
        return await self._run_locked(fn)

    async def _run_locked(self, fn: Any) -> Any:
        """Run ``fn`` in a worker thread; the caller holds the lock, which is released when the thread ends,
        even if the awaiting request was cancelled meanwhile (so two generations never overlap)."""
        loop = asyncio.get_running_loop()
        try:
            self.running = True
            fut = loop.run_in_executor(None, fn)
        except BaseException:
            self.running = False
            self.lock.release()
            raise

        def done(_: Any) -> None:
            self.running = False
            self.lock.release()

        fut.add_done_callback(done)
        # shield: a cancelled request must not cancel fut, whose callback would free the lock too early
        return await asyncio.shield(fut)

    async def complete(self, job: Job) -> list[Generation]:
        """Return ``job.n`` generations for the job's messages (batched, within ``max_batch_tokens``)."""
        batch_size = max(1, min(job.n, self.max_batch_tokens // max(1, job.sequence_tokens)))
        self.on_batch(job.n)
        return (await self._run(lambda: self.run_jobs([job], batch_size)))[0]

    def run_jobs(self, jobs: list[Job], batch_size: int) -> list[list[Generation]]:
        """Return each job's ``n`` generations, generated together in batches of ``batch_size`` (in the worker
        thread, lock held). The jobs share their generation settings (the first job's are used; a job with
        a ``logits_processor`` or ``logprobs`` comes alone). With a guard, every job's prompt is scored first
        (``job.meta["guard"]``) and a prompt the guard refuses gets the fixed refusal without generating."""
        live = jobs
        if self.guard is not None:
            for job, verdict in zip(jobs, self.guard.check([j.messages for j in jobs])):
                job.meta["guard"] = verdict
            live = [j for j in jobs if not j.meta["guard"]["refused"]]
        prompts: list[PromptLike] = [j.messages for j in live for _ in range(j.n)]
        gens: list[Generation] = []
        if prompts:
            first = live[0]
            if first.policy is not None:
                policies = [j.policy.policy for j in live for _ in range(j.n)]
                gens = self.generate_under_policy(prompts, policies, first.config, batch_size)
            else:
                gens = self.model.generate(
                    prompts,
                    first.config,
                    logits_processor=first.logits_processor,
                    logprobs=first.logprobs,
                    batch_size=batch_size,
                )
        out: list[list[Generation]] = []
        i = 0
        generated = {id(j) for j in live}
        for j in jobs:
            if id(j) in generated:
                out.append(gens[i : i + j.n])
                i += j.n
            else:
                out.append([guard_refusal(self.model.tokenizer) for _ in range(j.n)])
        return out

    async def screen(self, job: Job) -> dict[str, Any] | None:
        """Return the guard's verdict on the job's prompt (also put in ``job.meta["guard"]``), None without a
        guard; for streaming requests, which do not pass through :meth:`run_jobs`."""
        if self.guard is None:
            return None
        job.meta["guard"] = (await self._run(lambda: self.guard.check([job.messages])))[0]
        return job.meta["guard"]

    def generate_under_policy(
        self, prompts: list[Any], policies: list[Any], config: GenerationConfig, batch_size: int
    ) -> list[Generation]:
        """Return one Generation per prompt, prompt ``i`` under ``policies[i]`` (a ``tokens.policy.Policy``),
        in the worker thread with the lock held."""
        return self.refusal.generate(prompts, config, policies, batch_size)

    async def stream(self, job: Job, *, seed: int | None = None) -> AsyncIterator[str | Generation]:
        """Yield text pieces as tokens are generated, then the final ``Generation`` (one choice).

        The pieces joined equal the final Generation's text. Closing the iterator early (the client went
        away) stops the generation at the next token.
        """
        from transformers import AsyncTextIteratorStreamer, StoppingCriteriaList

        streamer = AsyncTextIteratorStreamer(self.model.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()
        extra = {
            **job.config.extra,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_Cancelled(cancel)]),
        }
        cfg = job.config.with_(extra=extra, seed=seed if seed is not None else job.config.seed)

        def work() -> Generation:
            try:
                return self.model.generate([job.messages], cfg, logits_processor=job.logits_processor)[0]
            except BaseException:
                streamer.end()  # wake the reader; the error comes out of the future below
                raise

        self.on_batch(1)
        task = asyncio.ensure_future(self._run(work))
        stops = job.config.stop
        full, sent = "", ""
        try:
            async for piece in streamer:
                full += piece
                shown, stopped = _visible(full, stops, final=False)
                if len(shown) > len(sent):
                    yield shown[len(sent) :]
                    sent = shown
                if stopped:
                    cancel.set()
            gen = await task
            # The final text decodes all tokens at once; send what was held back (trailing text).
            if gen.text.startswith(sent):
                if len(gen.text) > len(sent):
                    yield gen.text[len(sent) :]
            else:
                log.warning("streamed text and the final decode differ; the stream keeps what it sent")
            yield gen
        finally:
            # The client left early: stop at the next token. Cancelling the task is safe: a waiting task
            # leaves the lock's queue; a running thread finishes its token and then releases the lock.
            cancel.set()
            if not task.done():
                task.cancel()
