"""Training data for refusal tokens: labelled prompts, stratified splits, and tagged targets.

A labelled prompt file has ``prompt``, ``category``, ``label`` and optionally ``response`` and ``id``.
``label`` says whether the prompt should be refused (``should_not_comply``, ``refuse``, ``unsafe``) or
answered (``should_comply``, ``comply``, ``safe``: contrast prompts that merely look refusable).
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refusalkit.data.io import read_records, require_str
from refusalkit.errors import InputError
from refusalkit.tokens.scheme import RESPOND, TokenScheme

REFUSE_LABELS = {"should_not_comply", "refuse", "refusal", "unsafe", "harmful", "noncompliance"}
COMPLY_LABELS = {"should_comply", "comply", "compliance", "safe", "benign", "contrast"}
SPLITS = ("train", "calibration", "test")
#: A row may carry its split in this field (a data set built with its own splits, e.g. by
#: ``scripts/build_token_data.py``); ``val`` rows are held out of training, calibration and test alike.
SPLIT_FIELD = "token_split"
PRESPLIT_VALUES = ("train", "val", "calibration", "test")
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
DEFAULT_SEED = 1234

# refusalkit's own refusal texts, a few per category so that the model learns the gist, not one string.
REFUSAL_TEXTS: dict[str, list[str]] = {
    "safety": [
        "I can't help with that. It could cause real harm to people, so I won't give instructions or details for it.",
        "I'm sorry, but I won't assist with this request because it could put someone's safety at risk.",
        "I can't do that. This request asks for something dangerous or harmful, and I'm not able to support it.",
        "Sorry, I can't provide that. If someone is in danger, please contact local emergency services.",
        "I won't help with this one: it could be used to hurt people or break the law.",
        "I'm not able to help with that request, as it raises serious safety and privacy concerns.",
    ],
    "incomplete": [
        "I'm sorry, but I can't answer that as asked: the request is missing details I would need. Could you tell me more?",
        "I can't help with this yet because the question is incomplete or unclear. What exactly do you mean?",
        "Sorry, I don't have enough information to answer that. Please give me the missing context.",
        "I can't answer this as written: it refers to something you haven't shared with me. Could you provide it?",
        "I'm unable to respond properly, because the request rests on a false or unclear premise. Can you clarify?",
    ],
    "indeterminate": [
        "I can't give a single answer to that: it depends on personal values and there is no objective answer.",
        "Sorry, there is no definitive answer to this question; it is a matter of opinion and perspective.",
        "I'm not able to decide that for you, because the answer is subjective and people reasonably disagree.",
        "I can't settle this one: it has no universally correct answer, and it depends on who you ask.",
    ],
    "unsupported": [
        "I'm sorry, but I can't do that: it is beyond what I am able to do as a text-based assistant.",
        "I can't help with this, because it needs abilities or up-to-date information that I don't have.",
        "Sorry, I'm unable to do that. I can't browse, see files, or act outside this conversation.",
        "I can't complete this request, as it goes beyond my capabilities as a language model.",
        "I'm not able to do that: I have no access to real-time data, devices or the outside world.",
    ],
    "humanizing": [
        "I'm sorry, but I can't answer that as if I were a person. I'm an AI and don't have feelings or a life of my own.",
        "I can't share personal experiences, because I'm an AI language model and don't have any.",
        "Sorry, I don't have emotions, a body or personal memories, so I can't answer that honestly.",
        "I'm not able to do that: as an AI, I have no personal preferences, relationships or experiences.",
    ],
    "*": [
        "I'm sorry, but I can't help with that request.",
        "I can't assist with this. Is there something else I can help you with?",
        "Sorry, I'm not able to respond to that request.",
        "I won't be able to help with that one.",
    ],
}


@dataclass
class LabelledPrompt:
    """One labelled prompt: ``refuse`` tells whether it should be refused."""

    id: str
    prompt: str
    category: str | None
    refuse: bool
    response: str | None = None
    label: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the record."""
        d = {
            "id": self.id,
            "prompt": self.prompt,
            "category": self.category,
            "label": self.label,
            "expected": "refuse" if self.refuse else "comply",
        }
        if self.response is not None:
            d["response"] = self.response
        return {**self.meta, **d}


def read_labelled(path: str | os.PathLike) -> list[LabelledPrompt]:
    """Return the labelled prompts of a JSONL/CSV file.

    Raises InputError naming the file, line and field for a missing prompt, an unknown label, a refusal
    without a category, or a duplicate id.
    """
    file = str(path)
    out: list[LabelledPrompt] = []
    seen: dict[str, int] = {}
    for row in read_records(path):
        line = row.get("__line__")
        prompt = require_str(row, "prompt", file=file)
        label = require_str(row, "label", file=file).strip()
        low = label.lower()
        if low in REFUSE_LABELS:
            refuse = True
        elif low in COMPLY_LABELS:
            refuse = False
        else:
            raise InputError(
                f"unknown label {label!r}; use should_not_comply/refuse/unsafe or should_comply/comply/safe",
                file=file,
                line=line,
                field="label",
            )
        cat = row.get("category")
        if cat is not None and not isinstance(cat, str):
            raise InputError(f"expected a string, got {type(cat).__name__}", file=file, line=line, field="category")
        if refuse and not (cat and cat.strip()):
            raise InputError("a prompt to refuse needs a category", file=file, line=line, field="category")
        resp = row.get("response")
        if resp is not None and not isinstance(resp, str):
            raise InputError(f"expected a string, got {type(resp).__name__}", file=file, line=line, field="response")
        given = row.get(SPLIT_FIELD)
        if given is not None and given not in PRESPLIT_VALUES:
            raise InputError(
                f"unknown split {given!r}; use one of {', '.join(PRESPLIT_VALUES)}",
                file=file,
                line=line,
                field=SPLIT_FIELD,
            )
        rid = str(row.get("id", f"line-{line}"))
        if rid in seen:
            raise InputError(f"duplicate id {rid!r} (first on line {seen[rid]})", file=file, line=line, field="id")
        seen[rid] = line  # type: ignore[assignment]
        meta = {k: v for k, v in row.items() if k not in ("__line__", "id", "prompt", "label", "category", "response")}
        out.append(LabelledPrompt(rid, prompt, cat.strip() if cat else None, refuse, resp or None, label, meta))
    return out


