"""Policy files: the categories of a deployment's content policy, with what is allowed and what is not.

A policy is YAML (``.yaml``/``.yml``), TOML (``.toml``) or JSON (``.json``)::

    name: school-assistant            # optional; defaults to the file name
    description: A homework helper for teenagers.   # optional, given to the writing LLM
    categories:
      - name: self-harm
        description: Suicide and self-injury.          # optional
        allowed: [explaining warning signs, where to find help, history of mental-health care]
        disallowed: [methods of self-injury, encouragement to self-harm]
        benign_examples: [What are warning signs that a friend is struggling?]   # optional seeds
        harmful_examples: [What is the most painless way to hurt myself?]        # optional seeds

``allowed`` and ``disallowed`` are required non-empty lists of strings; category names must be unique.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refusalkit.errors import InputError


@dataclass(frozen=True)
class Category:
    """One policy category: what a model should help with (``allowed``) and what it should refuse."""

    name: str
    allowed: tuple[str, ...]
    disallowed: tuple[str, ...]
    description: str = ""
    benign_examples: tuple[str, ...] = ()
    harmful_examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    """A named policy with its categories."""

    name: str
    categories: tuple[Category, ...]
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the policy as a JSON-ready dict (recorded with every custom set)."""
        return {
            "name": self.name,
            "description": self.description,
            "categories": [
                {
                    "name": c.name,
                    "description": c.description,
                    "allowed": list(c.allowed),
                    "disallowed": list(c.disallowed),
                    "benign_examples": list(c.benign_examples),
                    "harmful_examples": list(c.harmful_examples),
                }
                for c in self.categories
            ],
        }


def _parse(path: Path) -> Any:
    text = path.read_bytes()
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            try:
                return yaml.safe_load(text.decode("utf-8"))
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                raise InputError(
                    f"malformed YAML: {getattr(e, 'problem', e)}", file=str(path), line=mark.line + 1 if mark else None
                ) from None
        if suffix == ".toml":
            import tomllib

            try:
                return tomllib.loads(text.decode("utf-8"))
            except tomllib.TOMLDecodeError as e:
                raise InputError(f"malformed TOML: {e}", file=str(path)) from None
        if suffix == ".json":
            try:
                return json.loads(text.decode("utf-8"))
            except json.JSONDecodeError as e:
                raise InputError(f"malformed JSON: {e.msg}", file=str(path), line=e.lineno) from None
    except UnicodeDecodeError:
        raise InputError("not valid UTF-8", file=str(path)) from None
    raise InputError(f"unknown policy format {suffix!r}; use .yaml, .yml, .toml or .json", file=str(path))


def _strings(v: Any, *, file: str, fld: str, required: bool) -> tuple[str, ...]:
    if v is None:
        if required:
            raise InputError("missing (a non-empty list of strings)", file=file, field=fld)
        return ()
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
        raise InputError("expected a list of non-empty strings", file=file, field=fld)
    if required and not v:
        raise InputError("empty (a non-empty list of strings is required)", file=file, field=fld)
    return tuple(x.strip() for x in v)


def load_policy(path: str | os.PathLike) -> Policy:
    """Return the validated policy in ``path``; raises InputError naming the file (and line or field)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such file", file=str(p))
    data = _parse(p)
    f = str(p)
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping at the top level, got {type(data).__name__}", file=f)
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        raise InputError("missing or empty (a list of categories is required)", file=f, field="categories")
    out, seen = [], set()
    for i, c in enumerate(cats):
        where = f"categories[{i}]"
        if not isinstance(c, dict):
            raise InputError("expected a mapping", file=f, field=where)
        name = c.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InputError("missing or not a string", file=f, field=f"{where}.name")
        if name in seen:
            raise InputError(f"duplicate category name {name!r}", file=f, field=f"{where}.name")
        seen.add(name)
        unknown = set(c) - {"name", "description", "allowed", "disallowed", "benign_examples", "harmful_examples"}
        if unknown:
            raise InputError(f"unknown key(s) {', '.join(sorted(unknown))}", file=f, field=where)
        desc = c.get("description", "")
        if not isinstance(desc, str):
            raise InputError("expected a string", file=f, field=f"{where}.description")
        out.append(
            Category(
                name=name.strip(),
                description=desc.strip(),
                allowed=_strings(c.get("allowed"), file=f, fld=f"{where}.allowed", required=True),
                disallowed=_strings(c.get("disallowed"), file=f, fld=f"{where}.disallowed", required=True),
                benign_examples=_strings(
                    c.get("benign_examples"), file=f, fld=f"{where}.benign_examples", required=False
                ),
                harmful_examples=_strings(
                    c.get("harmful_examples"), file=f, fld=f"{where}.harmful_examples", required=False
                ),
            )
        )
    name = data.get("name", p.stem)
    if not isinstance(name, str) or not name.strip():
        raise InputError("expected a non-empty string", file=f, field="name")
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise InputError("expected a string", file=f, field="description")
    return Policy(name=name.strip(), categories=tuple(out), description=desc.strip())
