"""Policy overhead of `refusalkit serve --adapter A` measured in one process, without HTTP noise.

The server's generation path (``serve.refusal.RefusalControl.generate``) under thresholds that refuse nothing
writes the answers the base model writes alone, so the time against the base model's own ``generate`` is the
cost of deciding. Three paths, interleaved, each repeated ``--reps`` times (the minimum is reported, the
least disturbed by other work on the machine):

- ``plain``: the base model generates the batch;
- ``previous``: the server's former deciding pass (a one-token adapter ``generate`` over the whole prompts),
  then the base model;
- ``now``: ``RefusalControl.generate`` (the adapter over the prompts' own tokens, the template's head
  cached; two alternating thresholds, 1 and 0.9999, so the batch holds two policies).

Once with the load-test prompts in one batch, once one prompt at a time (one client).

    python bench/serve_policy_overhead.py --max-tokens 32 --reps 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--adapter", default="bundled", help="A refusal-token adapter whose answers the base model writes.")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    if args.max_tokens < 1 or args.reps < 1:
        sys.exit("error: --max-tokens and --reps must be at least 1")

    sys.path.insert(0, str(Path(__file__).parent))
    from serve_load import PROMPTS

    from refusalkit.models.base import GenerationConfig
    from refusalkit.serve.refusal import RefusalControl
    from refusalkit.tokens.policy import Policy

    rc = RefusalControl.load(args.model, args.adapter)
    base = rc.answer_model
    if base is None:
        sys.exit(f"error: --adapter {args.adapter} writes its own answers: its decision is made inside generate")
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    cfg = GenerationConfig(max_new_tokens=args.max_tokens, temperature=0.0)
    cats = rc.scheme.categories if rc.scheme.mode == "category" else {"*": "*"}
    never = [Policy(rc.scheme, thresholds={c: t for c in cats}) for t in (1.0, 0.9999)]

    def plain(ps):
        return base.generate(ps, cfg, batch_size=len(ps))

    def previous(ps):
        rc.hf.generate(ps, cfg.with_(max_new_tokens=1), batch_size=len(ps))
        return base.generate(ps, cfg, batch_size=len(ps))

    def now(ps):
        gens = rc.generate(ps, cfg, [never[i % 2] for i in range(len(ps))], len(ps))
        if any(g.meta["refused"] for g in gens):
            sys.exit("error: a threshold of 0.9999 refused a prompt; the comparison needs the same answers")
        return gens

    paths = {"plain": plain, "previous": previous, "now": now}
    print(f"model {args.model}, adapter {args.adapter}, {args.max_tokens} new tokens, greedy, min of {args.reps}")
    print("| prompts | plain s | previous s | previous / plain | now s | now / plain |")
    print("|---|---|---|---|---|---|")
    for label, batches in (("16 in one batch", [prompts]), ("16 one at a time", [[p] for p in prompts])):
        times: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(args.reps):
            for name, fn in paths.items():
                t0 = time.perf_counter()
                for b in batches:
                    fn(b)
                times[name].append(time.perf_counter() - t0)
        m = {k: min(v) for k, v in times.items()}
        print(
            f"| {label} | {m['plain']:.2f} | {m['previous']:.2f} | {m['previous'] / m['plain']:.3f} | "
            f"{m['now']:.2f} | {m['now'] / m['plain']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
