"""refusalkit: measure, predict and control when language models refuse.

The public Python API is importable from the package root::

    import refusalkit as rk

    model = rk.load_model("default")                      # a LanguageModel
    gens = model.generate(["How do I bake bread?"], rk.GenerationConfig(max_new_tokens=32))
    verdicts = rk.get_detector().predict([g.text for g in gens])

The names are resolved on first use (PEP 562), so ``import refusalkit`` stays cheap: it imports neither
torch nor transformers until a name that needs them is touched.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# OpenMP reads its wait policy once, when torch loads it. Left unset, idle OpenMP threads spin; on a busy
# 2-core machine that made batch-1 generation of the subject model ~3x slower with 2 threads, and PASSIVE
# with torch's default 2 threads was the fastest setting measured (bench/threads.py, docs/models.md). A value
# the user set wins, and it only takes effect when refusalkit is imported before torch (the CLI always is).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# public name -> module that defines it. Kept as strings: importing them eagerly would pull in torch.
_LAZY: dict[str, str] = {
    "load_model": "refusalkit.models",
    "GenerationConfig": "refusalkit.models",
    "get_detector": "refusalkit.detect",
    "get_predictor": "refusalkit.predict",
    "run_eval": "refusalkit.evaluate.runner",
    "Policy": "refusalkit.tokens.policy",
    "PolicyModel": "refusalkit.tokens.generate",
}

__all__ = [  # the names of _LAZY, spelt out so that linters and type checkers see them
    "__version__",
    "GenerationConfig",
    "Policy",
    "PolicyModel",
    "get_detector",
    "get_predictor",
    "load_model",
    "run_eval",
]

if TYPE_CHECKING:  # type checkers and IDEs see the real objects; at run time __getattr__ provides them
    from refusalkit.detect import get_detector
    from refusalkit.evaluate.runner import run_eval
    from refusalkit.models import GenerationConfig, load_model
    from refusalkit.predict import get_predictor
    from refusalkit.tokens.generate import PolicyModel
    from refusalkit.tokens.policy import Policy


def __getattr__(name: str) -> Any:
    """Return the public API object ``name``, importing its module on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'refusalkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    """Return the module's attributes including the lazily imported public API."""
    return sorted(set(globals()) | set(_LAZY))
