"""`refusalkit serve` options: where the API key comes from, and bad options refused before the model loads."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from conftest import run_cli
from test_serve_http import start_server, stop_server


def test_key_from_a_file_is_not_in_the_process_list(tiny_model_dir, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("file-key-91c2\n")
    proc, port = start_server(tiny_model_dir, "--api-key-file", str(key_file))
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"file-key-91c2" not in cmdline
        url = f"http://127.0.0.1:{port}/v1/models"
        assert httpx.get(url, headers={"Authorization": "Bearer file-key-91c2"}).status_code == 200
        assert httpx.get(url, headers={"Authorization": "Bearer other"}).status_code == 401
    finally:
        out = stop_server(proc)
    assert "warning" not in out and "file-key-91c2" not in out


def test_key_file_named_in_the_environment(tiny_model_dir, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("env-file-key-3b\n")
    proc, port = start_server(tiny_model_dir, env={"REFUSALKIT_API_KEY": "", "REFUSALKIT_API_KEY_FILE": str(key_file)})
    try:
        url = f"http://127.0.0.1:{port}/v1/models"
        assert httpx.get(url, headers={"Authorization": "Bearer env-file-key-3b"}).status_code == 200
        assert httpx.get(url).status_code == 401
    finally:
        stop_server(proc)


def test_key_on_the_command_line_works_with_a_warning(tiny_model_dir):
    proc, port = start_server(tiny_model_dir, "--api-key", "flag-key-5d")
    try:
        url = f"http://127.0.0.1:{port}/v1/models"
        assert httpx.get(url, headers={"Authorization": "Bearer flag-key-5d"}).status_code == 200
        assert httpx.get(url).status_code == 401
    finally:
        out = stop_server(proc)
    assert "process list" in out and "REFUSALKIT_API_KEY" in out


@pytest.fixture()
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


BAD = {
    "missing key file": (["--api-key-file", "{tmp}/nope"], "--api-key-file"),
    "empty key file": (["--api-key-file", "{tmp}/empty"], "--api-key-file"),
    "two-line key file": (["--api-key-file", "{tmp}/two"], "--api-key-file"),
    "key file is a folder": (["--api-key-file", "{tmp}"], "--api-key-file"),
    "missing key file in the environment": (["--env-key-file", "{tmp}/nope"], "REFUSALKIT_API_KEY_FILE"),
    "file and flag": (["--api-key-file", "{tmp}/two", "--api-key", "x"], "not both"),
    "empty flag": (["--api-key", " "], "--api-key"),
    "port 0": (["--port", "0"], "--port"),
    "port 70000": (["--port", "70000"], "--port"),
    "port busy": (["--port", "{busy}"], "cannot listen"),
    "unresolvable host": (["--host", "no-such-host.invalid"], "--host"),
    "max-body-bytes 0": (["--max-body-bytes", "0"], "--max-body-bytes"),
    "max-messages -1": (["--max-messages", "-1"], "--max-messages"),
    "max-queue 0": (["--max-queue", "0"], "--max-queue"),
    "max-n 0": (["--max-n", "0"], "--max-n"),
    "max-batch 0": (["--max-batch", "0"], "--max-batch"),
    "max-batch-tokens 0": (["--max-batch-tokens", "0"], "--max-batch-tokens"),
    "batch-wait-ms -1": (["--batch-wait-ms", "-1"], "--batch-wait-ms"),
    "max-prompt-tokens 0": (["--max-prompt-tokens", "0"], "--max-prompt-tokens"),
    "max-tokens above its limit": (["--max-tokens", "600", "--max-tokens-limit", "500"], "--max-tokens"),
    "an endpoint as model": (["--model", "openai:x@http://127.0.0.1:9/v1"], "local model"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_option_exits_2_before_loading_the_model(case, tmp_path, busy_port):
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "two").write_text("a\nb\n")
    args, expect = BAD[case]
    args = [a.format(tmp=tmp_path, busy=busy_port) for a in args]
    env = {"REFUSALKIT_API_KEY": "", "REFUSALKIT_API_KEY_FILE": ""}
    if args[0] == "--env-key-file":
        env["REFUSALKIT_API_KEY_FILE"], args = args[1], []
    if "--model" not in args:
        args = ["--model", "default", *args]
    r = run_cli("serve", *args, timeout=120, env=env)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert expect in r.stderr and "Traceback" not in r.stderr + r.stdout
    assert "on http://" not in r.stderr  # refused before the model was loaded and the socket served
