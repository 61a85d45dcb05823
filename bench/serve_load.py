"""Load test of `refusalkit serve`: concurrent clients against a server started here, on loopback only.

Starts `refusalkit serve --model MODEL` on a free 127.0.0.1 port (key passed through the environment), then
runs one scenario per entry of ``--clients`` against the same warm server, one after another: N clients,
each sending ``--requests`` chat requests in turn (``max_tokens`` 8, greedy), a scenario having at least
``--min-total`` requests in all (so the 1-client row is not two samples). Every request and the whole run
are bounded in time; the run stops by itself. Reports, per scenario: requests, errors, p50/p95/max
latency, requests/s and completion tokens/s, plus each scenario's throughput relative to 1 client.
``--modes batched,serial`` measures two servers one after the other, in the same run: the default server
(dynamic batching) and one with ``--max-batch 1`` (one request at a time), so the two are side by side.
``--modes batched,policy,policy-mixed`` gives the policy overhead: the same model with refusal-token control
(``--adapter bundled --profile balanced``), every request under the server default, then requests
alternating two profiles in their ``refusal`` field. ``policy-respond`` and ``policy-respond-mixed`` send
thresholds that refuse nothing (1, and alternately 1 and 0.9999): the answers are the ``batched`` ones, so
their completion tokens/s against ``batched`` is the cost of the policy alone (a refusal is shorter than an
answer, which lowers tokens/s under ``balanced`` whatever the policy costs). Every row also reports how
many answers the policy refused. ``--guard DIR --modes batched,guard-flag`` measures the guard pre-filter
(``--guard-action flag``: the same answers, so the ratio is the guard's cost).

    python bench/serve_load.py --model default --clients 1,16,64 --requests 2 --max-tokens 8 --modes batched,serial

``--url http://127.0.0.1:PORT/v1`` measures a server that is already running instead (loopback addresses
only; its key from $REFUSALKIT_API_KEY).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

PROMPTS = [
    "Explain how a refrigerator keeps food cold.",
    "Write a haiku about autumn rain.",
    "What are three tips for a good night's sleep?",
    "Summarise the water cycle.",
    "How do I reverse a list in Python?",
    "Why is the sky blue?",
    "Name five fruits rich in vitamin C.",
    "Describe the rules of chess briefly.",
    "What causes the seasons on Earth?",
    "Give me a recipe for pancakes.",
    "How does a bicycle gear work?",
    "What is photosynthesis?",
    "Suggest a name for a grey cat.",
    "How do vaccines train the immune system?",
    "What is the difference between weather and climate?",
    "Explain compound interest with an example.",
]


MODES = {
    "batched": [],
    "serial": ["--max-batch", "1"],
    # refusal-token control (issue 18): the bundled adapter, every request under the server default profile
    "policy": ["--adapter", "bundled", "--profile", "balanced"],
    # the same server, each request naming its own profile (two alternating)
    "policy-mixed": ["--adapter", "bundled", "--profile", "balanced"],
    # the same server, every threshold 1 (nothing refused: the same answers as `batched`, so the
    # completion tokens/s ratio is the policy's cost alone); -mixed alternates thresholds 1 and 0.9999
    "policy-respond": ["--adapter", "bundled", "--profile", "balanced"],
    "policy-respond-mixed": ["--adapter", "bundled", "--profile", "balanced"],
    # the guard pre-filter (--guard DIR): only flagging, so the answers are the `batched` ones and the
    # tokens/s ratio is the guard's cost; guard-refuse answers flagged prompts with the fixed refusal
    "guard-flag": ["--guard-action", "flag"],
    "guard-refuse": ["--guard-action", "refuse"],
}
# the 'refusal' body field sent per request in a mode, cycled by request number (none: the server default)
REFUSAL_FIELDS = {
    "policy-mixed": [{"profile": "balanced"}, {"profile": "strict"}],
    "policy-respond": [{"thresholds": {"*": 1.0}}],
    "policy-respond-mixed": [{"thresholds": {"*": 1.0}}, {"thresholds": {"*": 0.9999}}],
}


def loopback_only(url: str) -> str:
    """Return ``url`` if its host is a loopback address, else exit: this bench never targets another host."""
    host = urlparse(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        sys.exit(f"error: --url {url}: only loopback servers (127.0.0.0/8, ::1, localhost) may be load-tested")
    return url.rstrip("/")


def start_server(model: str, key: str, timeout: float, extra: list[str], log) -> tuple[subprocess.Popen, str]:
    """Start `refusalkit serve` on a free loopback port, its stderr to the file ``log`` (a pipe nobody reads
    would fill and stall the server); return it and its base URL once /health answers."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "refusalkit"
    env = {**os.environ, "REFUSALKIT_API_KEY": key, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(
        [str(exe), "serve", "--model", model, "--host", "127.0.0.1", "--port", str(port), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            sys.exit(f"error: the server exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/v1"
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    sys.exit(f"error: the server did not answer /health within {timeout:.0f} s")


async def scenario(
    url: str,
    key: str,
    clients: int,
    per_client: int,
    max_tokens: int,
    request_timeout: float,
    deadline: float,
    refusal: list[dict] | None = None,
) -> dict:
    """Run ``clients`` concurrent clients, ``per_client`` sequential requests each; return the figures.
    ``refusal``: the 'refusal' body fields to cycle through, one per request."""
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    tokens = 0
    refused = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        timeout=request_timeout, limits=limits, headers={"Authorization": f"Bearer {key}"}
    ) as http:

        async def client(c: int) -> None:
            nonlocal tokens, refused
            for r in range(per_client):
                if time.time() > deadline:
                    errors["not sent (run time limit)"] = errors.get("not sent (run time limit)", 0) + 1
                    continue
                body = {
                    "messages": [{"role": "user", "content": PROMPTS[(c * per_client + r) % len(PROMPTS)]}],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                }
                if refusal:
                    body["refusal"] = refusal[(c * per_client + r) % len(refusal)]
                t0 = time.perf_counter()
                try:
                    resp = await http.post(url + "/chat/completions", json=body)
                except httpx.HTTPError as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    continue
                dt = time.perf_counter() - t0
                if resp.status_code != 200:
                    errors[f"HTTP {resp.status_code}"] = errors.get(f"HTTP {resp.status_code}", 0) + 1
                    continue
                latencies.append(dt)
                answer = resp.json()
                tokens += answer["usage"]["completion_tokens"]
                refused += bool(
                    (answer.get("refusal") or {}).get("refused") or (answer.get("guard") or {}).get("refused")
                )

        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=20, method="inclusive") if len(latencies) >= 2 else latencies * 19
    return {
        "clients": clients,
        "requests": clients * per_client,
        "ok": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "seconds": round(wall, 2),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_s": round(q[18], 3) if latencies else None,
        "max_s": round(max(latencies), 3) if latencies else None,
        "requests_per_s": round(len(latencies) / wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "refused": refused,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument(
        "--modes",
        default="batched,serial",
        help="Servers to start, one after another: batched (the default server), serial (--max-batch 1), "
        "policy (--adapter bundled --profile balanced: refusal-token control on every request), policy-mixed "
        "(the same server, requests alternating 'refusal' profiles balanced and strict), policy-respond / "
        "policy-respond-mixed (thresholds that refuse nothing: the policy's cost alone), guard-flag / guard-refuse "
        "(--guard DIR with --guard-action flag / refuse).",
    )
    ap.add_argument("--guard", default=None, help="Guard folder (Latent Guard or prompt predictor) for guard-* modes.")
    ap.add_argument("--url", default=None, help="Measure this running server (loopback only) instead.")
    ap.add_argument("--clients", default="1,16,64", help="Comma-separated client counts, one scenario each.")
    ap.add_argument("--requests", type=int, default=2, help="Requests per client.")
    ap.add_argument("--min-total", type=int, default=16, help="At least this many requests per scenario.")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--request-timeout", type=float, default=600.0)
    ap.add_argument("--time-limit", type=float, default=1800.0, help="Stop sending after this many seconds.")
    ap.add_argument("--json", default=None, help="Also write the results to this file.")
    args = ap.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    if any(c < 1 or c > 256 for c in counts) or args.requests < 1 or args.max_tokens < 1:
        sys.exit("error: --clients must be 1..256 each, --requests and --max-tokens at least 1")

    import httpx

    results = []
    deadline = time.time() + args.time_limit
    for mode in args.modes.split(","):
        if mode not in MODES:
            sys.exit(f"error: --modes: unknown mode {mode!r} (choose from {', '.join(MODES)})")
        proc = None
        extra = list(MODES[mode])
        if mode.startswith("guard"):
            if not args.guard:
                sys.exit(f"error: --modes {mode} needs --guard DIR")
            extra += ["--guard", args.guard]
        if args.url:
            url, key = loopback_only(args.url), os.environ.get("REFUSALKIT_API_KEY", "")
        else:
            key = secrets.token_urlsafe(24)
            log = tempfile.TemporaryFile()
            proc, url = start_server(args.model, key, timeout=600, extra=extra, log=log)
        try:
            warm = httpx.post(
                url + "/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                timeout=600,
                json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": args.max_tokens},
            )
            warm.raise_for_status()
            for c in counts:
                per_client = max(args.requests, -(-args.min_total // c))
                res = asyncio.run(
                    scenario(
                        url,
                        key,
                        c,
                        per_client,
                        args.max_tokens,
                        args.request_timeout,
                        deadline,
                        REFUSAL_FIELDS.get(mode),
                    )
                )
                res["mode"] = mode if not args.url else "running server"
                results.append(res)
                print(json.dumps(res), file=sys.stderr, flush=True)
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                log.seek(0)
                if any(r["errors"] for r in results if r["mode"] == mode):
                    tail = log.read().decode(errors="replace")[-3000:]
                    print(f"server log ({mode}), last lines:\n{tail}", file=sys.stderr)
                log.close()
        if args.url:
            break
    print(f"model {args.model}, max_tokens {args.max_tokens}, greedy; loopback server\n")
    print(
        "| server | clients | requests | errors | refused | p50 s | p95 s | max s | requests/s | tokens/s | vs 1 client |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        base = next((b["requests_per_s"] for b in results if b["clients"] == 1 and b["mode"] == r["mode"]), None)
        ratio = f"{r['requests_per_s'] / base:.2f}x" if base else "-"
        print(
            f"| {r['mode']} | {r['clients']} | {r['requests']} | {r['errors']} | {r['refused']} | {r['p50_s']} | "
            f"{r['p95_s']} | "
            f"{r['max_s']} | {r['requests_per_s']} | {r['tokens_per_s']} | {ratio} |"
        )
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps({"model": args.model, "max_tokens": args.max_tokens, "results": results}, indent=2))
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
