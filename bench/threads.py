"""Greedy-generation tokens/s of a model under torch thread counts and OpenMP wait policies.

Usage:

    python bench/threads.py [--model subject] [--repeats 3] [--new-tokens 24] [--threads 1,2]
                            [--policies ,PASSIVE] [--dtype float32]

Every (threads, OMP_WAIT_POLICY) setting runs in its own process, because OpenMP reads the wait policy once
at start-up; settings alternate for ``--repeats`` rounds so that load from other processes hits all alike.
Each process loads the model once, warms up, then times one batch-1 call (two prompts one at a time) and one
batch-8 call, every answer forced to exactly ``--new-tokens`` tokens. The table gives the median and the
range (min-max) over the rounds. The worker imports torch before refusalkit, so OpenMP starts with exactly
the policy given here (refusalkit's own default only applies when it is imported first).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PROMPTS = ["Write a haiku about autumn leaves.", "Explain what a hash table is.",
           "Give three tips for learning Python.", "What is the capital of Australia?",
           "Summarise the plot of Hamlet in two sentences.", "How do I reverse a list in JavaScript?",
           "Name four planets of the solar system.", "Why is the sky blue?"]


def worker(model: str, threads: int, new_tokens: int, dtype: str | None) -> dict:
    """Return tokens/s at batch 1 and batch 8 for ``model`` with ``threads`` torch threads."""
    import torch  # first: OpenMP reads OMP_WAIT_POLICY when torch loads it

    from refusalkit.models.base import GenerationConfig
    from refusalkit.models.spec import load_model

    torch.set_num_threads(threads)
    t = time.perf_counter()
    lm = load_model(model, batch_size=8, dtype=dtype)
    load_s = time.perf_counter() - t
    cfg = GenerationConfig(max_new_tokens=new_tokens, extra={"min_new_tokens": new_tokens})
    lm.generate(PROMPTS[:1], cfg.with_(max_new_tokens=4, extra={"min_new_tokens": 4}), batch_size=1)  # warm-up
    t = time.perf_counter()
    g1 = lm.generate(PROMPTS[:2], cfg, batch_size=1)
    b1 = sum(g.n_tokens for g in g1) / (time.perf_counter() - t)
    t = time.perf_counter()
    g8 = lm.generate(PROMPTS, cfg, batch_size=8)
    b8 = sum(g.n_tokens for g in g8) / (time.perf_counter() - t)
    return {"load_s": load_s, "batch1_tok_s": b1, "batch8_tok_s": b8, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="subject")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--policies", default=",PASSIVE", help="OMP_WAIT_POLICY values ('' = unset)")
    ap.add_argument("--dtype", default=None, help="load dtype (default: the folder's own, bf16 for subject)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n-threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.model, args.n_threads, args.new_tokens, args.dtype)))
        return
    settings = [(int(t), policy) for t in args.threads.split(",") for policy in args.policies.split(",")]
    results: dict[tuple[int, str], list[dict]] = {s: [] for s in settings}
    for r in range(args.repeats):
        for threads, policy in settings:
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
            env.update(HF_HUB_OFFLINE="1")
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            out = subprocess.run([sys.executable, __file__, "--worker", "--model", args.model, "--n-threads",
                                  str(threads), "--new-tokens", str(args.new_tokens)]
                                 + (["--dtype", args.dtype] if args.dtype else []),
                                 capture_output=True, text=True, env=env, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            results[(threads, policy)].append(row)
            print(f"round {r + 1}: threads={threads} OMP_WAIT_POLICY={policy or '(unset)'} "
                  f"load {row['load_s']:.1f}s batch1 {row['batch1_tok_s']:.2f} tok/s "
                  f"batch8 {row['batch8_tok_s']:.2f} tok/s", flush=True)
    print("\n| threads | OMP_WAIT_POLICY | batch 1 tok/s median (range) | batch 8 tok/s median (range) |")
    print("|---|---|---|---|")
    for (threads, policy), rows in results.items():
        cells = []
        for key in ("batch1_tok_s", "batch8_tok_s"):
            xs = [x[key] for x in rows]
            cells.append(f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})")
        print(f"| {threads} | {policy or '(unset)'} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