def stratified_split(
    items: list[LabelledPrompt], *, seed: int = DEFAULT_SEED, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
) -> dict[str, list[LabelledPrompt]]:
    """Return ``{"train", "calibration", "test"}`` lists, stratified by (category, label), deterministic.

    Within each stratum the ids are sorted, shuffled with ``seed`` and cut by ``fractions``, so the split
    of a prompt depends only on its stratum's ids and the seed, not on the file's order.

    When every item carries a ``token_split`` (:data:`SPLIT_FIELD`), that split is used as given
    (``seed`` and ``fractions`` are then not used) and a ``"val"`` list is added when some rows have it.
    """
    given = [it.meta.get(SPLIT_FIELD) for it in items]
    if any(given):
        if not all(given):
            raise InputError(
                f"{sum(1 for g in given if not g)} of {len(items)} rows have no '{SPLIT_FIELD}' while the others "
                "have one; give every row its split or none"
            )
        pre: dict[str, list[LabelledPrompt]] = {s: [] for s in SPLITS}
        for it, g in zip(items, given):
            pre.setdefault(str(g), []).append(it)
        return {k: sorted(v, key=lambda x: x.id) for k, v in pre.items()}
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise InputError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    strata: dict[tuple, list[LabelledPrompt]] = defaultdict(list)
    for it in items:
        strata[(it.category or "", it.refuse)].append(it)
    out: dict[str, list[LabelledPrompt]] = {s: [] for s in SPLITS}
    for key in sorted(strata):
        group = sorted(strata[key], key=lambda x: x.id)
        random.Random(f"{seed}:{key[0]}:{key[1]}").shuffle(group)
        n = len(group)
        n_train = round(n * fractions[0])
        n_cal = round(n * (fractions[0] + fractions[1])) - n_train
        out["train"] += group[:n_train]
        out["calibration"] += group[n_train : n_train + n_cal]
        out["test"] += group[n_train + n_cal :]
    return out


def split_manifest(splits: dict[str, list[LabelledPrompt]]) -> dict[str, Any]:
    """Return JSON-ready split facts: sizes per (category, expected) and a hash of each split's ids."""
    m: dict[str, Any] = {}
    for name, items in splits.items():
        counts: dict[str, int] = defaultdict(int)
        for it in items:
            counts[f"{it.category or '(none)'}|{'refuse' if it.refuse else 'comply'}"] += 1
        h = hashlib.sha256("\n".join(sorted(it.id for it in items)).encode()).hexdigest()[:16]
        m[name] = {"n": len(items), "ids_sha256": h, "counts": dict(sorted(counts.items()))}
    return m


def refusal_text(item: LabelledPrompt, scheme: TokenScheme) -> str:
    """Return the refusal text for ``item``: its own ``response`` when given, else one of refusalkit's
    texts for its category, picked by a hash of the id (stable across runs)."""
    if item.response:
        return item.response
    short = "*" if scheme.mode == "single" else scheme.categories.get(item.category or "", "*")
    texts = REFUSAL_TEXTS.get(short) or REFUSAL_TEXTS["*"]
    k = int(hashlib.sha256(item.id.encode()).hexdigest(), 16) % len(texts)
    return texts[k]


def tag_examples(
    items: list[LabelledPrompt],
    scheme: TokenScheme,
    answers: dict[str, str] | None = None,
    *,
    respond_target: str = "self",
) -> list[dict[str, Any]]:
    """Return tagged training targets: ``{"id", "prompt", "token", "text", "token_only"}`` per prompt.

    Refusals get their category's token and a refusal text. Answers get ``[respond]`` and, with
    ``respond_target="self"``, the prompt's ``response`` or else ``answers[id]`` (the base model's own
    answer); with ``respond_target="token"`` only the control token is a training target.
    """
    if respond_target not in ("self", "token"):
        raise InputError(f"unknown respond target {respond_target!r}; use 'self' or 'token'")
    out = []
    for it in items:
        if it.refuse:
            out.append(
                {
                    "id": it.id,
                    "prompt": it.prompt,
                    "token": scheme.refusal_token(it.category),
                    "text": refusal_text(it, scheme),
                    "token_only": False,
                }
            )
        elif respond_target == "token" and not it.response:
            out.append({"id": it.id, "prompt": it.prompt, "token": RESPOND, "text": "", "token_only": True})
        else:
            ans = it.response or (answers or {}).get(it.id)
            if ans is None:
                raise InputError(f"no answer for prompt {it.id!r}: give a 'response' or generate base answers")
            out.append({"id": it.id, "prompt": it.prompt, "token": RESPOND, "text": ans, "token_only": False})
    return out


def default_coconot_path() -> Path:
    """Return ``coconot_prompts.jsonl`` in the data root (``$REFUSALKIT_DATA`` or ``../shared/data``)."""
    from refusalkit.data.registry import data_root

    return data_root() / "coconot_prompts.jsonl"
