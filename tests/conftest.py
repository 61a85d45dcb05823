"""Shared fixtures: isolated refusalkit home, the shared data dir, a tiny model and the real bundled model."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Under pytest-xdist (the README runs two workers on two cores) each worker and the CLIs it starts use one
# torch thread: two workers with two threads each would fight over the cores. Set before torch is imported.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

from refusalkit.data.registry import data_root  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = data_root()  # $REFUSALKIT_DATA or ../shared/data: the benchmark copies
REPO_DATA = ROOT / "data"  # the repository's own data that is not installed (training sets, check sets)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Runs go to a per-test directory; the model cache stays shared so conversion happens once."""
    monkeypatch.setenv("REFUSALKIT_HOME", str(tmp_path / "rkhome"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Return the data root (skips the test when the copy is absent)."""
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is not present")
    return DATA


@pytest.fixture(scope="session")
def bundled_dir() -> Path:
    """Return the converted bundled SmolLM2-135M-Instruct folder (converts once per cache)."""
    from refusalkit.models.bundled import default_model_dir
    return default_model_dir(quiet=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bundled_dir) -> Path:
    """Return a folder with a 2-layer random Llama model that uses the bundled model's tokenizer/template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-model")
    tok = AutoTokenizer.from_pretrained(bundled_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def other_model_dir(tiny_model_dir, tmp_path) -> Path:
    """Return a copy of the tiny model with its final norm shifted: same shapes and tokenizer, other weights
    (for checks that an artifact refuses a model it was not made for)."""
    import torch
    from transformers import AutoModelForCausalLM

    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    m = AutoModelForCausalLM.from_pretrained(other)
    with torch.no_grad():
        m.model.norm.weight.add_(0.5)
    m.save_pretrained(other)
    return other


def run_cli(*args: str, env: dict | None = None, timeout: int = 600, cwd: Path | None = None,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``refusalkit ARGS`` as a subprocess (the way users do) and return the completed process."""
    e = dict(os.environ)
    e["COLUMNS"] = "200"  # wide, so messages the tests look for are not wrapped (xdist workers inherit 80)
    e.update(env or {})
    exe = shutil.which("refusalkit", path=str(Path(sys.executable).parent)) or "refusalkit"
    return subprocess.run([exe, *args], capture_output=True, text=True, env=e, timeout=timeout,
                          cwd=cwd, input=input)


def coconot_subset(data_dir: Path, out: Path, n: int) -> Path:
    """Write ``n`` seeded CoCoNot prompts per (category, label) of two categories (safety, unsupported) to
    ``out/small.jsonl``; return its path."""
    rows = [json.loads(line) for line in (data_dir / "coconot_prompts.jsonl").read_text().splitlines()]
    rng = random.Random(0)
    picked = []
    for cat in ("Requests with safety concerns", "Unsupported requests"):
        for lab in ("should_not_comply", "should_comply"):
            picked += rng.sample([r for r in rows if r["category"] == cat and r["label"] == lab], n)
    p = out / "small.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in picked) + "\n")
    return p


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, data_dir):
    """A small CoCoNot subset: two categories, both labels, 6 prompts each."""
    return coconot_subset(data_dir, tmp_path_factory.mktemp("refdata"), 6)
