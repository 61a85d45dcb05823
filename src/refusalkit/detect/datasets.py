"""Labelled response sets for training and evaluating detectors: reading files, the Reuter & Schulze
protocol split, and the mix the shipped default detector is trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refusalkit.data.conventions import from_gold
from refusalkit.data.io import read_records, require_str
from refusalkit.errors import InputError

RS_FILE = "chatgpt_refusals.jsonl"


def read_labelled_dir(folder: str | Path, prefix: str = "written") -> list[dict[str, Any]]:
    """Return the labelled rows of every ``*.jsonl`` in ``folder`` (sorted by name), each file one ``source``
    (``<prefix>:<file stem>``) so that leave-one-source-out holds a whole file (writer) out at a time.

    The repository's ``data/detect/written/`` holds the responses written for refusalkit in other models'
    styles that the shipped detectors train on (see its README).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder of labelled .jsonl files", file=str(folder))
    out = []
    for f in sorted(folder.glob("*.jsonl"), key=lambda x: x.name):
        rows = read_labelled(f, "binary")
        for r in rows:
            r["source"] = f"{prefix}:{f.stem}"
        out.extend(rows)
    return out


def read_labelled(path: str | Path, convention: str = "binary", label_field: str | None = None) -> list[dict[str, Any]]:
    """Return rows of a labelled response file with ``prompt``, ``response``, ``label`` (taxonomy) and
    ``source``; rows whose gold label the convention excludes are dropped.

    The gold label is read from ``label_field`` (default: ``fine_label`` for Reuter & Schulze, else
    ``label``) and mapped into the taxonomy with :func:`refusalkit.data.conventions.from_gold`.
    """
    rows = read_records(path)
    field = label_field or ("fine_label" if convention in ("reuter_schulze", "rs") else "label")
    out = []
    for r in rows:
        resp = require_str(r, "response", file=str(path), allow_empty=True)
        prompt = r.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise InputError(
                f"expected a string, got {type(prompt).__name__}",
                file=str(path),
                line=r.get("__line__"),
                field="prompt",
            )
        gold = r.get(field, r.get("label"))
        if gold is None:
            raise InputError("missing", file=str(path), line=r.get("__line__"), field=field)
        try:
            label = from_gold(gold, convention)
        except Exception as e:
            raise InputError(str(e), file=str(path), line=r.get("__line__"), field=field) from None
        if label is None:
            continue
        out.append(
            {
                "id": r.get("id", f"line-{r.get('__line__')}"),
                "prompt": prompt or "",
                "response": resp,
                "label": label,
                "source": str(r.get("source") or r.get("source_model") or Path(path).stem),
                "category": r.get("category"),
            }
        )
    return out


def rs_split(path: str | Path, random_state: int = 0) -> tuple[list[dict], list[dict], list[dict]]:
    """Return (train, validation, test) of the Reuter & Schulze set as in the paper: drop ``excluded``,
    then 70/15/15 with ``train_test_split(random_state=0)`` twice."""
    from sklearn.model_selection import train_test_split

    rows = read_labelled(path, "reuter_schulze")
    for r in rows:
        r["source"] = "reuter_schulze"
    idx = list(range(len(rows)))
    tr, rest = train_test_split(idx, test_size=0.3, random_state=random_state)
    va, te = train_test_split(rest, test_size=0.5, random_state=random_state)
    return [rows[i] for i in tr], [rows[i] for i in va], [rows[i] for i in te]
