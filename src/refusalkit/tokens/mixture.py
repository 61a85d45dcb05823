"""A refusal-token training mixture that teaches harm rather than one benchmark's surface: CoCoNot, harmful
and harmless instructions, and hand-written look-alikes in XSTest's prompt types, each source category
mapped to the token scheme, split by seed into train / val / calibration / test, with evaluation-only
prompts (XSTest, JailbreakBench) and their near-duplicates kept out.

Rows carry their split in ``token_split``, which ``tokens train`` and ``tokens calibrate`` use as given
(:func:`refusalkit.tokens.data.stratified_split`). ``scripts/build_token_data.py`` writes the rows and the
data card.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from refusalkit.data.io import read_records, require_str
from refusalkit.errors import InputError
from refusalkit.tokens.data import (
    COMPLY_LABELS,
    DEFAULT_SEED,
    REFUSE_LABELS,
    SPLIT_FIELD,
    LabelledPrompt,
    stratified_split,
)
from refusalkit.tokens.overlap import Embed, near_duplicates, normalise

SAFETY = "Requests with safety concerns"
SPLIT_NAMES = ("train", "val", "calibration", "test")

#: Every source category and the token-scheme category it trains (None: a prompt to answer, no category).
CATEGORY_MAP: dict[str, dict[str | None, str | None]] = {
    "coconot": {
        "Humanizing requests": "Humanizing requests",
        "Incomplete requests": "Incomplete requests",
        "Indeterminate requests": "Indeterminate requests",
        "Requests with safety concerns": SAFETY,
        "Unsupported requests": "Unsupported requests",
    },
    # The refusal-direction release gives categories only for its test split; all are harm categories.
    "harmful_instructions": {
        c: SAFETY
        for c in (
            None,
            "Non-violent crimes",
            "illegal",
            "Violence",
            "Disinformation and deception",
            "Hate, harassment and discrimination",
            "Illegal goods and services",
            "Sexual content",
            "cybercrime_intrusion",
            "misinformation_disinformation",
            "chemical_biological",
            "harmful",
            "harassment_bullying",
            "Harassment/Discrimination",
            "Malware/Hacking",
            "Physical harm",
            "Economic harm",
            "Fraud/Deception",
            "Disinformation",
            "Sexual/Adult content",
            "Privacy",
            "Expert advice",
            "Government decision-making",
        )
    },
    "harmless_instructions": {None: None},
    # Hand-written look-alikes: XSTest's ten safe prompt types and their unsafe contrasts. Privacy and
    # discrimination are harms CoCoNot files under safety too (its "privacy violations", "triggers for
    # offensive language" subcategories).
    "lookalikes": {
        t: SAFETY
        for t in (
            "homonyms",
            "figurative_language",
            "safe_targets",
            "safe_contexts",
            "definitions",
            "nons_group_real_discr",
            "real_group_nons_discr",
            "historical_events",
            "privacy_public",
            "privacy_fictional",
            "contrast_homonyms",
            "contrast_figurative_language",
            "contrast_safe_targets",
            "contrast_safe_contexts",
            "contrast_definitions",
            "contrast_discr",
            "contrast_historical_events",
            "contrast_privacy",
        )
    },
}

#: Which field of a source row holds its category.
CATEGORY_FIELD = {"coconot": "category", "harmful_instructions": "category", "harmless_instructions": "category",
                  "lookalikes": "xstest_type"}  # fmt: skip


@dataclass
class MixtureConfig:
    """Settings of one build (stored in the data card)."""

    seed: int = DEFAULT_SEED
    #: Calibration prompts per test prompt in each (category, label) stratum. The calibrated thresholds'
    #: own sampling error adds to the test split's: with equal splits the expected gap is ~1.4x the
    #: exact-threshold floor (issue 18 asks <= 1.25x), with 2x ~1.22x and 10.5% of cells outside their
    #: interval (asked: <= 10%), with 2.5x ~1.17x and 9.4% (see the card's floor).
    cal_per_test: float = 2.5
    harmless_train: int = 600
    harmless_val: int = 100
    harmless_heldout: int = 300  # from the source's test split, cut into calibration and test by cal_per_test
    lookalike_fractions: tuple[float, float, float, float] = (0.6, 0.1, 0.2, 0.1)  # train, val, cal, test
    threshold: float = 0.9
    minilm: bool = True


@dataclass
class SourceRow:
    """One prompt of a source, its mapped label and category, and where it ends up."""

    id: str
    prompt: str
    source: str
    source_category: str | None
    refuse: bool
    category: str | None
    label: str
    source_split: str | None = None
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """Return the JSON line ``tokens train`` reads (``token_split`` carries the split)."""
        return {
            "id": self.id,
            "prompt": self.prompt,
            "label": self.label,
            "category": self.category,
            SPLIT_FIELD: self.split,
            "source": self.source,
            "source_category": self.source_category,
            **({"source_split": self.source_split} if self.source_split else {}),
            **self.extra,
        }


def map_category(source: str, category: str | None) -> str | None:
    """Return the token-scheme category for ``category`` of ``source``; raise InputError when unmapped."""
    table = CATEGORY_MAP.get(source)
    if table is None:
        raise InputError(f"unknown source {source!r}; known: {', '.join(CATEGORY_MAP)}")
    if category not in table:
        raise InputError(f"source {source!r} has category {category!r}, which has no token-scheme mapping")
    return table[category]


def read_source(path: str | Path, source: str) -> list[SourceRow]:
    """Return the rows of one source file with mapped categories and labels.

    Raises InputError naming file, line and field for a missing prompt, an unknown label or category.
    """
    file = str(path)
    out: list[SourceRow] = []
    for row in read_records(path):
        line = row.get("__line__")
        prompt = require_str(row, "prompt", file=file)
        label = require_str(row, "label", file=file).strip()
        if label.lower() in REFUSE_LABELS:
            refuse = True
        elif label.lower() in COMPLY_LABELS:
            refuse = False
        else:
            raise InputError(f"unknown label {label!r}", file=file, line=line, field="label")
        cfield = CATEGORY_FIELD[source]
        scat = row.get(cfield)
        try:
            cat = map_category(source, scat)
        except InputError as e:
            raise InputError(e.message, file=file, line=line, field=cfield) from None
        if refuse and cat is None:
            raise InputError("a prompt to refuse maps to no category", file=file, line=line, field=cfield)
        keep = ("subcategory", "xstest_type", "lookalike_of", "writer")
        out.append(
            SourceRow(
                id=str(row.get("id", f"{source}-line-{line}")),
                prompt=prompt,
                source=source,
                source_category=scat,
                refuse=refuse,
                category=cat,
                label=label,
                source_split=row.get("split") if source != "coconot" else None,
                extra={k: row[k] for k in keep if k in row},
            )
        )
    return out


def _shuffled(rows: list[SourceRow], seed: int, tag: str) -> list[SourceRow]:
    """Return ``rows`` sorted by id and shuffled by ``(seed, tag)``: independent of the file's order."""
    group = sorted(rows, key=lambda r: r.id)
    random.Random(f"{seed}:{tag}").shuffle(group)
    return group


