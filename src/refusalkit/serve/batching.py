"""Dynamic batching: concurrent non-streaming requests with the same generation settings share one batched
``generate`` call, so throughput grows with the number of clients instead of staying flat.

A request joins a queue; a single drain task waits ``max_wait_s`` for company, takes the model's lock,
then takes from the queue the oldest request and every later one with the same settings, up to
``max_batch`` sequences (a request's ``n`` counts as ``n``) and ``max_batch_tokens`` padded tokens (so a
long prompt is not padded into a batch of short ones past what memory allows), and generates them as
one batch in a worker thread. Requests that must not share a batch run alone through ``SerialEngine``: a seeded sample (its
result must not depend on its neighbours), a per-request ``logit_bias`` processor, or ``logprobs``.
Streaming requests also run alone, taking the same lock in turn. Under refusal-token control
(``serve.refusal``) requests with different profiles or thresholds share a batch: the policy processor
decides each row under its own request's policy (only the policy's softmax temperature must be shared).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from refusalkit.models.base import Generation
from refusalkit.models.hf import HFModel
from refusalkit.serve.engine import Job, SerialEngine

log = logging.getLogger(__name__)


def batch_key(job: Job) -> tuple[Any, ...] | None:
    """Return the settings that jobs must share to be generated in one batch (None: the job runs alone)."""
    c = job.config
    if job.logits_processor is not None or job.logprobs is not None or c.extra:
        return None
    if c.do_sample and c.seed is not None:
        return None
    sampling = (c.temperature, c.top_p) if c.do_sample else (0.0, 1.0)
    # refusal policies are applied per row; only their softmax temperature is computed once per batch
    policy_temperature = job.policy.policy.temperature if job.policy is not None else None
    return (c.max_new_tokens, *sampling, c.stop, c.system_prompt, policy_temperature)


class BatchingEngine(SerialEngine):
    """A ``SerialEngine`` whose ``complete`` batches compatible concurrent requests."""

    def __init__(
        self,
        model: HFModel,
        *,
        max_queue: int = 256,
        max_batch: int = 16,
        max_wait_s: float = 0.005,
        max_batch_tokens: int = 8192,
    ):
        super().__init__(model, max_queue=max_queue, max_batch_tokens=max_batch_tokens)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.batches = 0  # batched generate calls made
        self.batched_sequences = 0  # sequences generated in them (mean batch = this / batches)
        self._queue: list[tuple[tuple[Any, ...], Job, asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None

    async def complete(self, job: Job) -> list[Generation]:
        """Return ``job.n`` generations, batched with other waiting requests that share the job's settings."""
        key = batch_key(job)
        if (
            key is None
            or self.max_batch <= 1
            or job.n >= self.max_batch
            or job.n * job.sequence_tokens > self.max_batch_tokens
        ):
            return await super().complete(job)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append((key, job, fut))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await fut

    def _take(self) -> list[tuple[Job, asyncio.Future]]:
        """Remove and return the oldest live request and the later ones that can share its batch: the same
        settings, at most ``max_batch`` sequences, at most ``max_batch_tokens`` padded tokens."""
        self._queue = [q for q in self._queue if not q[2].done()]  # callers that went away
        if not self._queue:
            return []
        key = self._queue[0][0]
        taken: list[tuple[Job, asyncio.Future]] = []
        rest: list[tuple[tuple[Any, ...], Job, asyncio.Future]] = []
        size = longest = 0
        for q in self._queue:
            job = q[1]
            fits = size + job.n <= self.max_batch
            fits = fits and max(longest, job.sequence_tokens) * (size + job.n) <= self.max_batch_tokens
            if q[0] == key and (fits or not taken):
                taken.append((job, q[2]))
                size += job.n
                longest = max(longest, job.sequence_tokens)
            else:
                rest.append(q)
        self._queue = rest
        return taken

    async def _drain(self) -> None:
        while self._queue:
            await asyncio.sleep(self.max_wait_s)  # let concurrent requests arrive
            await self.lock.acquire()
            batch = self._take()
            if not batch:
                self.lock.release()
                continue
            jobs = [job for job, _ in batch]
            size = sum(job.n for job in jobs)
            self.batches += 1
            self.batched_sequences += size
            self.on_batch(size)
            try:
                outs = await self._run_locked(lambda: self.run_jobs(jobs, size))  # noqa: B023
            except Exception as e:  # the batch's callers get the error; the drain goes on
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), gens in zip(batch, outs):
                if not fut.done():
                    fut.set_result(gens)
