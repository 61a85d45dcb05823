"""`refusalkit serve` over real HTTP on 127.0.0.1: limits, key, validation, streaming, n, and liveness.

One server process (the command users run, key from $REFUSALKIT_API_KEY) serves a tiny random model built
from a config; every case of the server section of issue 14 is checked against it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

KEY = "test-key-7f3a"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMITS = {"max_body_bytes": 65536, "max_messages": 8, "max_tokens_limit": 600, "max_n": 3, "max_queue": 32}
CONTEXT = 1024
HI = [{"role": "user", "content": "hi"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, int]:
    """Start `refusalkit serve` on a free loopback port; return the process and the port once /health answers."""
    port = free_port()
    exe = Path(sys.executable).parent / "refusalkit"
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(
        [str(exe), "serve", "--model", str(model_dir), "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=e,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, port
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start in 120 s")


def stop_server(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode(errors="replace")


@pytest.fixture(scope="module")
def serve_model_dir(tmp_path_factory, bundled_dir) -> Path:
    """A 2-layer random Llama with a 1,024-token context and the bundled model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("serve-model")
    tok = AutoTokenizer.from_pretrained(bundled_dir)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def server(serve_model_dir):
    args = [f"--{k.replace('_', '-')}={v}" for k, v in LIMITS.items()]
    proc, port = start_server(serve_model_dir, *args, env={"REFUSALKIT_API_KEY": KEY})
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(serve_model_dir).eos_token_id
    yield {"port": port, "url": f"http://127.0.0.1:{port}", "proc": proc, "eos": eos}
    log = stop_server(proc)
    assert "Traceback" not in log, log


def chat(server, body, headers=AUTH, **kw) -> httpx.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(
        server["url"] + "/v1/chat/completions",
        content=data,
        headers={"Content-Type": "application/json", **headers},
        timeout=60,
        **kw,
    )


def assert_error(r: httpx.Response, status: int, param: str | None = "?") -> dict:
    """Check an OpenAI-style error answer and return its error object."""
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param != "?":
        assert err["param"] == param, err
    return err