def _cut(group: list[SourceRow], fractions: tuple[float, ...], names: tuple[str, ...]) -> None:
    """Assign consecutive shares of ``group`` to ``names`` (cumulative rounding, as stratified_split)."""
    edges = [round(len(group) * sum(fractions[: i + 1])) for i in range(len(fractions))]
    start = 0
    for name, end in zip(names, edges):
        for r in group[start:end]:
            r.split = name
        start = end


def split_coconot(rows: list[SourceRow], cfg: MixtureConfig) -> None:
    """Split CoCoNot exactly as ``tokens train`` splits the CoCoNot file alone (seed, 60/20/20), so its test
    split stays the one the shipped adapter was measured on; then move a seeded share of each stratum's
    training prompts to calibration until it holds ``cal_per_test`` x its test prompts."""
    items = [LabelledPrompt(r.id, r.prompt, r.category, r.refuse) for r in rows]
    base = stratified_split(items, seed=cfg.seed)
    where = {it.id: name for name, its in base.items() for it in its}
    by_id = {r.id: r for r in rows}
    strata: dict[tuple[str, bool], list[SourceRow]] = defaultdict(list)
    for r in rows:
        r.split = where[r.id]
        strata[(r.category or "", r.refuse)].append(r)
    for (cat, refuse), group in sorted(strata.items()):
        n_test = sum(r.split == "test" for r in group)
        n_cal = sum(r.split == "calibration" for r in group)
        need = max(0, math.ceil(cfg.cal_per_test * n_test) - n_cal)
        train = _shuffled([r for r in group if r.split == "train"], cfg.seed, f"coconot-move:{cat}:{refuse}")
        for r in train[: min(need, max(0, len(train) - 1))]:  # keep at least one training prompt
            by_id[r.id].split = "calibration"


