"""Reading response files for ``refusalkit detect``: every row needs a string ``response``; ``prompt`` is
optional but must be a string when present. Problems name the file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refusalkit.data.io import read_records
from refusalkit.errors import InputError

MAX_CHARS_WARN = 1_000_000


def read_responses(path: str | Path) -> tuple[list[dict[str, Any]], list[str], list[str] | None, dict[str, int]]:
    """Return ``(rows, responses, prompts, notes)`` of a JSONL/CSV file.

    ``prompts`` is ``None`` when no row has a prompt; rows without one get ``""``. ``notes`` counts empty
    responses and responses over 1 MB (they are judged on their opening and ending).
    """
    rows = read_records(path)
    responses, prompts, any_prompt = [], [], False
    notes = {"empty_responses": 0, "huge_responses": 0}
    for r in rows:
        line = r.get("__line__")
        if "response" not in r or r["response"] is None:
            raise InputError(
                "missing (every row needs the model's answer in 'response')",
                file=str(path),
                line=line,
                field="response",
            )
        v = r["response"]
        if not isinstance(v, str):
            raise InputError(f"expected a string, got {type(v).__name__}", file=str(path), line=line, field="response")
        p = r.get("prompt")
        if p is not None and not isinstance(p, str):
            raise InputError(f"expected a string, got {type(p).__name__}", file=str(path), line=line, field="prompt")
        any_prompt |= bool(p)
        notes["empty_responses"] += int(not v.strip())
        notes["huge_responses"] += int(len(v) >= MAX_CHARS_WARN)
        responses.append(v)
        prompts.append(p or "")
    return rows, responses, prompts if any_prompt else None, notes
