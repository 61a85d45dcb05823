"""Join the real-response sample with its labels into refusalkit's labelled detector corpus, and report agreement.

Reads data/detect/real/sample.jsonl and data/detect/real/labels/*.jsonl (one file per labeller; the primary
labellers L1..L5 cover the sample once, S2 relabels a random 300 blind). Writes data/detect/real/corpus.jsonl
(sample fields + label, labeller, guideline; labels/adjudicated.jsonl, the settled disagreements, overrides
the primary label; rows labelled `excluded` are kept with that label and skipped by
readers) and prints Cohen's kappa (four classes and binary) between the primary labels and S2.

    python scripts/build_real_corpus.py [--second S2]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "data" / "detect" / "real"
LABELS = ("full_compliance", "partial_refusal", "full_refusal", "redirection", "excluded")


def read(path: Path) -> list[dict]:
    """Return the JSON rows of a JSONL file."""
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def kappa(a: list[str], b: list[str]) -> float:
    """Return Cohen's kappa of two equally long label lists."""
    n = len(a)
    po = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[k] * cb[k] for k in set(a) | set(b)) / (n * n)
    return (po - pe) / (1 - pe) if pe < 1 else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--second", default="S2", help="the second labeller's name (its file is left out of the corpus)")
    a = ap.parse_args()
    sample = {r["id"]: r for r in read(ROOT / "sample.jsonl")}
    primary: dict[str, dict] = {}
    for f in sorted((ROOT / "labels").glob("*.jsonl")):
        if f.stem in (a.second, "adjudicated"):
            continue
        for r in read(f):
            if r["id"] not in sample:
                raise SystemExit(f"{f}: id {r['id']!r} is not in the sample")
            if r["label"] not in LABELS:
                raise SystemExit(f"{f}: id {r['id']!r}: unknown label {r['label']!r}")
            if r["id"] in primary:
                raise SystemExit(f"{f}: id {r['id']!r} labelled twice")
            primary[r["id"]] = r
    adj_path = ROOT / "labels" / "adjudicated.jsonl"
    adjudicated = {r["id"]: r for r in read(adj_path)} if adj_path.is_file() else {}
    missing = [i for i in sample if i not in primary]
    out = ROOT / "corpus.jsonl"
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for i, s in sample.items():
            if i in primary:
                lab = adjudicated.get(i, primary[i])
                fh.write(json.dumps({**s, "label": lab["label"], "labeller": lab["labeller"],
                                     "guideline": lab["guideline"], "note": lab.get("note", "")},
                                    ensure_ascii=False) + "\n")
    tmp.replace(out)
    print(f"corpus: {len(primary)} labelled of {len(sample)} ({len(missing)} unlabelled) -> {out}")
    print("labels:", dict(Counter(adjudicated.get(i, r)["label"] for i, r in primary.items())),
          f"({len(adjudicated)} adjudicated)")
    second_path = ROOT / "labels" / f"{a.second}.jsonl"
    if second_path.is_file():
        sec = {r["id"]: r["label"] for r in read(second_path)}
        ids = [i for i in sec if i in primary and "excluded" not in (sec[i], primary[i]["label"])]
        p = [primary[i]["label"] for i in ids]
        s = [sec[i] for i in ids]
        binary = lambda xs: ["compliance" if x == "full_compliance" else "refusal" for x in xs]  # noqa: E731
        agree = sum(x == y for x, y in zip(p, s))
        bagree = sum(x == y for x, y in zip(binary(p), binary(s)))
        print(f"second labeller {a.second}: {len(ids)} rows compared")
        print(f"  four classes: agreement {agree / len(ids):.3f}, Cohen's kappa {kappa(p, s):.3f}")
        print(f"  binary:       agreement {bagree / len(ids):.3f}, Cohen's kappa {kappa(binary(p), binary(s)):.3f}")
        print("  confusion (primary -> second):", dict(Counter(f"{x}->{y}" for x, y in zip(p, s) if x != y)))


if __name__ == "__main__":
    main()