def raw_exchange(port: int, head: str, body: bytes = b"", timeout: float = 5.0) -> tuple[int, dict, float]:
    """Send raw bytes over a socket; return (status, JSON body, seconds until the answer was complete)."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                header, rest = data.split(b"\r\n\r\n", 1)
                n = int(
                    [ln.split(b":")[1] for ln in header.split(b"\r\n") if ln.lower().startswith(b"content-length")][0]
                )
                if len(rest) >= n:
                    break
    status = int(header.split(b" ")[1])
    return status, json.loads(rest[:n]), time.perf_counter() - t0


def sse_events(r: httpx.Response) -> list:
    """Return the parsed `data:` events of an SSE response ("[DONE]" kept as a string)."""
    out = []
    for line in r.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
        else:
            assert line == "", line
    return out


# --- the key is checked first, and only with the Bearer scheme -------------------------------------------


def test_key_checked_before_the_body_is_read(server):
    """A 50 MB body without a key: the 401 comes from the headers alone (the body is never sent)."""
    for auth in ("", "Authorization: Bearer wrong\r\n"):
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
            f"Content-Length: {50_000_000}\r\n\r\n"
        )
        status, body, secs = raw_exchange(server["port"], head)
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        assert secs < 2


def test_key_requires_the_bearer_scheme(server):
    for value in (KEY, f"Basic {KEY}", f"Token {KEY}", "Bearer", f"Bearer {KEY}x", f"Bearer  {KEY[:-1]}"):
        r = chat(server, {"messages": HI, "max_tokens": 1}, headers={"Authorization": value})
        assert_error(r, 401)
    assert httpx.get(server["url"] + "/v1/models").status_code == 401
    assert chat(server, {"messages": HI, "max_tokens": 1}).status_code == 200
    assert (
        chat(server, {"messages": HI, "max_tokens": 1}, headers={"Authorization": f"bearer {KEY}"}).status_code == 200
    )
    # a non-ASCII header value is a 401, not a 500
    head = (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ") + "kéy".encode("latin-1")
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=5) as s:
        s.sendall(head + b"\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 401")


# --- body size --------------------------------------------------------------------------------------------


def test_body_over_the_limit_by_content_length(server):
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {LIMITS['max_body_bytes'] + 1}\r\n\r\n"
    )
    status, body, secs = raw_exchange(server["port"], head)  # no body sent: the header alone decides
    assert status == 413 and body["error"]["code"] == "request_too_large" and secs < 2


def test_body_over_the_limit_while_reading(server):
    """A chunked body (no Content-Length) is counted as it arrives and cut off at the limit."""

    def chunks():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"a" * 4096
        yield b'"}]}'

    r = httpx.post(server["url"] + "/v1/chat/completions", content=chunks(), headers=AUTH, timeout=30)
    assert_error(r, 413)
    # the same amount, under the limit, goes through to validation (a normal 200 here)
    ok = {"messages": [{"role": "user", "content": "a " * 200}], "max_tokens": 1}
    assert chat(server, ok).status_code == 200


# --- prompt tokens, messages, max_tokens, n ---------------------------------------------------------------


def test_prompt_longer_than_the_context(server):
    long = [{"role": "user", "content": "hello " * (CONTEXT + 50)}]
    err = assert_error(chat(server, {"messages": long, "max_tokens": 1}), 400, "messages")
    assert err["code"] == "context_length_exceeded" and str(CONTEXT) in err["message"]
    # prompt fits, but prompt + max_tokens does not
    mid = [{"role": "user", "content": "hello " * (CONTEXT - 300)}]
    err = assert_error(chat(server, {"messages": mid, "max_tokens": 500}), 400, "messages")
    assert err["code"] == "context_length_exceeded"
    r = chat(server, {"messages": mid, "max_tokens": 2})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] > CONTEXT - 300


def test_too_many_messages(server):
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": "x"} for i in range(LIMITS["max_messages"] + 1)]
    err = assert_error(chat(server, {"messages": msgs, "max_tokens": 1}), 400, "messages")
    assert err["code"] == "too_many_messages"


BAD_BODIES = {
    "max_tokens 0": b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}',
    "max_tokens -1": b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}',
    "max_tokens above the limit": b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 601}',
    "max_tokens 2**70": b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1180591620717411303424}',
    "max_completion_tokens 0": b'{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0}',
    "temperature NaN": b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    "temperature Infinity": b'{"messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}',
    "temperature -1": b'{"messages": [{"role": "user", "content": "hi"}], "temperature": -1}',
    "temperature 2.5": b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 2.5}',
    "temperature string": b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "0.5"}',
    "top_p NaN": b'{"messages": [{"role": "user", "content": "hi"}], "top_p": NaN}',
    "top_p -Infinity": b'{"messages": [{"role": "user", "content": "hi"}], "top_p": -Infinity}',
    "top_p 0": b'{"messages": [{"role": "user", "content": "hi"}], "top_p": 0}',
    "top_p 5": b'{"messages": [{"role": "user", "content": "hi"}], "top_p": 5}',
    "seed 2**70": b'{"messages": [{"role": "user", "content": "hi"}], "seed": 1180591620717411303424}',
    "seed -2**70": b'{"messages": [{"role": "user", "content": "hi"}], "seed": -1180591620717411303424}',
    "seed float": b'{"messages": [{"role": "user", "content": "hi"}], "seed": 1.5}',
    "lone surrogate in content": b'{"messages": [{"role": "user", "content": "a\\ud800b"}]}',
    "lone surrogate in a text part": b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
    "lone surrogate in a parameter name": b'{"messages": [{"role": "user", "content": "hi"}], "\\ud800": 1}',
    "lone surrogate in a logit_bias key": b'{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"\\ud800": 1}}',
    "lone surrogate in stop": b'{"messages": [{"role": "user", "content": "hi"}], "stop": "\\ud800"}',
    "invalid UTF-8": b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}',
    "not JSON": b'{"messages": [',
    "deeply nested JSON": b"[" * 30000 + b"]" * 30000,
    "JSON array": b"[]",
    "no messages": b'{"messages": []}',
    "unknown role": b'{"messages": [{"role": "wizard", "content": "hi"}]}',
    "content a number": b'{"messages": [{"role": "user", "content": 5}]}',
    "n 0": b'{"messages": [{"role": "user", "content": "hi"}], "n": 0}',
    "n above the limit": b'{"messages": [{"role": "user", "content": "hi"}], "n": 4}',
    "n 2**70": b'{"messages": [{"role": "user", "content": "hi"}], "n": 1180591620717411303424}',
    "stream not a bool": b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}',
    "stream with logprobs": b'{"messages": [{"role": "user", "content": "hi"}], "stream": true, "logprobs": true}',
    "five stop strings": b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["a","b","c","d","e"]}',
    "logit_bias NaN": b'{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"5": NaN}}',
    "logit_bias bad id": b'{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"99999999": 1}}',
    "unknown parameter (silently ignored before)": b'{"messages": [{"role": "user", "content": "hi"}], "profile": "strict"}',
    "unsupported tools": b'{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}',
    "unsupported frequency_penalty": b'{"messages": [{"role": "user", "content": "hi"}], "frequency_penalty": 1}',
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_request_is_400_not_500(server, case):
    err = assert_error(chat(server, BAD_BODIES[case]), 400)
    assert err["type"] == "invalid_request_error"


def test_unknown_path_is_an_error_object(server):
    assert_error(httpx.get(server["url"] + "/v1/nothing", headers=AUTH), 404)


# --- normal answers, n, streaming -------------------------------------------------------------------------


def test_n_choices(server):
    body = {"messages": HI, "max_tokens": 6, "n": 3, "temperature": 1.0, "seed": 7}
    r = chat(server, body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    assert len({c["message"]["content"] for c in out["choices"]}) > 1  # sampled, not copies
    assert 3 <= out["usage"]["completion_tokens"] <= 18
    assert chat(server, body).json()["choices"] == out["choices"]  # the seed makes it reproducible


def test_stream_chunks_in_openai_format_match_the_plain_answer(server):
    body = {"messages": HI, "max_tokens": 12, "temperature": 1, "seed": 11, "logit_bias": {str(server["eos"]): -100}}
    plain = chat(server, body).json()["choices"][0]
    with httpx.stream(
        "POST",
        server["url"] + "/v1/chat/completions",
        headers=AUTH,
        timeout=60,
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == plain["message"]["content"] and text
    finals = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finals == ["length"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12


def test_stream_honours_stop_strings_like_the_plain_answer(server):
    base = {
        "messages": [{"role": "user", "content": "tell me"}],
        "max_tokens": 30,
        "temperature": 1,
        "seed": 5,
        "logit_bias": {str(server["eos"]): -100},
    }
    full = chat(server, base).json()["choices"][0]["message"]["content"]
    # a 3-character stop string whose first occurrence is past the start of the answer
    stop = next(
        full[k : k + 3]
        for k in range(len(full) // 2, len(full) - 3)
        if full.index(full[k : k + 3]) > 5 and full[k : k + 3].strip()
    )
    want = full[: full.index(stop)].strip()
    plain = chat(server, {**base, "stop": [stop, "\u2603\u2603\u2603\u2603"]}).json()["choices"][0]
    assert plain["message"]["content"] == want and plain["finish_reason"] == "stop"
    with httpx.stream(
        "POST",
        server["url"] + "/v1/chat/completions",
        headers=AUTH,
        timeout=60,
        json={**base, "stop": [stop, "\u2603\u2603\u2603\u2603"], "stream": True},
    ) as r:
        events = sse_events(r)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in events[:-1])
    assert text == want
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_stream_n_choices(server):
    with httpx.stream(
        "POST",
        server["url"] + "/v1/chat/completions",
        headers=AUTH,
        timeout=60,
        json={"messages": HI, "max_tokens": 4, "n": 2, "stream": True, "seed": 3},
    ) as r:
        events = sse_events(r)
    by_index = {}
    for c in events[:-1]:
        ch = c["choices"][0]
        by_index.setdefault(ch["index"], []).append(ch)
    assert sorted(by_index) == [0, 1]
    for chs in by_index.values():
        assert chs[0]["delta"]["role"] == "assistant" and chs[-1]["finish_reason"] in ("length", "stop")


def test_tokens_stream_as_they_are_generated_and_the_server_stays_live(server):
    """While one long generation streams: its first tokens arrive early, /health and 401/413/400 answers
    stay instant, a second request waits its turn, and closing the streams frees the model at once."""
    url = server["url"] + "/v1/chat/completions"
    body = {
        "messages": HI,
        "max_tokens": 600,
        "stream": True,
        "temperature": 0,
        "logit_bias": {str(server["eos"]): -100},
    }
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", url, headers=AUTH, json=body) as r:
            t0 = time.perf_counter()
            lines = r.iter_lines()
            n_content = 0
            for line in lines:
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    n_content += 1
                    if n_content == 3:
                        break
            first = time.perf_counter() - t0
            health = httpx.get(server["url"] + "/health", timeout=5)
            assert health.json()["running"] is True
            for r2, status in (
                (httpx.post(url, json={"messages": HI}, timeout=5), 401),
                (httpx.post(url, content=b"x" * (LIMITS["max_body_bytes"] + 10), headers=AUTH, timeout=5), 413),
                (httpx.post(url, content=b'{"messages": [], "top_p": NaN}', headers=AUTH, timeout=5), 400),
            ):
                assert r2.status_code == status
            live = time.perf_counter() - t0 - first
            assert live < 3, f"liveness checks took {live:.1f}s during a generation"
            # a second request waits its turn (admitted); a third is past --max-queue 2
            with httpx.Client(timeout=60) as c2, c2.stream("POST", url, headers=AUTH, json=body) as waiting:
                assert waiting.status_code == 200
                assert httpx.get(server["url"] + "/health").json()["active"] == 2
            rest = sum(1 for _ in zip(range(20), lines))  # the stream is still going
            assert rest == 20
        # both streams closed early: the generations stop and the model is free again
        t1 = time.perf_counter()
        r = chat(server, {"messages": HI, "max_tokens": 2})
        assert r.status_code == 200 and time.perf_counter() - t1 < 5
    assert first < 5
    assert httpx.get(server["url"] + "/health").json()["active"] == 0


def test_queue_bound_answers_503(serve_model_dir, server):
    """With --max-queue 1 and one generation running, the next request gets 503 with Retry-After at once."""
    proc, port = start_server(serve_model_dir, "--max-queue", "1", env={"REFUSALKIT_API_KEY": KEY})
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = {"messages": HI, "max_tokens": 600, "stream": True, "logit_bias": {str(server["eos"]): -100}}
        with httpx.Client(timeout=60) as client, client.stream("POST", url, headers=AUTH, json=body) as r:
            assert r.status_code == 200
            t0 = time.perf_counter()
            busy = httpx.post(url, headers=AUTH, json={"messages": HI, "max_tokens": 1}, timeout=10)
            assert time.perf_counter() - t0 < 2
            err = assert_error(busy, 503)
            assert err["code"] == "server_overloaded" and busy.headers["retry-after"] == "1"
        ok = httpx.post(url, headers=AUTH, json={"messages": HI, "max_tokens": 1}, timeout=30)
        assert ok.status_code == 200
    finally:
        assert "Traceback" not in stop_server(proc)


def test_concurrent_requests_are_batched_and_answered_to_the_right_caller(server):
    """Concurrent requests with the same settings share batched generate calls; each caller gets its own n
    choices and its own max_tokens (requests with other settings go in other batches)."""
    from concurrent.futures import ThreadPoolExecutor

    before = httpx.get(server["url"] + "/health").json()
    jobs = [
        {
            "messages": [{"role": "user", "content": "hi " * (1 + i % 5)}],
            "max_tokens": 4 + 2 * (i % 2),
            "n": 1 + i % 3,
            "temperature": 0,
        }
        for i in range(12)
    ]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda b: chat(server, b), jobs))
    after = httpx.get(server["url"] + "/health").json()
    for body, r in zip(jobs, answers):
        assert r.status_code == 200, r.text
        out = r.json()
        assert len(out["choices"]) == body["n"]
        assert out["usage"]["completion_tokens"] == body["n"] * body["max_tokens"]  # greedy here never stops early
        solo = chat(server, {**body, "n": 1}).json()
        assert solo["usage"]["prompt_tokens"] == out["usage"]["prompt_tokens"]
        assert {c["message"]["content"] for c in out["choices"]} == {solo["choices"][0]["message"]["content"]}
    sequences = after["batched_sequences"] - before["batched_sequences"]
    batches = after["batches"] - before["batches"]
    assert sequences == sum(b["n"] for b in jobs)
    assert batches < len(jobs)  # some requests shared a batch


def test_prometheus_metrics(server):
    """GET /metrics (behind the key): requests by path and status (401s included), latency and batch-size
    histograms, gauges; unknown paths are one label, so scanners cannot grow the label set."""
    assert httpx.get(server["url"] + "/metrics").status_code == 401
    assert chat(server, {"messages": HI, "max_tokens": 1}).status_code == 200
    assert httpx.get(server["url"] + "/no/such/path/x1", headers=AUTH).status_code == 404
    r = httpx.get(server["url"] + "/metrics", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    values = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    ok = values['refusalkit_requests_total{path="/v1/chat/completions",status="200"}']
    assert ok >= 1
    assert values['refusalkit_requests_total{path="/metrics",status="401"}'] >= 1
    assert values['refusalkit_requests_total{path="other",status="404"}'] >= 1
    assert not any("x1" in k for k in values)
    assert values['refusalkit_request_seconds_count{path="/v1/chat/completions"}'] >= ok
    assert (
        values['refusalkit_request_seconds_bucket{path="/v1/chat/completions",le="+Inf"}']
        == values['refusalkit_request_seconds_count{path="/v1/chat/completions"}']
    )
    assert values["refusalkit_batch_size_count"] >= 1 and values["refusalkit_active_requests"] == 0


def test_binds_loopback_by_default(server):
    """The server was started without --host: its listening socket is 127.0.0.1 only."""
    port_hex = f"{server['port']:04X}"
    rows = [ln.split() for ln in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    rows += [ln.split() for ln in Path("/proc/net/tcp6").read_text().splitlines()[1:]]
    listening = [r[1] for r in rows if r[1].endswith(":" + port_hex) and r[3] == "0A"]
    assert listening == ["0100007F:" + port_hex]


# --- the official openai client ---------------------------------------------------------------------------


def test_official_openai_client_normal_and_streaming(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server["url"] + "/v1", api_key=KEY, max_retries=0)
    out = client.chat.completions.create(
        model="tiny", messages=HI, max_tokens=5, temperature=0, logit_bias={str(server["eos"]): -100}
    )
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 5
    stream = client.chat.completions.create(
        model="tiny",
        messages=HI,
        max_tokens=5,
        temperature=0,
        stream=True,
        logit_bias={str(server["eos"]): -100},
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == out.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 5
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server["url"] + "/v1", api_key="wrong", max_retries=0).chat.completions.create(
            model="tiny", messages=HI, max_tokens=1
        )
    with pytest.raises(openai.BadRequestError, match="context"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi " * 2000}], max_tokens=1)
