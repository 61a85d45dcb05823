"""Prometheus metrics for the server (``GET /metrics``, text exposition format 0.0.4), kept in process.

Counted: requests by path and status (401/413 answers included, since the middleware sits outside the key
check), request latency, the number of sequences per ``generate`` call (batch size), under refusal
control the control token chosen per request (refusals by category), and with a guard pre-filter its
outcome per request (passed, flagged, refused). Paths are limited to the server's own
routes, and control tokens to the adapter's, so that scanners cannot grow the label set.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

ROUTES = frozenset({"/v1/chat/completions", "/v1/models", "/health", "/metrics"})
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    """A cumulative histogram with fixed upper bounds (Prometheus ``_bucket``/``_sum``/``_count``)."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: str = "") -> list[str]:
        """Return the exposition lines of this histogram."""
        out, total = [], 0
        sep = "," if labels else ""
        for bound, n in zip([*map(str, self.bounds), "+Inf"], self.counts):
            total += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {total}')
        lab = f"{{{labels}}}" if labels else ""
        return [*out, f"{name}_sum{lab} {self.sum}", f"{name}_count{lab} {total}"]


class Metrics:
    """The server's counters; ``render`` returns them in Prometheus text format."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.decisions: dict[str, int] = defaultdict(int)  # control token -> requests (refusal control)
        self.guard: dict[str, int] = defaultdict(int)  # guard outcome -> requests (guard pre-filter)

    def observe_decision(self, token: str) -> None:
        """Count one request's refusal-control decision (the control token the policy chose)."""
        self.decisions[token] += 1

    def observe_guard(self, verdict: dict[str, Any]) -> None:
        """Count one request's guard decision: ``refused`` (not generated), ``flagged`` (generated, flagged)
        or ``passed``."""
        self.guard["refused" if verdict["refused"] else "flagged" if verdict["flagged"] else "passed"] += 1

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        path = path if path in ROUTES else "other"
        self.requests[(path, status)] += 1
        self.latency.setdefault(path, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, sequences: int) -> None:
        """Count one ``generate`` call of ``sequences`` sequences."""
        self.batch_size.observe(sequences)

    def render(self, gauges: Mapping[str, tuple[str, float]]) -> str:
        """Return every metric as Prometheus text; ``gauges`` maps a name to (help, value)."""
        lines = [
            "# HELP refusalkit_requests_total HTTP requests answered, by path and status.",
            "# TYPE refusalkit_requests_total counter",
        ]
        for (path, status), n in sorted(self.requests.items()):
            lines.append(f'refusalkit_requests_total{{path="{path}",status="{status}"}} {n}')
        lines += [
            "# HELP refusalkit_request_seconds Time from request start to the end of the answer.",
            "# TYPE refusalkit_request_seconds histogram",
        ]
        for path, hist in sorted(self.latency.items()):
            lines += hist.lines("refusalkit_request_seconds", f'path="{path}"')
        lines += ["# HELP refusalkit_batch_size Sequences per generate call.", "# TYPE refusalkit_batch_size histogram"]
        lines += self.batch_size.lines("refusalkit_batch_size")
        if self.decisions:
            lines += [
                "# HELP refusalkit_refusal_decisions_total Requests by the control token chosen (refusal control).",
                "# TYPE refusalkit_refusal_decisions_total counter",
            ]
            for token, n in sorted(self.decisions.items()):
                lines.append(f'refusalkit_refusal_decisions_total{{token="{token}"}} {n}')
        if self.guard:
            lines += [
                "# HELP refusalkit_guard_decisions_total Requests by the guard pre-filter's outcome.",
                "# TYPE refusalkit_guard_decisions_total counter",
            ]
            for outcome, n in sorted(self.guard.items()):
                lines.append(f'refusalkit_guard_decisions_total{{outcome="{outcome}"}} {n}')
        for name, (help_text, value) in gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Outermost ASGI layer: times every HTTP request and records its status when the answer ends."""

    def __init__(self, app: Callable[..., Awaitable[None]], *, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500  # what the client sees if the app fails before starting a response
        done = False

        async def timed_send(message: dict[str, Any]) -> None:
            nonlocal status, done
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False) and not done:
                done = True
                self.metrics.observe_request(scope.get("path", ""), status, time.perf_counter() - t0)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            if not done:  # the client went away mid-answer, or the app raised
                self.metrics.observe_request(scope.get("path", ""), status, time.perf_counter() - t0)
