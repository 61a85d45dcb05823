"""The labelled real-response corpus (issue 15): complete, valid, provenance on every row, no XSTest prompt."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

REAL = Path(__file__).resolve().parents[1] / "data" / "detect" / "real"
LABELS = {"full_compliance", "partial_refusal", "full_refusal", "redirection", "excluded"}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_every_sampled_response_is_labelled_once_with_provenance():
    sample = _read(REAL / "sample.jsonl")
    corpus = _read(REAL / "corpus.jsonl")
    assert len(sample) >= 3000
    assert [r["id"] for r in corpus] == [r["id"] for r in sample]
    for r in corpus:
        assert r["label"] in LABELS, r["id"]
        assert r["labeller"] and r["guideline"] in {"v1", "v2"}, r["id"]
    counts = Counter(r["label"] for r in corpus)
    assert counts["full_compliance"] > 500 and counts["full_refusal"] > 500
    assert len({r["family"] for r in corpus}) >= 7


def test_second_labeller_covers_300_rows_of_the_sample_and_adjudications_settle_every_disagreement():
    corpus = {r["id"]: r for r in _read(REAL / "corpus.jsonl")}
    second = _read(REAL / "labels" / "S2.jsonl")
    assert len(second) == 300 and all(r["id"] in corpus for r in second)
    primary = {r["id"]: r["label"] for f in sorted((REAL / "labels").glob("L*.jsonl")) for r in _read(f)}
    disagree = {r["id"] for r in second if r["label"] != primary[r["id"]]}
    adjudicated = {r["id"] for r in _read(REAL / "labels" / "adjudicated.jsonl")}
    assert disagree == adjudicated


def test_no_xstest_prompt_in_the_corpus():
    xs = Path(__file__).resolve().parents[2] / "shared" / "data" / "xstest_prompts.jsonl"
    if not xs.is_file():
        pytest.skip(f"{xs} not present")
    norm = lambda s: re.sub(r"\s+", " ", s.strip().lower())  # noqa: E731
    prompts = {norm(r["prompt"]) for r in _read(xs)}
    assert not [r["id"] for r in _read(REAL / "corpus.jsonl") if norm(r["prompt"]) in prompts]
