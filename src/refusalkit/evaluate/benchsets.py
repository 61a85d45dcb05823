"""Choosing the prompts of an eval: registry names, composites, local files, several at once, and a
seeded stratified ``--limit``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from refusalkit.data.io import read_examples
from refusalkit.data.records import Example
from refusalkit.data.registry import REGISTRY, _expect_unsafe, load_benchmark
from refusalkit.errors import RefusalkitError

# Benchmarks whose two halves (should refuse / should answer) are registered separately.
COMPOSITES: dict[str, tuple[str, ...]] = {
    "coconot-all": ("coconot", "coconot-contrast"),
    "jbb-all": ("jbb", "jbb-benign"),
    "or-bench": ("or-bench-hard", "or-bench-toxic"),
    "overt-all": ("overt", "overt-unsafe"),
}


def split_specs(specs: Sequence[str]) -> list[str]:
    """Return the benchmark specs given as repeated options and/or comma-separated lists, in order."""
    out: list[str] = []
    for s in specs:
        out.extend(p.strip() for p in s.split(",") if p.strip())
    if not out:
        raise RefusalkitError("no benchmark given: pass --bench NAME (e.g. xstest) or --bench FILE.jsonl")
    return out


def stratified_limit(examples: list[Example], limit: int | None, *, seed: int = 0) -> list[Example]:
    """Return at most ``limit`` examples drawn round-robin from (benchmark, expected, category) strata.

    Each stratum is shuffled with ``seed`` first, so every stratum appears before any has two, and the same
    seed picks the same prompts. The chosen examples keep their original order. ``None`` keeps all.
    """
    if not limit or limit >= len(examples):
        return list(examples)
    strata: dict[tuple, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        strata[(benchmark_of(ex), ex.expected or "", ex.category or "")].append(i)
    rng = random.Random(seed)
    queues = []
    for key in sorted(strata):
        idx = list(strata[key])
        rng.shuffle(idx)
        queues.append(idx)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit:
        level = [q[depth] for q in queues if depth < len(q)]
        if not level:
            break
        rng.shuffle(level)  # which strata get the last few places at the cut-off is random, not alphabetical
        chosen.extend(level[: limit - len(chosen)])
        depth += 1
    return [examples[i] for i in sorted(chosen)]


def _tag(examples: list[Example], name: str) -> list[Example]:
    # A source row may carry its own "source" column (JBB's AdvBench, ...): the benchmark name goes apart.
    for ex in examples:
        ex.meta["benchmark"] = name
    return examples


def benchmark_of(row: dict | Example) -> str:
    """Return the benchmark a prompt or response row came from (its ``benchmark`` field, else ``source``)."""
    if isinstance(row, Example):
        return str(row.meta.get("benchmark") or row.source or "(none)")
    return str(row.get("benchmark") or row.get("source") or "(none)")


def _load_one(spec: str, data_dir: str | None) -> list[Example]:
    p = Path(spec)
    if p.exists() or spec.endswith((".jsonl", ".json", ".csv")):
        exs = read_examples(p)
        for ex in exs:  # a file may give only a label (safe/unsafe, ...): read it as the registry does
            if ex.expected not in ("refuse", "comply"):
                ex.expected = _expect_unsafe(ex.expected or ex.label)
        return _tag(exs, p.stem)
    if spec in COMPOSITES:
        return [ex for part in COMPOSITES[spec] for ex in _tag(load_benchmark(part, data_dir=data_dir), part)]
    return _tag(load_benchmark(spec, data_dir=data_dir), spec)


def known_benchmarks() -> list[str]:
    """Return the names ``--bench`` accepts besides files: registry entries and composites."""
    return sorted([*REGISTRY, *COMPOSITES])


def load_eval_examples(
    specs: Sequence[str],
    *,
    limit: int | None = None,
    seed: int = 0,
    limit_mode: str = "stratified",
    data_dir: str | None = None,
) -> list[Example]:
    """Return the examples of every benchmark spec, ``limit`` per spec (stratified or the first N).

    When several specs are given, ids become ``SOURCE:ID`` so prompts of different benchmarks cannot clash
    (the original id is kept in ``orig_id``).
    """
    if limit_mode not in ("stratified", "head"):
        raise RefusalkitError(f"--limit-mode must be 'stratified' or 'head', got {limit_mode!r}")
    if limit is not None and limit < 1:
        raise RefusalkitError(f"--limit must be at least 1, got {limit}")
    names = split_specs(specs)
    out: list[Example] = []
    for spec in names:
        exs = _load_one(spec, data_dir)
        exs = exs[:limit] if (limit and limit_mode == "head") else stratified_limit(exs, limit, seed=seed)
        out.extend(exs)
    if len(names) > 1 or any(n in COMPOSITES for n in names):
        for ex in out:
            ex.meta.setdefault("orig_id", ex.id)
            ex.id = f"{benchmark_of(ex)}:{ex.meta['orig_id']}"
    seen: set[str] = set()
    for ex in out:
        if ex.id in seen:
            raise RefusalkitError(
                f"prompt id {ex.id!r} appears twice across the benchmarks given; pass each benchmark once"
            )
        seen.add(ex.id)
    if not out:
        raise RefusalkitError("the benchmarks given hold no prompts")
    return out
