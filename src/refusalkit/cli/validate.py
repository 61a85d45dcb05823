"""Checks of command-line options and output paths that every command runs first, before it loads a model,
reads a benchmark or writes anything, so a bad value costs the user no time and leaves nothing behind.

Each check raises :class:`~refusalkit.errors.RefusalkitError` with one line naming the option; the CLI's
``handle_errors`` turns that into exit code 2.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from refusalkit.errors import RefusalkitError

if TYPE_CHECKING:
    from refusalkit.models.base import GenerationConfig


def positive(option: str, value: int | None) -> None:
    """Return None if ``value`` is None or a whole number of at least 1; else raise naming ``option``."""
    if value is not None and value < 1:
        raise RefusalkitError(f"{option} must be at least 1, got {value}")


def at_least(option: str, value: float | None, low: float) -> None:
    """Return None if ``value`` is None or a finite number >= ``low``; else raise naming ``option``."""
    if value is None:
        return
    if not math.isfinite(value) or value < low:
        raise RefusalkitError(f"{option} must be a number of at least {low:g}, got {value}")


def above(option: str, value: float | None, low: float) -> None:
    """Return None if ``value`` is None or a finite number > ``low``; else raise naming ``option``."""
    if value is None:
        return
    if not math.isfinite(value) or value <= low:
        raise RefusalkitError(f"{option} must be a number above {low:g}, got {value}")


def probability(option: str, value: float | None, *, zero_ok: bool = False) -> None:
    """Return None if ``value`` is None or in (0, 1] (``[0, 1]`` with ``zero_ok``); else raise naming ``option``."""
    if value is None:
        return
    ok = math.isfinite(value) and (0 <= value <= 1 if zero_ok else 0 < value <= 1)
    if not ok:
        raise RefusalkitError(f"{option} must be in {'[0, 1]' if zero_ok else '(0, 1]'}, got {value}")


def confidence(option: str, value: float) -> None:
    """Return None if ``value`` is an interval level in [0.5, 1); else raise naming ``option``."""
    if not (math.isfinite(value) and 0.5 <= value < 1):
        raise RefusalkitError(f"{option} must be in [0.5, 1), got {value}")


def generation(
    *,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    seed: int | None = None,
) -> None:
    """Check the generation options most commands share (``None`` = not an option of that command).

    ``--temperature`` 0 means greedy decoding; a negative or NaN one is refused rather than silently
    read as greedy.
    """
    positive("--max-new-tokens", max_new_tokens)
    at_least("--temperature", temperature, 0)
    probability("--top-p", top_p)
    positive("--batch-size", batch_size)
    positive("--limit", limit)
    if seed is not None and not 0 <= seed < 2**63:
        raise RefusalkitError(f"--seed must be in [0, 2**63), got {seed}")


def generation_config(
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    system_prompt: str | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
) -> GenerationConfig:
    """Check the shared generation options (as ``generation``; ``batch_size`` and ``limit`` are only checked)
    and return the GenerationConfig they make."""
    from refusalkit.models.base import GenerationConfig

    generation(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        limit=limit,
        seed=seed,
    )
    return GenerationConfig(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, system_prompt=system_prompt
    )


def _existing_ancestor(p: Path) -> Path:
    q = p
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def _check_creatable_under(option: str, path: Path, start: Path) -> None:
    """Raise unless a file could be created at ``start`` (or in the folders that would be made above it).

    The probe creates and removes a temporary file in the nearest existing folder: permission bits alone
    do not tell (root passes every access() check, yet /proc refuses new files)."""
    anc = _existing_ancestor(start)
    if not anc.is_dir():
        raise RefusalkitError(f"{option} {path}: {anc} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".refusalkit-probe.", dir=anc)
    except OSError as e:
        raise RefusalkitError(f"{option} {path}: cannot create files in {anc} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(tmp)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def output_file(option: str, path: Path | str, *, inputs: Iterable[Path | str | None] = ()) -> None:
    """Check that ``path`` can be written as an output file: not an existing folder, not one of
    ``inputs`` (so the input is never overwritten), and in a folder that exists or can be created.

    Raises RefusalkitError naming ``option``; returns None and creates nothing."""
    p = Path(path)
    if p.is_dir():
        raise RefusalkitError(f"{option} {p} is a folder; give a file path")
    for src in inputs:
        if src is not None and Path(src).is_file() and _same_file(p, Path(src)):
            raise RefusalkitError(f"{option} {p} is also an input file; write the output elsewhere")
    _check_creatable_under(option, p, p.parent)


def output_dir(option: str, path: Path | str | None) -> None:
    """Check that ``path`` (if given) can be used as an output folder: not an existing file, and an existing
    writable folder or one that can be created. Raises RefusalkitError naming ``option``."""
    if path is None:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RefusalkitError(f"{option} {p} is a file; give a folder path")
    _check_creatable_under(option, p, p)


def input_path(spec: str | Path) -> Path | None:
    """Return ``spec`` as a Path when it names an existing file (a prompt file rather than a benchmark name)."""
    p = Path(spec)
    return p if p.is_file() else None
