"""Labelled response sets for training and evaluating detectors: reading files, the Reuter & Schulze
protocol split, and the mix the shipped default detector is trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refusalkit.data.conventions import from_gold
from refusalkit.data.io import read_records, require_str
from refusalkit.errors import InputError

RS_FILE = "chatgpt_refusals.jsonl"
# Labels of the real-output corpus (data/detect/real/corpus.jsonl, docs/labelling.md): the taxonomy plus
# ``excluded`` (undecidable rows, never trained or tested on).
EXCLUDED = "excluded"


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


def read_labelled(
    path: str | Path,
    convention: str = "binary",
    label_field: str | None = None,
    group_field: str | None = None,
    counts: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Return rows of a labelled response file with ``prompt``, ``response``, ``label`` (taxonomy) and
    ``source``; rows whose gold label the convention excludes (or that are labelled ``excluded``) are
    dropped and counted in ``counts["excluded"]`` when ``counts`` is given.

    The gold label is read from ``label_field`` (default: ``fine_label`` for Reuter & Schulze, else
    ``label``) and mapped into the taxonomy with :func:`refusalkit.data.conventions.from_gold`. With
    ``group_field``, each row also gets ``group``: that field's value as text (``(missing)`` where a row
    lacks it); a file where no row has the field is an error.
    """
    rows = read_records(path)
    field = label_field or ("fine_label" if convention in ("reuter_schulze", "rs") else "label")
    if group_field is not None and rows and not any(r.get(group_field) is not None for r in rows):
        raise InputError(f"no row has the field given to --by ({group_field!r})", file=str(path), field=group_field)
    out = []
    skipped = 0
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
            label = None if gold == EXCLUDED else from_gold(gold, convention)
        except Exception as e:
            raise InputError(str(e), file=str(path), line=r.get("__line__"), field=field) from None
        if label is None:
            skipped += 1
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
        if group_field is not None:
            g = r.get(group_field)
            out[-1]["group"] = "(missing)" if g is None else str(g)
    if counts is not None:
        counts[EXCLUDED] = counts.get(EXCLUDED, 0) + skipped
    return out


def read_real_corpus(path: str | Path, counts: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Return the labelled rows of the real-output corpus (``data/detect/real/corpus.jsonl`` in the
    repository, labelled under docs/labelling.md), ``excluded`` rows skipped (counted in
    ``counts["excluded"]`` when ``counts`` is given).

    Each row has ``id``, ``prompt``, ``response``, ``label`` (taxonomy; binary = anything but
    ``full_compliance`` is a refusal, XSTest's convention), ``source`` (``real:<family>``, so that holding a
    source out holds a model family out), ``family``, ``source_model``, ``dataset`` (the corpus' own
    ``source``: jbb_artifacts, derta_model_responses, chatgpt_refusals), ``attack``, ``goal`` and
    ``auto_label`` (the source's automatic label: for measuring agreement only, never for training).
    """
    out = []
    skipped = 0
    for r in read_records(path):
        line = r.get("__line__")
        resp = require_str(r, "response", file=str(path), allow_empty=True)
        label = r.get("label")
        if label == EXCLUDED:
            skipped += 1
            continue
        try:
            label = from_gold(label, "xstest") if isinstance(label, str) else None
        except Exception as e:
            raise InputError(str(e), field="label", file=str(path), line=line) from None
        if label is None:
            raise InputError("missing or not a taxonomy label", field="label", file=str(path), line=line)
        family = require_str(r, "family", file=str(path))
        prompt = r.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise InputError(
                f"expected a string, got {type(prompt).__name__}", field="prompt", file=str(path), line=line
            )
        out.append(
            {
                "id": r.get("id", f"line-{r.get('__line__')}"),
                "prompt": prompt or "",
                "response": resp,
                "label": label,
                "source": f"real:{family}",
                "family": family,
                "source_model": r.get("source_model"),
                "dataset": r.get("source"),
                "attack": r.get("attack"),
                "goal": r.get("goal"),
                "auto_label": r.get("auto_label"),
            }
        )
    if counts is not None:
        counts[EXCLUDED] = counts.get(EXCLUDED, 0) + skipped
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