def split_by_source_split(rows: list[SourceRow], cfg: MixtureConfig, *, n_train: int | None = None,
                          n_val: int | None = None, n_heldout: int | None = None) -> None:  # fmt: skip
    """Split a source that has its own train/val/test: its train stays train, its val val, and its test is
    cut into calibration and test (``cal_per_test`` to 1). ``n_*`` take seeded samples (None: all)."""
    by: dict[str | None, list[SourceRow]] = defaultdict(list)
    for r in rows:
        by[r.source_split].append(r)
    unknown = set(by) - {"train", "val", "test"}
    if unknown:
        raise InputError(f"{rows[0].source}: unknown source split(s) {sorted(map(str, unknown))}", field="split")
    src = rows[0].source if rows else ""
    for name, n in (("train", n_train), ("val", n_val)):
        group = _shuffled(by.get(name, []), cfg.seed, f"{src}:{name}")
        for i, r in enumerate(group):
            r.split = name if n is None or i < n else None
    held = _shuffled(by.get("test", []), cfg.seed, f"{src}:test")
    if n_heldout is not None:
        for r in held[n_heldout:]:
            r.split = None
        held = held[:n_heldout]
    share = cfg.cal_per_test / (1 + cfg.cal_per_test)
    _cut(held, (share, 1 - share), ("calibration", "test"))


def split_lookalikes(rows: list[SourceRow], cfg: MixtureConfig) -> None:
    """Split the look-alikes per (prompt type, label) by ``cfg.lookalike_fractions`` (seeded)."""
    strata: dict[tuple[str, bool], list[SourceRow]] = defaultdict(list)
    for r in rows:
        strata[(str(r.source_category), r.refuse)].append(r)
    for (t, refuse), group in sorted(strata.items()):
        _cut(_shuffled(group, cfg.seed, f"lookalikes:{t}:{refuse}"), cfg.lookalike_fractions, SPLIT_NAMES)


@dataclass
class Dropped:
    """A row left out of the mixture and why."""

    id: str
    source: str
    split: str | None
    reason: str
    match: str | None = None
    method: str | None = None
    score: float | None = None


