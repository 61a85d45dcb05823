"""OpenAICompatModel against refusalkit's own server over real HTTP on 127.0.0.1."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import uvicorn

from refusalkit.models.base import GenerationConfig
from refusalkit.models.hf import HFModel
from refusalkit.models.openai_compat import EndpointError, OpenAICompatModel
from refusalkit.models.spec import load_model
from refusalkit.serve.app import create_app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    model = HFModel(tiny_model_dir, name="tiny")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(model, api_key="sekrit"), host="127.0.0.1", port=port,
                                        log_level="error"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", model
    srv.should_exit = True
    t.join(timeout=10)


def test_chat_matches_local_generation(server):
    url, local = server
    m = load_model(f"openai:tiny@{url}", api_key="sekrit", concurrency=3)
    cfg = GenerationConfig(max_new_tokens=5)
    prompts = ["Hello there", "What is 2+2?", "Name a colour", "Why?"]
    remote = m.generate(prompts, cfg)
    assert [g.text for g in remote] == [g.text for g in local.generate(prompts, cfg)]
    assert all(0 < g.n_tokens <= 5 for g in remote)


def test_logit_bias_and_logprobs_pass_through(server):
    url, local = server
    tid = local.tokenizer.convert_tokens_to_ids("Paris") if "Paris" in local.tokenizer.get_vocab() else 1000
    m = OpenAICompatModel("tiny", url, api_key="sekrit", logprobs=3, logit_bias={tid: 100.0})
    g = m.generate(["Say something"], GenerationConfig(max_new_tokens=3))[0]
    content = g.meta["logprobs"]["content"]
    assert len(content) == 3 and len(content[0]["top_logprobs"]) == 3
    assert g.text == local.tokenizer.decode([tid] * 3).strip()


def test_api_key_is_required(server):
    url, _ = server
    r = httpx.post(url + "/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401
    with pytest.raises(EndpointError, match="401"):
        OpenAICompatModel("tiny", url, api_key="wrong").generate(["hi"])


class _Flaky(BaseHTTPRequestHandler):
    failures = 2
    calls = 0

    def do_POST(self):  # noqa: N802
        type(self).calls += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).calls <= type(self).failures:
            self.send_response(429 if type(self).calls == 1 else 503)
            self.send_header("Retry-After", "0")
            self.end_headers()
            return
        body = json.dumps({"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
                           "usage": {"completion_tokens": 1}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_retries_with_backoff_on_429_and_5xx():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        g = OpenAICompatModel("x", url, backoff=0.01).generate(["hi"])[0]
        assert g.text == "ok" and _Flaky.calls == 3
        _Flaky.calls, _Flaky.failures = 0, 99
        with pytest.raises(EndpointError, match="3 attempts"):
            OpenAICompatModel("x", url, backoff=0.01, max_retries=2).generate(["hi"])
    finally:
        srv.shutdown()


def test_serve_command_over_http(tiny_model_dir, tmp_path):
    """`refusalkit serve` as users start it: loopback by default, API key enforced."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    port = _free_port()
    exe = Path(sys.executable).parent / "refusalkit"
    proc = subprocess.Popen([str(exe), "serve", "--model", str(tiny_model_dir), "--port", str(port),
                             "--api-key", "k1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ})
    try:
        url = f"http://127.0.0.1:{port}/v1"
        for _ in range(600):
            try:
                if httpx.get(url + "/models", headers={"Authorization": "Bearer k1"}).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(url + "/models").status_code == 401
        g = OpenAICompatModel("tiny", url, api_key="k1").generate(["hi"], GenerationConfig(max_new_tokens=3))[0]
        assert g.n_tokens == 3 or g.finish_reason == "stop"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_refused_connection_before_any_answer_fails_after_one_retry(monkeypatch):
    """Nothing listening: one retry, then a clear error, not five backoffs (~16 s) for the same answer."""
    import socket

    from refusalkit.models import openai_compat

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # a port nobody listens on
    sleeps: list[float] = []
    monkeypatch.setattr(openai_compat.time, "sleep", sleeps.append)
    with pytest.raises(EndpointError, match="nothing answered .* is the server running"):
        OpenAICompatModel("x", f"http://127.0.0.1:{port}/v1").generate(["hi"])
    assert len(sleeps) == 1
