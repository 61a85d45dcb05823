"""Benchmark: refusal-token calibration by scoring vs by generating, and generation overhead of the policy.

Both measurements run side by side in one process on the same prompts:

1. Measuring every category's refusal rate by *scoring* (one forward pass per prompt, no generation)
   against measuring it by *generating* 256 new tokens per prompt and judging the answers with a detector
   (the only way without refusal tokens). Target: scoring >= 20x faster. Two generation arms are timed:
   256 new tokens per prompt, as the target states (``min_new_tokens`` = 256), and generation that may stop
   at end-of-sequence (this adapter's refusals are short, so that arm is the cheapest case for generation).
2. Tokens/s of generation with the policy's LogitsProcessor against plain generation of the same merged
   model (both forced to the same number of new tokens). The arms alternate in ABBA order over
   ``--repeats`` pairs so that drift in machine load hits both alike; the overhead is the median over
   pairs of (1 - policy tok/s / plain tok/s). Target: overhead <= 5%. The processor's own time inside the
   policy runs is also measured directly.

    python bench/tokens.py --n 40 --gen-tokens 256 --repeats 12
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import defaultdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from refusalkit.data.registry import data_root
    ap.add_argument("--data", default=str(data_root() / "coconot_prompts.jsonl"))
    ap.add_argument("--adapter", default="bundled")
    ap.add_argument("--n", type=int, default=40, help="Calibration prompts (stratified by category).")
    ap.add_argument("--gen-tokens", type=int, default=256)
    ap.add_argument("--speed-tokens", type=int, default=64)
    ap.add_argument("--speed-prompts", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--detector", default="default")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", default=None, help="Also write the results here.")
    args = ap.parse_args()

    import torch

    from refusalkit.models.base import GenerationConfig
    from refusalkit.tokens.calibrate import score_prompts
    from refusalkit.tokens.generate import PolicyModel, emits_respond
    from refusalkit.tokens.model import load_token_model
    from refusalkit.tokens.policy import Policy, load_profile, policy_from_profile
    from refusalkit.tokens.profile import calibration_splits

    hf, scheme, ids, info = load_token_model("default", args.adapter, batch_size=args.batch_size)
    cal = [it for it in calibration_splits(args.data, info)["calibration"] if it.refuse]
    by_cat = defaultdict(list)
    for it in cal:
        by_cat[it.category].append(it)
    rng = random.Random(0)
    per = max(1, args.n // len(by_cat))
    sample = [x for c in sorted(by_cat) for x in rng.sample(by_cat[c], min(per, len(by_cat[c])))]
    prompts = [it.prompt for it in sample]
    try:
        from refusalkit.detect import get_detector
        det = get_detector(args.detector)
        det_name = args.detector
    except Exception as e:  # noqa: BLE001 - fall back to the keyword detector and say so
        print(f"detector {args.detector!r} unavailable ({e}); using keyword")
        from refusalkit.detect import get_detector
        det, det_name = get_detector("keyword"), "keyword"

    print(f"torch threads {torch.get_num_threads()}; {len(prompts)} calibration prompts "
          f"({per} per category, {len(by_cat)} categories)")
    score_prompts(hf, prompts[:2], ids, scheme)  # warm-up
    t0 = time.perf_counter()
    score_prompts(hf, prompts, ids, scheme, batch_size=args.batch_size)
    t_score = time.perf_counter() - t0

    free = PolicyModel(hf, None, ids, emit_respond=emits_respond(info))
    arms = {}
    print()
    for arm, extra in (("256 new tokens", {"min_new_tokens": args.gen_tokens}), ("stop at end-of-sequence", {})):
        t0 = time.perf_counter()
        gens = free.generate(prompts, GenerationConfig(max_new_tokens=args.gen_tokens, extra=extra),
                             batch_size=args.batch_size)
        t_gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        det.predict([g.text for g in gens], prompts=prompts)
        t_det = time.perf_counter() - t0
        n_new = sum(g.n_tokens for g in gens)
        ratio = (t_gen + t_det) / t_score
        arms[arm] = {"generate_seconds": t_gen, "detect_seconds": t_det, "new_tokens": n_new, "speedup": ratio}
        print(f"1) rates for all categories: scoring {t_score:.2f}s vs generating ({arm}, max {args.gen_tokens}; "
              f"{n_new} tokens) {t_gen:.1f}s + {det_name} detector {t_det:.2f}s = {t_gen + t_det:.1f}s "
              f"-> scoring is {ratio:.1f}x faster (target >= 20x)")

    # 2) generation speed with and without the policy (same model, same fixed length)
    try:
        pol = policy_from_profile(load_profile("balanced"))
    except Exception:  # noqa: BLE001 - no shipped profile: a fixed threshold policy costs the same
        pol = Policy(scheme, thresholds={c: 0.5 for c in scheme.categories})
    sp = prompts[:args.speed_prompts]
    cfg = GenerationConfig(max_new_tokens=args.speed_tokens, extra={"min_new_tokens": args.speed_tokens})
    plain, ctrl = [], []
    from refusalkit.tokens.policy import RefusalTokenProcessor

    class TimedProcessor(RefusalTokenProcessor):
        """The policy's processor, timing its own calls (robust to other load on the machine)."""
        spent = 0.0

        def __call__(self, input_ids, scores):
            t = time.perf_counter()
            out = super().__call__(input_ids, scores)
            TimedProcessor.spent += time.perf_counter() - t
            return out

    with_policy = PolicyModel(hf, pol, ids, emit_respond=emits_respond(info))
    with_policy.processor = TimedProcessor(pol, ids, emit_respond=emits_respond(info))
    free.generate(sp[:2], GenerationConfig(max_new_tokens=4))  # warm-up
    plain_cpu, ctrl_cpu = [], []
    arms2 = (("plain", hf, plain, plain_cpu), ("policy", with_policy, ctrl, ctrl_cpu))
    for r in range(args.repeats):
        for _label, m, acc, acc_cpu in (arms2 if r % 2 == 0 else arms2[::-1]):  # ABBA: drift cancels in pairs
            t0, c0 = time.perf_counter(), time.process_time()
            g = m.generate(sp, cfg, batch_size=len(sp))  # plain: HFModel.generate without any processor
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            n_tok = sum(x.n_tokens for x in g)
            acc.append(n_tok / dt)
            acc_cpu.append(n_tok / dc)  # CPU seconds of this process: less sensitive to other tenants
    total_policy_time = sum(len(sp) * args.speed_tokens / x for x in ctrl)
    share = TimedProcessor.spent / total_policy_time
    p_med, c_med = statistics.median(plain), statistics.median(ctrl)
    pairs = sorted(1 - c / p for p, c in zip(plain, ctrl))
    pairs_cpu = sorted(1 - c / p for p, c in zip(plain_cpu, ctrl_cpu))
    overhead, overhead_cpu = statistics.median(pairs), statistics.median(pairs_cpu)
    ci, ci_cpu = _median_ci(pairs), _median_ci(pairs_cpu)
    print(f"2) generation tokens/s (batch {len(sp)}, {args.speed_tokens} new tokens, {args.repeats} ABBA pairs): "
          f"median plain {p_med:.1f} vs with policy {c_med:.1f}")
    print(f"   overhead, median over pairs: wall clock {overhead:+.1%} (95% CI {ci[0]:+.1%}, {ci[1]:+.1%}); "
          f"process CPU time {overhead_cpu:+.1%} (95% CI {ci_cpu[0]:+.1%}, {ci_cpu[1]:+.1%}) (target <= 5%)")
    print(f"   runs plain {[round(x, 1) for x in plain]} policy {[round(x, 1) for x in ctrl]}")
    print(f"   time inside the policy's LogitsProcessor: {TimedProcessor.spent * 1000:.1f} ms of "
          f"{total_policy_time:.1f} s of policy generation = {share:.3%} (direct measure of the overhead)")
    res = {"n_prompts": len(prompts), "score_seconds": t_score, "generation_arms": arms,
           "detector": det_name, "gen_tokens": args.gen_tokens,
           "plain_tok_s": plain, "policy_tok_s": ctrl, "overhead": overhead, "pair_overheads": pairs,
           "overhead_ci95": ci, "overhead_cpu": overhead_cpu, "overhead_cpu_ci95": ci_cpu,
           "plain_cpu_tok_s": plain_cpu, "policy_cpu_tok_s": ctrl_cpu,
           "processor_seconds": TimedProcessor.spent, "processor_share": share,
           "threads": torch.get_num_threads()}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)


def _median_ci(xs: list[float], n_boot: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Return a bootstrap 95% interval of the median of ``xs``."""
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(n_boot))
    return meds[int(0.025 * n_boot)], meds[int(0.975 * n_boot) - 1]


if __name__ == "__main__":
    main()
