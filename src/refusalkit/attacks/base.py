"""The transform interface and registry: every attack rewrites a request through one :class:`Transform`.

A transform turns a harmful request into the prompt the target model sees. Deterministic transforms
(encodings, prefix injection, refusal suppression) compute it directly; attacker transforms (past and
future tense) ask an attacker model to rewrite it, in two steps that the attack loop batches and stores:
``attacker_request(prompt)`` is the attacker's input and ``finish(prompt, output)`` turns its output into
the target's prompt.

Adding a transform takes one file::

    from refusalkit.attacks import Transform, register_transform

    @register_transform
    class Shout(Transform):
        name = "shout"
        description = "the request in capitals"
        distinct_attempts = 1

        def apply(self, prompt, *, attempt, rng, attacker=None, meta=None):
            return prompt.upper()

and ``refusalkit attack --transform-file shout.py --transform shout ...`` (the file is run only when it
is named on the command line).
"""

from __future__ import annotations

import importlib.util
import random
import re
import sys
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from refusalkit.errors import RefusalkitError

# One completion of one attacker request (used by :meth:`AttackerTransform.apply` outside the loop).
Attacker = Callable[[str], str]
T = TypeVar("T", bound="type[Transform]")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class Transform(ABC):
    """One way of rewriting a request.

    ``name`` selects it (``--transform NAME``); ``needs_attacker`` says whether it needs an attacker model;
    ``distinct_attempts`` is how many different prompts it can give one request (``None``: unbounded, e.g.
    sampled by an attacker), so the loop does not repeat an attempt that would send the same prompt to a
    greedily decoding target.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_attacker: ClassVar[bool] = False
    distinct_attempts: ClassVar[int | None] = None

    @abstractmethod
    def apply(
        self,
        prompt: str,
        *,
        attempt: int,
        rng: random.Random,
        attacker: Attacker | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> str:
        """Return the prompt for attempt ``attempt`` (1-based) on request ``prompt``. ``rng`` is seeded per
        request and attempt; ``meta`` holds the request's other fields (JailbreakBench's ``target``, ...)."""

    @property
    def is_identity(self) -> bool:
        """Return True when the transform leaves every request unchanged (``none``)."""
        return False


class AttackerTransform(Transform):
    """A transform whose prompt an attacker model writes: :meth:`attacker_request` is what the attacker
    reads, :meth:`finish` cleans its answer. The attacker samples (``temperature``) up to
    ``max_new_tokens`` tokens, as in the paper this follows."""

    needs_attacker: ClassVar[bool] = True
    temperature: ClassVar[float] = 1.0
    max_new_tokens: ClassVar[int] = 150

    @abstractmethod
    def attacker_request(self, prompt: str, *, attempt: int) -> str:
        """Return the attacker model's input for rewriting ``prompt``."""

    def finish(self, prompt: str, output: str, *, attempt: int) -> str:
        """Return the target's prompt from the attacker's ``output``: trimmed; the original request when
        the attacker wrote nothing."""
        text = output.strip()
        return text if text else prompt

    def apply(
        self,
        prompt: str,
        *,
        attempt: int,
        rng: random.Random,
        attacker: Attacker | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> str:
        """Return the rewritten prompt, asking ``attacker`` once (the loop batches these calls itself)."""
        if attacker is None:
            raise RefusalkitError(f"transform {self.name!r} needs an attacker model (--attacker MODEL)")
        return self.finish(prompt, attacker(self.attacker_request(prompt, attempt=attempt)), attempt=attempt)


TRANSFORMS: dict[str, type[Transform]] = {}


def register_transform(cls: T) -> T:
    """Register a :class:`Transform` subclass under its ``name`` and return it (use as a decorator).

    Raises RefusalkitError for a missing or malformed name, or a name another class already holds."""
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RefusalkitError(
            f"transform class {cls.__name__} needs a name of lower-case letters, digits, '-' or '_' (got {name!r})"
        )
    if not (isinstance(cls, type) and issubclass(cls, Transform)):
        raise RefusalkitError(f"{cls!r} is not a Transform subclass")
    old = TRANSFORMS.get(name)
    if old is not None and old is not cls and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise RefusalkitError(f"transform name {name!r} is already taken by {old.__module__}.{old.__qualname__}")
    TRANSFORMS[name] = cls
    return cls


def _builtins() -> None:
    # The shipped transforms register themselves on import; importing here keeps the registry complete
    # whichever module a caller imported first.
    from refusalkit.attacks import encodings, injections, tense  # noqa: F401


def transform_names() -> list[str]:
    """Return the registered transform names, sorted."""
    _builtins()
    return sorted(TRANSFORMS)


def get_transform(name: str) -> Transform:
    """Return a new instance of the transform registered as ``name``; RefusalkitError lists the known
    names otherwise."""
    _builtins()
    cls = TRANSFORMS.get(name)
    if cls is None:
        raise RefusalkitError(
            f"unknown transform {name!r}; known: {', '.join(sorted(TRANSFORMS))} "
            "(or add one with --transform-file FILE.py)"
        )
    return cls()


def load_transform_file(path: str | Path) -> list[str]:
    """Run the Python file ``path`` (which registers transforms with :func:`register_transform`) and return
    the names it added. Raises RefusalkitError naming the file (and line) when it is missing, does not
    run, or registers nothing."""
    p = Path(path)
    if not p.is_file():
        raise RefusalkitError(f"--transform-file {p}: no such file")
    _builtins()
    before = dict(TRANSFORMS)
    mod_name = f"refusalkit_user_transform_{abs(hash(str(p.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, p)
    if spec is None or spec.loader is None:
        raise RefusalkitError(f"--transform-file {p}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except RefusalkitError as e:
        raise RefusalkitError(f"--transform-file {p}: {e}") from None
    except SyntaxError as e:
        raise RefusalkitError(f"{p}:{e.lineno}: syntax error: {e.msg}") from None
    except Exception as e:  # noqa: BLE001 - any failure of user code is reported as one line naming it
        frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename) == p]
        where = f"{p}:{frames[-1].lineno}" if frames else str(p)
        raise RefusalkitError(f"{where}: {type(e).__name__}: {e}") from None
    added = sorted(n for n, c in TRANSFORMS.items() if before.get(n) is not c)
    if not added:
        raise RefusalkitError(
            f"--transform-file {p} registers no transform (decorate a Transform subclass with @register_transform)"
        )
    return added
