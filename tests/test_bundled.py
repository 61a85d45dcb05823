"""Slow but real: the bundled SmolLM2-135M-Instruct, offline, through the CLI."""

import json

import pytest

from conftest import run_cli


@pytest.mark.slow
def test_bundled_model_answers_offline(tmp_path, bundled_dir):
    inp = tmp_path / "p.jsonl"
    inp.write_text(json.dumps({"id": "q", "prompt": "What is the capital of France?"}) + "\n")
    out = tmp_path / "o.jsonl"
    r = run_cli("generate", str(inp), "-o", str(out), "--model", "default", "--max-new-tokens", "12")
    assert r.returncode == 0, r.stderr
    row = json.loads(out.read_text())
    assert "Paris" in row["response"]
    assert row["model"].startswith("default:")


@pytest.mark.slow
def test_demo_runs_offline(bundled_dir):
    r = run_cli("demo", timeout=1200)
    assert r.returncode == 0, r.stderr
    assert "Refusals of" in r.stdout and "Requests with safety" in r.stdout
