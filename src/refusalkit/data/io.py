"""Reading and writing record files: JSONL and CSV in, JSONL out (atomically).

Every problem in an input file is reported as an :class:`~refusalkit.errors.InputError` naming the file,
line and field, so the CLI can print one clear message and exit with code 2.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from refusalkit.data.records import Example
from refusalkit.errors import InputError


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Return the JSON objects of a JSONL file, one per non-blank line.

    Raises InputError for a missing or empty file, non-UTF-8 bytes, malformed JSON, or a line that is not
    a JSON object.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("no such file", file=str(p))
    rows: list[dict[str, Any]] = []
    with open(p, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"not valid UTF-8 (byte {e.start} of the line)", file=str(p), line=lineno) from None
            if lineno == 1:
                text = text.removeprefix("\ufeff")
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise InputError(f"malformed JSON: {e.msg} (column {e.colno})", file=str(p), line=lineno) from None
            if not isinstance(obj, dict):
                raise InputError(f"expected a JSON object, got {type(obj).__name__}", file=str(p), line=lineno)
            obj["__line__"] = lineno
            rows.append(obj)
    if not rows:
        raise InputError("the file contains no records", file=str(p))
    return rows


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Return the rows of a CSV file with a header line as dicts (empty cells left out)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such file", file=str(p))
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = p.read_bytes()[: e.start].count(b"\n") + 1
        raise InputError("not valid UTF-8", file=str(p), line=line) from None
    reader = csv.DictReader(io.StringIO(text))
    rows = []
    for row in reader:
        d = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
        if d:
            d["__line__"] = reader.line_num
            rows.append(d)
    if not rows:
        raise InputError("the file contains no records", file=str(p))
    return rows


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Return raw rows of a ``.jsonl``/``.json`` (JSON Lines) or ``.csv`` file, each with ``__line__``."""
    suffix = Path(path).suffix.lower()
    return read_csv(path) if suffix == ".csv" else read_jsonl(path)


def require_str(row: dict[str, Any], field: str, *, file: str, allow_empty: bool = False) -> str:
    """Return ``row[field]`` if it is a (non-empty) string, else raise an InputError naming it."""
    line = row.get("__line__")
    if field not in row or row[field] is None:
        raise InputError("missing", file=file, line=line, field=field)
    v = row[field]
    if not isinstance(v, str):
        raise InputError(f"expected a string, got {type(v).__name__}", file=file, line=line, field=field)
    if not allow_empty and not v.strip():
        raise InputError("empty", file=file, line=line, field=field)
    return v


def rows_to_examples(
    rows: list[dict[str, Any]], *, file: str, source: str | None = None, field_map: dict[str, str] | None = None
) -> list[Example]:
    """Return Examples from raw rows: ``prompt`` is required, ``id`` defaults to ``line-N``, ids must be unique.

    ``field_map`` renames source columns to record fields (e.g. ``{"goal": "prompt"}``).
    """
    out: list[Example] = []
    seen: dict[str, int] = {}
    for row in rows:
        line = row.get("__line__")
        if field_map:
            row = {field_map.get(k, k): v for k, v in row.items()}
        prompt = require_str(row, "prompt", file=file)
        rid = row.get("id")
        rid = f"line-{line}" if rid is None else str(rid)
        if rid in seen:
            raise InputError(f"duplicate id {rid!r} (first on line {seen[rid]})", file=file, line=line, field="id")
        seen[rid] = line  # type: ignore[assignment]
        d = {k: v for k, v in row.items() if k != "__line__"}
        d["id"], d["prompt"] = rid, prompt
        for key in ("label", "category", "expected", "source"):
            if key in d and d[key] is not None and not isinstance(d[key], str):
                d[key] = str(d[key])
        if source and not d.get("source"):
            d["source"] = source
        ex = Example.from_dict(d)
        ex.origin = f"{file}:{line}" if line is not None else file
        out.append(ex)
    return out


def read_examples(path: str | os.PathLike, *, limit: int | None = None) -> list[Example]:
    """Return the prompts of a local JSONL/CSV file as Examples (see :func:`rows_to_examples`)."""
    rows = read_records(path)
    ex = rows_to_examples(rows, file=str(path), source=Path(path).stem)
    return ex[:limit] if limit else ex


def _umask() -> int:
    """Return the process umask without changing it (Linux: /proc; elsewhere a set-and-restore)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _finite(obj: Any) -> Any:
    """Return ``obj`` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps_strict(obj: Any, **kw: Any) -> str:
    """Return ``obj`` as strict JSON: a NaN or infinite number becomes ``null`` instead of the ``NaN`` token
    that json.dumps writes by default and strict readers (browsers, jq, other languages) reject."""
    try:
        return json.dumps(obj, allow_nan=False, **kw)
    except ValueError:
        return json.dumps(_finite(obj), allow_nan=False, **kw)


def _open_temp(p: Path) -> tuple[int, str]:
    """Return ``(fd, name)`` of a temp file beside ``p`` whose mode is what ``open(p, "w")`` would give:
    the existing file's mode, or 0666 minus the umask (mkstemp alone makes every output 0600)."""
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        mode = stat.S_IMODE(p.stat().st_mode) if p.is_file() else 0o666 & ~_umask()
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSONL to ``path`` atomically (temp file + rename); return the number written.

    Either the complete new file appears or the old one (if any) is left untouched. A NaN or infinite
    number is written as ``null`` (see :func:`dumps_strict`).
    """
    p = Path(path)
    fd, tmp = _open_temp(p)
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(dumps_strict(row, ensure_ascii=False) + "\n")
                n += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return n


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (temp file + rename), with the mode a plain write would give."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as a strict JSON document to ``path`` atomically (NaN and infinities as ``null``)."""
    write_text_atomic(path, dumps_strict(obj, indent=indent, ensure_ascii=False) + "\n")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + rename), with the mode a plain write would give."""
    p = Path(path)
    fd, tmp = _open_temp(p)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a JSONL file without the ``__line__`` bookkeeping key."""
    for row in read_jsonl(path):
        row.pop("__line__", None)
        yield row
