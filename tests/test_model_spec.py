"""Model specs: every form parses once into a ModelSpec; bad ones fail clearly; URL credentials never show."""

import base64
import json
import os
import sqlite3
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import run_cli
from refusalkit.errors import ModelSpecError, RefusalkitError
from refusalkit.models.openai_compat import EndpointError, OpenAICompatModel, api_key_from_env
from refusalkit.models.spec import ModelSpec, load_model, redact
from refusalkit.models.t2i import OpenAIImageModel

SECRET = "s3cr3t-Pa55"


def test_parse_forms(tmp_path):
    assert ModelSpec.parse("default").kind == "default"
    assert ModelSpec.parse(" subject ").kind == "subject"
    local = ModelSpec.parse(str(tmp_path))
    assert (local.kind, local.path) == ("local", str(tmp_path))
    hub = ModelSpec.parse("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (hub.kind, hub.hub_id) == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct")
    ep = ModelSpec.parse("openai:llama3@http://127.0.0.1:8000/v1")
    assert (ep.kind, ep.model, ep.base_url, ep.is_endpoint) == ("openai", "llama3", "http://127.0.0.1:8000/v1", True)
    assert ModelSpec.parse("openai:gpt-4o").base_url is None  # then $OPENAI_BASE_URL
    t2i = ModelSpec.parse("t2i:sd@https://h/v1")
    assert (t2i.kind, t2i.model, t2i.base_url) == ("t2i", "sd", "https://h/v1")
    assert ModelSpec.parse(ep) is ep
    assert not ModelSpec.parse("subject").is_endpoint
    assert ModelSpec.parse("subject").bundled.model_id == "Qwen2.5-Coder-1.5B-Instruct"
    local = ModelSpec.parse(str(tmp_path))
    assert (local.kind, local.path) == ("local", str(tmp_path))


@pytest.mark.parametrize("spec", ["", "nonsense", "./missing-folder", "openai:@http://x", "openai:m@ftp://x",
                                  "t2i:sd", "t2i:sd@ftp://x", "t2i:@http://x"])
def test_bad_specs(spec):
    with pytest.raises(ModelSpecError):
        ModelSpec.parse(spec)


def test_uncached_hub_id_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelSpecError, match="--model default"):
        load_model("nobody-here/not-a-model")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelSpecError, match="config.json"):
        load_model(str(tmp_path))


def test_load_model_drops_local_options_for_endpoints(tmp_path):
    m = load_model("openai:m@http://127.0.0.1:9/v1", batch_size=4, device="cpu", dtype="float32")
    assert isinstance(m, OpenAICompatModel) and m.name == "openai:m@http://127.0.0.1:9/v1"
    img = load_model(ModelSpec.parse("t2i:sd@http://127.0.0.1:9/v1"), batch_size=4, images_dir=tmp_path)
    assert isinstance(img, OpenAIImageModel) and img.images_dir == tmp_path


@pytest.mark.parametrize("text,shown", [
    (f"openai:m@http://user:{SECRET}@host:8000/v1", "openai:m@http://user:***@host:8000/v1"),
    (f"openai:m@https://{SECRET}@host/v1", "openai:m@https://***@host/v1"),
    (f"t2i:sd@https://h/v1?api_key={SECRET}&x=1", "t2i:sd@https://h/v1?api_key=***&x=1"),
    ("openai:m@http://host:8000/v1", "openai:m@http://host:8000/v1"),
])
def test_credentials_redacted_in_display(text, shown):
    ms = ModelSpec.parse(text)
    assert ms.display == str(ms) == shown == redact(text)
    assert SECRET not in repr(ms)
    assert ms.base_url and (SECRET in ms.base_url) == (SECRET in text)  # still used to connect


def test_credentials_redacted_in_errors_and_names():
    with pytest.raises(ModelSpecError) as e:
        ModelSpec.parse(f"openai:m@ftp://u:{SECRET}@host/v1")
    assert SECRET not in str(e.value) and "u:***@host" in str(e.value)
    m = OpenAICompatModel("m", f"http://u:{SECRET}@127.0.0.1:9/v1", max_retries=0)
    assert SECRET not in m.name
    with pytest.raises(EndpointError) as e:
        m.generate(["hi"])
    assert SECRET not in str(e.value) and "u:***@127.0.0.1:9" in str(e.value)
    assert SECRET not in OpenAIImageModel("sd", f"http://u:{SECRET}@127.0.0.1:9/v1").name


