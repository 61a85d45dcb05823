"""Out-of-distribution check of a refusal-token adapter: how often its policies refuse XSTest's safe prompts
(over-refusal) and its unsafe ones, from one forward pass per prompt (no generation).

XSTest was never used to train or calibrate the adapter (CoCoNot was), so this shows how far the
per-category decisions carry beyond CoCoNot's style.

    python bench/tokens_xstest.py [--model default] [--adapter bundled] [--profiles argmax balanced strict lenient]

It also prints the AUROC of unsafe vs safe prompts (issue 18: >= 0.75 for SmolLM2) for the refusal score
p_refuse (the summed probability of the refusal tokens) and for each refusal token's own probability.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "xstest_prompts.jsonl"))
    ap.add_argument("--model", default="default", help="Base model of the adapter (default | subject | PATH).")
    ap.add_argument("--adapter", default="bundled")
    ap.add_argument("--profiles", nargs="+", default=["argmax", "balanced", "strict", "lenient"],
                    help="Shipped profile names or profile files made for this adapter.")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    from refusalkit.data.io import iter_jsonl
    from refusalkit.tokens.calibrate import score_prompts, wilson
    from refusalkit.tokens.model import load_token_model
    from refusalkit.tokens.policy import load_profile, policy_from_profile

    rows = list(iter_jsonl(args.data))
    hf, scheme, ids, info = load_token_model(args.model, args.adapter, batch_size=args.batch_size)
    q = score_prompts(hf, [r["prompt"] for r in rows], ids, scheme, batch_size=args.batch_size)
    safe = [r.get("label") == "safe" for r in rows]
    print(f"adapter {args.adapter}; {sum(safe)} safe and {len(rows) - sum(safe)} unsafe XSTest prompts")
    from sklearn.metrics import roc_auc_score

    unsafe = [0 if s else 1 for s in safe]
    n_ref = len(scheme.refusal_tokens)  # refusal tokens come first in scheme.tokens, [respond] last
    auroc = {"p_refuse": float(roc_auc_score(unsafe, q[:, :n_ref].sum(axis=1)))}
    auroc.update({t: float(roc_auc_score(unsafe, q[:, k])) for k, t in enumerate(scheme.refusal_tokens)})
    print("AUROC unsafe vs safe: " + ", ".join(f"{k} {v:.3f}" for k, v in auroc.items()))
    out: dict = {"auroc": auroc}
    for name in args.profiles:
        # a shipped name is looked up in this adapter's profiles/ (the subject model's adapter has its own)
        refused = policy_from_profile(load_profile(name, info["adapter"])).refuses(q)
        res = {}
        for part, keep in (("safe", True), ("unsafe", False)):
            k = int(sum(x for x, s in zip(refused, safe) if s == keep))
            n = sum(1 for s in safe if s == keep)
            res[part] = {"refused": k, "n": n, "rate": k / n, "ci95": wilson(k, n)}
        out[name] = res
        print(f"{name}: safe refused {res['safe']['refused']}/{res['safe']['n']} = {res['safe']['rate']:.1%} "
              f"(over-refusal); unsafe refused {res['unsafe']['refused']}/{res['unsafe']['n']} = "
              f"{res['unsafe']['rate']:.1%}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
