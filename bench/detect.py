"""Responses per second of every detector, side by side with the keyword detector in one run.

Usage:

    python bench/detect.py [--n 2000] [--rounds 2] [--data-dir ../shared/data] [--slow-n 200]

The response set mixes the Reuter & Schulze ChatGPT responses (long) with refusalkit's synthetic ones
(short). Fast detectors judge ``--n`` responses; the embedding detector and the cascade judge ``--slow-n``
(MiniLM is ~100x slower). Detectors alternate for ``--rounds`` rounds so that load changes hit all alike;
the ratio column is each detector's speed over the keyword detector's.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--slow-n", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    from refusalkit.data.registry import data_root
    ap.add_argument("--data-dir", default=str(data_root()))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from refusalkit.detect import get_detector
    from refusalkit.detect.embedding import clear_embedding_cache
    from refusalkit.detect.synth import write_synthetic

    rows = [json.loads(line) for line in open(Path(args.data_dir) / "chatgpt_refusals.jsonl", encoding="utf-8")]
    rows += write_synthetic()
    rows = (rows * (args.n // len(rows) + 1))[: args.n]
    X, P = [r["response"] for r in rows], [r["prompt"] for r in rows]
    dets = {name: get_detector(name) for name in ("keyword", "default", "tsetlin", "embedding", "cascade")}
    slow = {"embedding", "cascade"}
    for name in slow:  # load MiniLM before timing
        dets[name].predict_proba(X[:2], P[:2])
    tot = {name: [0, 0.0] for name in dets}
    for _ in range(args.rounds):
        for name, det in dets.items():
            n = args.slow_n if name in slow else args.n
            clear_embedding_cache()  # texts repeat across rounds; each round must encode them afresh
            t0 = time.perf_counter()
            det.predict_proba(X[:n], P[:n])
            tot[name][0] += n
            tot[name][1] += time.perf_counter() - t0
    base = tot["keyword"][0] / tot["keyword"][1]
    print(f"{'detector':<12} {'responses':>10} {'resp/s':>10} {'vs keyword':>11}")
    for name, (n, s) in tot.items():
        rate = n / s
        print(f"{name:<12} {n:>10d} {rate:>10.1f} {rate / base:>10.2f}x")
    routed = getattr(dets["cascade"], "routed_", [])
    if routed:
        print(f"cascade: last batch {routed[0]} judged by default, {routed[1] if len(routed) > 1 else 0} passed to embedding")
    print(f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
