"""Value-laden statements in several languages: refusalkit's own mini set and the CIVICS release format.

Accepted rows (JSONL, JSON array or CSV):
- refusalkit's format: ``id``, ``statement``, ``language`` (ISO code), ``topic``, optional ``english``;
- the CIVICS release (``civics_dataset.json`` or the hub parquet/CSV): ``ID``, ``Statement`` or
  ``Original Prompt``, ``Language`` (``English``, ``German``, ...), ``Topic``, optional ``English Translation``
  / ``Statement - translated``, ``Country``, ``Data Producer Organization``, ``Organization Type`` /
  ``Type of Organization``, ``Consensus Annotation`` (kept in ``meta``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from refusalkit.data.io import read_records
from refusalkit.errors import InputError

LANG_CODES = {
    "english": "en",
    "german": "de",
    "deutsch": "de",
    "french": "fr",
    "français": "fr",
    "italian": "it",
    "italiano": "it",
    "turkish": "tr",
    "türkçe": "tr",
}
SUPPORTED = ("en", "de", "fr", "it", "tr")
_TEXT = ("statement", "Statement", "Original Prompt", "prompt")
_TRANSL = ("english", "English Translation", "Statement - translated")


@dataclass
class Statement:
    """One value-laden statement: its text in its own language, ISO language code, topic and extras."""

    id: str
    text: str
    language: str
    topic: str
    english: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def mini_set_path():
    """Return the path of refusalkit's own statement set (5 languages x 5 CIVICS topics, written for it)."""
    return resources.files("refusalkit") / "resources" / "values" / "statements_mini.jsonl"


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if row.get(k) not in (None, ""):
            return row[k]
    return None


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            if e.msg.startswith("Extra data"):  # a JSON Lines file named .json
                return read_records(path)
            raise InputError(f"malformed JSON: {e.msg}", file=str(path), line=e.lineno) from None
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), None)
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InputError("expected a JSON array of objects (the CIVICS release) or JSON Lines", file=str(path))
        return [{**r, "__line__": i} for i, r in enumerate(data, start=1)]
    return read_records(path)


def load_statements(path: str | os.PathLike | None = None, *, languages: list[str] | None = None) -> list[Statement]:
    """Return the statements of ``path`` (default: the bundled mini set), optionally only ``languages``.

    Raises InputError naming the file, row and field for a row without text, language or topic, or with a
    language refusalkit cannot prompt in.
    """
    if path is None:
        with resources.as_file(mini_set_path()) as p:
            rows, file = _rows(Path(p)), str(p)
    else:
        p = Path(path)
        if not p.is_file():
            raise InputError("no such file", file=str(p))
        rows, file = _rows(p), str(p)
    out: list[Statement] = []
    seen: set[str] = set()
    for i, r in enumerate(rows):
        line = r.get("__line__")
        text = _first(r, _TEXT)
        if not isinstance(text, str) or not text.strip():
            raise InputError("missing statement text", file=file, line=line, field="statement")
        lang_raw = _first(r, ("language", "Language"))
        if not isinstance(lang_raw, str):
            raise InputError("missing", file=file, line=line, field="language")
        lang = LANG_CODES.get(lang_raw.strip().lower(), lang_raw.strip().lower())
        if lang not in SUPPORTED:
            raise InputError(
                f"unsupported language {lang_raw!r}; supported: {', '.join(SUPPORTED)}",
                file=file,
                line=line,
                field="language",
            )
        topic = _first(r, ("topic", "Topic", "category"))
        if not isinstance(topic, str) or not topic.strip():
            raise InputError("missing", file=file, line=line, field="topic")
        sid = str(_first(r, ("id", "ID")) or f"row-{i + 1}")
        if sid in seen:
            raise InputError(f"duplicate id {sid!r}", file=file, line=line, field="id")
        seen.add(sid)
        used = (
            set(_TEXT) | set(_TRANSL) | {"language", "Language", "topic", "Topic", "category", "id", "ID", "__line__"}
        )
        out.append(
            Statement(
                id=sid,
                text=text.strip(),
                language=lang,
                topic=topic.strip(),
                english=_first(r, _TRANSL),
                meta={k: v for k, v in r.items() if k not in used},
            )
        )
    if languages:
        bad = [x for x in languages if x not in SUPPORTED]
        if bad:
            raise InputError(f"unsupported --languages {', '.join(bad)}; supported: {', '.join(SUPPORTED)}")
        out = [s for s in out if s.language in languages]
    if not out:
        raise InputError("no statements (after the language filter)", file=file)
    return out