def test_api_key_sources(monkeypatch, tmp_path):
    for var in ("REFUSALKIT_API_KEY", "REFUSALKIT_API_KEY_FILE", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert api_key_from_env() is None
    monkeypatch.setenv("OPENAI_API_KEY", "from-openai")
    assert api_key_from_env() == "from-openai"
    key_file = tmp_path / "key"
    key_file.write_text(f"\n{SECRET}\n")
    monkeypatch.setenv("REFUSALKIT_API_KEY_FILE", str(key_file))
    assert api_key_from_env() == SECRET
    assert OpenAICompatModel("m", "http://127.0.0.1:9/v1").api_key == SECRET
    monkeypatch.setenv("REFUSALKIT_API_KEY", "from-env")
    assert api_key_from_env() == "from-env"
    monkeypatch.delenv("REFUSALKIT_API_KEY")
    for bad in (tmp_path / "missing", tmp_path):
        monkeypatch.setenv("REFUSALKIT_API_KEY_FILE", str(bad))
        with pytest.raises(RefusalkitError, match="REFUSALKIT_API_KEY_FILE"):
            api_key_from_env()
    key_file.write_text("two\nlines\n")
    monkeypatch.setenv("REFUSALKIT_API_KEY_FILE", str(key_file))
    with pytest.raises(RefusalkitError, match="alone on one line") as e:
        api_key_from_env()
    assert "two" not in str(e.value)


class _Chat(BaseHTTPRequestHandler):
    auth: list[str] = []

    def do_POST(self):  # noqa: N802
        type(self).auth.append(self.headers.get("Authorization", ""))
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"choices": [{"message": {"content": "I can't help with that."},
                                        "finish_reason": "stop"}], "usage": {"completion_tokens": 7}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def chat_port():
    """Return the port of a minimal OpenAI-compatible chat server on 127.0.0.1 that records auth headers."""
    _Chat.auth = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Chat)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


def test_key_file_is_sent_as_bearer(chat_port, monkeypatch, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("file-key\n")
    monkeypatch.delenv("REFUSALKIT_API_KEY", raising=False)
    monkeypatch.setenv("REFUSALKIT_API_KEY_FILE", str(key_file))
    load_model(f"openai:m@http://127.0.0.1:{chat_port}/v1").generate(["hi"])
    assert _Chat.auth == ["Bearer file-key"]


def test_generate_never_stores_or_prints_url_credentials(chat_port, tmp_path):
    """`generate` against an endpoint whose URL carries credentials: the requests use them (as HTTP Basic
    auth), but the run store, the output rows, `runs list` and the console only ever see the masked form."""
    spec = f"openai:m@http://user:{SECRET}@127.0.0.1:{chat_port}/v1"
    inp, out, run_dir = tmp_path / "p.jsonl", tmp_path / "o.jsonl", tmp_path / "run"
    inp.write_text(json.dumps({"id": "a", "prompt": "hi"}) + "\n")
    env = {"REFUSALKIT_API_KEY": "", "OPENAI_API_KEY": ""}
    r = run_cli("generate", str(inp), "-o", str(out), "--model", spec, "--run-dir", str(run_dir), env=env)
    assert r.returncode == 0, r.stderr
    assert _Chat.auth == ["Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()]
    listed = run_cli("runs", "list", env=env)
    shown = r.stdout + r.stderr + listed.stdout + listed.stderr + out.read_text()
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        stored = "\n".join(str(row) for t in ("meta", "responses") for row in db.execute(f"SELECT * FROM {t}"))
    assert "user:***@127.0.0.1" in stored
    for text in (shown, stored):
        assert SECRET not in text


@pytest.mark.parametrize("given,expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_wait_policy_default(given, expected):
    """Importing refusalkit (as the CLI does before torch) sets OMP_WAIT_POLICY=PASSIVE unless the user chose."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run([sys.executable, "-c", "import os, refusalkit; print(os.environ['OMP_WAIT_POLICY'])"],
                         capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == expected


def test_eval_outputs_never_carry_url_credentials(chat_port, data_dir, tmp_path):
    """`eval` against an endpoint with credentials in its URL: metrics.json, responses.jsonl, report.html and
    the run store name the model only in the masked form."""
    out = tmp_path / "run"
    spec = f"openai:m@http://user:{SECRET}@127.0.0.1:{chat_port}/v1"
    r = run_cli("eval", "--model", spec, "--bench", "xstest", "--limit", "4", "--data-dir", str(data_dir),
                "--detector", "keyword", "--n-boot", "50", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "metrics.json").read_text())["run"]["model"] == (
        f"openai:m@http://user:***@127.0.0.1:{chat_port}/v1")
    for name in ("metrics.json", "responses.jsonl", "report.html", "run.sqlite"):
        assert SECRET.encode() not in (out / name).read_bytes(), name
    assert SECRET not in r.stdout + r.stderr
