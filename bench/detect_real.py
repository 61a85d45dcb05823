"""Shipped detectors on the real-output corpus, per model family, and their agreement with the
JailbreakBench ``jailbroken`` labels.

Usage:

    python bench/detect_real.py [--corpus data/detect/real/corpus.jsonl] [-d keyword -d default ...]
                                [--sample N] [--json OUT.json]

The corpus (``data/detect/real/corpus.jsonl``, labelled under docs/labelling.md) holds real responses of
seven model families; ``excluded`` rows are skipped. Binary = anything but ``full_compliance`` is a refusal
(XSTest's convention). None of the shipped detectors was trained on these rows, except that the
``gpt-3.5-2023`` family comes from chatgpt_refusals.jsonl, whose 70% Reuter & Schulze training split the
shipped detectors did see (with the paper's labels, not ours): the script reports that family both whole
and restricted to rows outside that split.

Agreement with jbb: a response JailbreakBench marks ``jailbroken`` should be judged compliance, a
``not_jailbroken`` one a refusal; the figure is the share of jbb rows where the detector agrees.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rs_train_responses() -> set[str]:
    """Return the responses of the Reuter & Schulze training split (the shipped detectors trained on it)."""
    from refusalkit.data.registry import data_root
    from refusalkit.detect.datasets import RS_FILE, rs_split

    return {r["response"] for r in rs_split(data_root() / RS_FILE)[0]}


def group_table(rows: list[dict], pred: list[str]) -> dict[str, dict]:
    """Return per-family n, binary accuracy, false positives and false negatives (refusal = positive)."""
    by: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for r, p in zip(rows, pred):
        g, q = r["label"] != "full_compliance", p != "full_compliance"
        by[r["group"]].append((g, q))
        if not r.get("extra"):
            by["ALL"].append((g, q))
    out = {}
    for k, v in sorted(by.items()):
        out[k] = {
            "n": len(v),
            "accuracy": sum(g == q for g, q in v) / len(v),
            "fp": sum(q and not g for g, q in v),
            "fn": sum(g and not q for g, q in v),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=REPO / "data" / "detect" / "real" / "corpus.jsonl")
    ap.add_argument("-d", "--detector", action="append", default=None)
    ap.add_argument("--sample", type=int, default=0, help="judge a random sample of this many rows (0: all)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from refusalkit.detect import get_detector
    from refusalkit.detect.datasets import read_real_corpus

    counts: dict[str, int] = {}
    rows = read_real_corpus(a.corpus, counts)
    if a.sample and a.sample < len(rows):
        rows = random.Random(0).sample(rows, a.sample)
    seen = rs_train_responses()
    for r in rows:
        r["group"] = r["family"]
    extra = [
        dict(r, group="gpt-3.5-2023 outside RS train", extra=True)
        for r in rows
        if r["family"] == "gpt-3.5-2023" and r["response"] not in seen
    ]
    print(
        f"{len(rows)} rows ({counts.get('excluded', 0)} excluded skipped); gpt-3.5-2023 rows outside the RS "
        f"training split: {len(extra)}",
        flush=True,
    )
    report = {}
    for name in a.detector or ["keyword", "default", "tsetlin", "cascade"]:
        det = get_detector(name)
        t0 = time.time()
        pred = det.predict([r["response"] for r in rows], [r["prompt"] for r in rows])
        secs = time.time() - t0
        idx = {r["id"]: p for r, p in zip(rows, pred)}
        table = group_table(rows + extra, pred + [idx[r["id"]] for r in extra])
        jbb = [
            (r["auto_label"] == "jailbroken", p == "full_compliance")
            for r, p in zip(rows, pred)
            if r["dataset"] == "jbb_artifacts"
        ]
        gold_jbb = [
            (r["auto_label"] == "jailbroken", r["label"] == "full_compliance")
            for r in rows
            if r["dataset"] == "jbb_artifacts"
        ]
        report[name] = {
            "by_family": table,
            "seconds": round(secs, 1),
            "jbb_agreement": sum(a == b for a, b in jbb) / max(1, len(jbb)),
            "jbb_n": len(jbb),
            "gold_jbb_agreement": sum(a == b for a, b in gold_jbb) / max(1, len(gold_jbb)),
        }
        print(
            f"== {name}  ({len(rows) / secs:.0f} rows/s)  agreement with jbb 'jailbroken': "
            f"{report[name]['jbb_agreement']:.3f} (n={len(jbb)}; our labels agree with jbb: "
            f"{report[name]['gold_jbb_agreement']:.3f})",
            flush=True,
        )
        for k, m in table.items():
            print(f"  {k:<32} n={m['n']:<5} acc {m['accuracy']:.3f}  FP {m['fp']:<4} FN {m['fn']}", flush=True)
    if a.json:
        tmp = a.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(a.json)


if __name__ == "__main__":
    main()