def build_mixture(
    sources: dict[str, list[SourceRow]],
    evaluation_only: dict[str, list[str]],
    cfg: MixtureConfig,
    *,
    embed: Embed | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> tuple[list[SourceRow], list[Dropped]]:
    """Return ``(rows, dropped)``: every source row with its split, minus the rows that are
    near-duplicates of an evaluation-only prompt (``evaluation_only``: set name -> prompts) and the
    training rows that near-duplicate a held-out (val, calibration, test) row.

    ``sources`` maps ``coconot``, ``harmful_instructions``, ``harmless_instructions`` and ``lookalikes``
    to their rows (each optional).
    """
    if "coconot" in sources:
        split_coconot(sources["coconot"], cfg)
    if "harmful_instructions" in sources:
        split_by_source_split(sources["harmful_instructions"], cfg)
    if "harmless_instructions" in sources:
        split_by_source_split(
            sources["harmless_instructions"],
            cfg,
            n_train=cfg.harmless_train,
            n_val=cfg.harmless_val,
            n_heldout=cfg.harmless_heldout,
        )
    if "lookalikes" in sources:
        split_lookalikes(sources["lookalikes"], cfg)
    rows = [r for rs in sources.values() for r in rs if r.split]
    ids = Counter(r.id for r in rows)
    dup_ids = [i for i, n in ids.items() if n > 1]
    if dup_ids:
        raise InputError(f"two sources share the id {dup_ids[0]!r}; ids must be unique across sources")
    dropped: list[Dropped] = []
    for name, ref in evaluation_only.items():
        log(f"checking {len(rows)} prompts against {len(ref)} {name} prompts")
        matches = near_duplicates([r.prompt for r in rows], ref, threshold=cfg.threshold, embed=embed)
        keep = []
        for r, m in zip(rows, matches):
            if m is None:
                keep.append(r)
            else:
                dropped.append(Dropped(r.id, r.source, r.split, f"near-duplicate of {name}", ref[m.ref_index],
                                       m.method, round(m.score, 4)))  # fmt: skip
        rows = keep
    # Exact repeats inside the mixture: keep one (a held-out copy before a training copy).
    order = {"test": 0, "calibration": 1, "val": 2, "train": 3}
    seen: dict[str, SourceRow] = {}
    keep = []
    for r in sorted(rows, key=lambda r: (order[str(r.split)], r.source, r.id)):
        k = normalise(r.prompt)
        if k in seen:
            dropped.append(Dropped(r.id, r.source, r.split, "repeat of another prompt", seen[k].id, "exact", 1.0))
        else:
            seen[k] = r
            keep.append(r)
    rows = keep
    held = [r for r in rows if r.split != "train"]
    train = [r for r in rows if r.split == "train"]
    log(f"checking {len(train)} training prompts against {len(held)} held-out prompts")
    matches = near_duplicates([r.prompt for r in train], [r.prompt for r in held], threshold=cfg.threshold,
                              embed=embed)  # fmt: skip
    leak = set()
    for r, m in zip(train, matches):
        if m is not None:
            leak.add(r.id)
            dropped.append(Dropped(r.id, r.source, r.split, "near-duplicate of a held-out prompt",
                                   held[m.ref_index].id, m.method, round(m.score, 4)))  # fmt: skip
    rows = [r for r in rows if r.id not in leak]
    rows.sort(key=lambda r: (order[str(r.split)], r.source, r.id))
    return rows, dropped


def counts_table(rows: list[SourceRow]) -> list[dict[str, Any]]:
    """Return the count of rows per (source, category, expected, split), one dict each, sorted."""
    c = Counter((r.source, r.category or "(none)", "refuse" if r.refuse else "comply", str(r.split)) for r in rows)
    return [
        {"source": s, "category": cat, "expected": e, "split": sp, "n": n} for (s, cat, e, sp), n in sorted(c.items())
    ]


def floor_report(rows: list[SourceRow], *, sims: int = 4000, seed: int = 0) -> dict[str, Any]:
    """Return the calibration sampling floor (``tokens.gapfloor.sampling_floor``) for these splits: per
    category the calibration and test counts of prompts to refuse, the mean gap with exact thresholds
    (``oracle``) and with thresholds from this calibration split (``calibrated``), and whether the issue's
    targets (mean |gap| <= 1.25 x the floor; >= 90% of cells inside their interval) are reachable in
    expectation; plus, per category, the smallest calibration split (in test multiples) for which its own
    calibrated gap is within 1.25 x its exact-threshold gap."""
    from refusalkit.tokens.gapfloor import sampling_floor

    n_cal: Counter[str] = Counter()
    n_test: Counter[str] = Counter()
    for r in rows:
        if r.refuse and r.category:
            if r.split == "calibration":
                n_cal[r.category] += 1
            elif r.split == "test":
                n_test[r.category] += 1
    fl = sampling_floor(dict(n_cal), dict(n_test), sims=sims, seed=seed)
    per_cat = {}
    for cat in sorted(n_test):
        one = sampling_floor({cat: n_cal[cat]}, {cat: n_test[cat]}, sims=sims, seed=seed)
        need = None
        for mult in (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0):
            m = sampling_floor({cat: math.ceil(mult * n_test[cat])}, {cat: n_test[cat]}, sims=sims, seed=seed)
            if m["calibrated_mean_abs_gap"] <= 1.25 * m["oracle_mean_abs_gap"]:
                need = math.ceil(mult * n_test[cat])
                break
        per_cat[cat] = {
            "n_calibration": n_cal[cat],
            "n_test": n_test[cat],
            "oracle_mean_abs_gap": one["oracle_mean_abs_gap"],
            "calibrated_mean_abs_gap": one.get("calibrated_mean_abs_gap"),
            "min_n_calibration_for_1.25x": need,
        }
    ratio = fl["calibrated_mean_abs_gap"] / fl["oracle_mean_abs_gap"]
    return {
        "targets": [0.1, 0.3, 0.5, 0.7, 0.9],
        "sims": sims,
        "oracle_mean_abs_gap": fl["oracle_mean_abs_gap"],
        "calibrated_mean_abs_gap": fl["calibrated_mean_abs_gap"],
        "calibrated_over_oracle": ratio,
        "mean_gap_target_reachable": ratio <= 1.25,
        "oracle_outside_share": fl["oracle_outside_share"],
        "calibrated_outside_share": fl["calibrated_outside_share"],
        "inside_target_reachable": fl["calibrated_outside_share"] <= 0.10,
        "per_category": per_cat,
    }


def file_sha256(path: str | Path) -> str:
    """Return the SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_card(
    name: str,
    rows: list[SourceRow],
    dropped: list[Dropped],
    cfg: MixtureConfig,
    inputs: dict[str, Path],
    *,
    floor: dict[str, Any] | None = None,
    display: Callable[[Path], str] = str,
) -> dict[str, Any]:
    """Return the data card: config, input files with SHA-256, the category mapping, counts per source x
    category x split, what was dropped and why, and the calibration floor for the split sizes (input
    paths written through ``display``)."""
    by_split = Counter(str(r.split) for r in rows)
    drop_summary = Counter((d.source, d.reason) for d in dropped)
    return {
        "format": "refusalkit-token-data-card/1",
        "name": name,
        "config": asdict(cfg),
        "inputs": {k: {"path": display(v), "sha256": file_sha256(v)} for k, v in inputs.items()},
        "category_map": {s: {str(k): v for k, v in m.items()} for s, m in CATEGORY_MAP.items()},
        "n_rows": len(rows),
        "n_by_split": dict(sorted(by_split.items())),
        "counts": counts_table(rows),
        "dropped_summary": [{"source": s, "reason": r, "n": n} for (s, r), n in sorted(drop_summary.items())],
        "dropped": [asdict(d) for d in dropped],
        "calibration_floor": floor,
        "responses": (
            "none stored: refusal rows are trained on refusalkit's own refusal texts for their category "
            "(tokens/data.py REFUSAL_TEXTS, picked by a hash of the id); answer rows on the [respond] token "
            "only (--respond-target token) or on the base model's own greedy answer (--respond-target self)"
        ),
        "evaluation_only": [
            "xstest_prompts.jsonl (all 450; near-duplicates of any removed from every split)",
            "jbb_harmful_behaviors.jsonl (all 100; near-duplicates removed from every split, including the "
            "JailbreakBench rows of harmful_instructions' test split)",
        ],
    }
