"""The library face: ``import refusalkit`` is cheap and exposes the public API; the README's Python API
snippet runs as written (on the real bundled model)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("full_compliance", "partial_refusal", "full_refusal", "redirection")

# public name -> the module that defines it (what the lazy attribute must be identical to)
API = {
    "load_model": "refusalkit.models.spec",
    "GenerationConfig": "refusalkit.models.base",
    "get_detector": "refusalkit.detect",
    "get_predictor": "refusalkit.predict.prompt_model",
    "run_eval": "refusalkit.evaluate.runner",
    "Policy": "refusalkit.tokens.policy",
    "PolicyModel": "refusalkit.tokens.generate",
}


def _python(code: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (so sys.modules shows what the import really pulled in)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_import_is_cheap_and_exposes_the_api():
    code = f"""
import json, sys
import refusalkit
heavy = sorted(m for m in ("torch", "transformers", "sklearn", "numpy") if m in sys.modules)
listed = list(refusalkit.__all__)
in_dir = all(n in dir(refusalkit) for n in listed)
api = {json.dumps(API)}
same = {{}}
for name, mod in api.items():
    __import__(mod)
    same[name] = getattr(refusalkit, name) is getattr(sys.modules[mod], name)
print(json.dumps({{"heavy": heavy, "all": listed, "in_dir": in_dir, "same": same, "version": refusalkit.__version__}}))
"""
    r = _python(code)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [], f"import refusalkit pulled in {out['heavy']}"
    assert set(out["all"]) == {"__version__", *API}
    assert out["in_dir"]
    assert out["same"] == {name: True for name in API}
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", out["version"])


def test_unknown_attribute_raises_attribute_error():
    import refusalkit

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        refusalkit.nope  # noqa: B018
    assert not hasattr(refusalkit, "also_not_there")


def test_package_is_typed():
    import refusalkit

    assert (Path(refusalkit.__file__).parent / "py.typed").is_file()
    assert '"py.typed"' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # shipped as package data


def readme_snippet() -> str:
    """Return the first ```python block of README.md's "Python API" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^## Python API\n(.*?)^## ", text, flags=re.S | re.M)
    assert m, "README.md has no '## Python API' section"
    block = re.search(r"^```python\n(.*?)^```", m.group(1), flags=re.S | re.M)
    assert block, "the Python API section has no ```python block"
    return block.group(1)


def test_readme_snippet_is_short_and_uses_the_api():
    code = readme_snippet()
    lines = [ln for ln in code.splitlines() if ln.strip()]
    assert len(lines) <= 12
    assert "import refusalkit" in code


@pytest.mark.slow
def test_readme_snippet_runs(tmp_path, bundled_dir):
    code = readme_snippet()
    r = _python(code, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(rows) == 2, r.stdout
    for row in rows:
        label, p = row.split()[:2]
        assert label in LABELS
        assert 0.0 <= float(p.removeprefix("p=")) <= 1.0
