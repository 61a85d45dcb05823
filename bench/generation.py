"""Batched vs one-at-a-time generation on the bundled model, side by side in one run.

Prints tokens/s for each mode, the speed-up ratio and each mode's peak memory (resident set size of a
fresh child process per mode, so the two peaks don't mix). Usage:

    python bench/generation.py [--prompts 32] [--batch-size 16] [--max-new-tokens 64] [--rounds 2]

The modes alternate for ``--rounds`` rounds so that a change in machine load hits both alike; tokens and
seconds are summed over rounds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time

PROMPTS = [
    "Explain how a refrigerator keeps food cold.", "Write a haiku about autumn rain.",
    "What are three tips for a good night's sleep?", "Summarise the water cycle.",
    "How do I reverse a list in Python?", "Why is the sky blue?", "Name five fruits rich in vitamin C.",
    "Describe the rules of chess briefly.", "What causes the seasons on Earth?",
    "Give me a recipe for pancakes.", "How does a bicycle gear work?", "What is photosynthesis?",
    "Suggest a name for a grey cat.", "How do vaccines train the immune system?",
    "What is the difference between weather and climate?", "Explain compound interest with an example.",
]


def _run(mode: str, n: int, batch_size: int, max_new_tokens: int, q: mp.Queue) -> None:
    import torch

    from refusalkit.models.base import GenerationConfig
    from refusalkit.models.spec import load_model

    torch.manual_seed(0)
    model = load_model("default", batch_size=batch_size)
    prompts = [PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f" (variant {i})") for i in range(n)]
    cfg = GenerationConfig(max_new_tokens=max_new_tokens)
    model.generate(prompts[:2], cfg.with_(max_new_tokens=4))  # warm-up
    t0 = time.perf_counter()
    if mode == "batched":
        gens = model.generate(prompts, cfg, batch_size=batch_size)
    else:
        gens = [model.generate([p], cfg, batch_size=1)[0] for p in prompts]
    dt = time.perf_counter() - t0
    tokens = sum(g.n_tokens for g in gens)
    q.put({"mode": mode, "seconds": dt, "tokens": tokens, "tokens_per_s": tokens / dt,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    ctx = mp.get_context("spawn")
    results: dict[str, dict] = {}
    for _ in range(a.rounds):
        for mode in ("sequential", "batched"):
            q = ctx.Queue()
            p = ctx.Process(target=_run, args=(mode, a.prompts, a.batch_size, a.max_new_tokens, q))
            p.start()
            r = q.get()
            p.join()
            acc = results.setdefault(mode, {"mode": mode, "seconds": 0.0, "tokens": 0, "peak_rss_mib": 0.0})
            acc["seconds"] += r["seconds"]
            acc["tokens"] += r["tokens"]
            acc["peak_rss_mib"] = max(acc["peak_rss_mib"], r["peak_rss_mib"])
            acc["tokens_per_s"] = acc["tokens"] / acc["seconds"]
    s, b = results["sequential"], results["batched"]
    print(f"{'mode':<12}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}{'peak RSS MiB':>14}")
    for r in (s, b):
        print(f"{r['mode']:<12}{r['tokens']:>8}{r['seconds']:>10.1f}{r['tokens_per_s']:>10.1f}{r['peak_rss_mib']:>14.0f}")
    print(f"batched/sequential tokens/s ratio at batch {a.batch_size}: {b['tokens_per_s'] / s['tokens_per_s']:.2f}x")
    print(json.dumps({"args": vars(a), "results": results}))


if __name__ == "__main__":
    main()
