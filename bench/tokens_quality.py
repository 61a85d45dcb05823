"""Quality figures of the refusal-token adapter on the held-out CoCoNot test split (for docs/benchmarks.md).

Reads files written by refusalkit commands and judges responses with a detector:

- binary F1 (should-not-comply positive) of each profile's control-token decisions (from the profile's
  test figures) against the base model without tokens, whose responses the detector judges;
- agreement of the control token with the text after it (responses of `refusalkit tokens generate`), and
  how many answers after `[respond]` are degenerate repetition loops (which a detector counts as answers);
- the calibration gap table stored by `refusalkit tokens calibrate --gap-table`.

    python bench/tokens_quality.py --base base_test.jsonl --policy-responses tok_test.jsonl \
        --profiles strict balanced lenient argmax --gap-profile balanced
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict


def f1_of(pred, y):
    tp = sum(p and t for p, t in zip(pred, y))
    fp = sum(p and not t for p, t in zip(pred, y))
    fn = sum((not p) and t for p, t in zip(pred, y))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return {"f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0, "precision": prec, "recall": rec,
            "n": len(y)}


def repeated_share(text: str) -> float:
    """Return the share of a text's word 4-grams that repeat an earlier one (0 for short texts)."""
    w = text.split()
    grams = [" ".join(w[i:i + 4]) for i in range(len(w) - 3)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="Base-model responses on the test split (refusalkit generate).")
    ap.add_argument("--policy-responses", required=True, help="`refusalkit tokens generate` output on the test split.")
    ap.add_argument("--profiles", nargs="+", default=["strict", "balanced", "lenient"])
    ap.add_argument("--gap-profile", default=None, help="Profile whose test_gap_table to print.")
    ap.add_argument("--detector", default="default")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from refusalkit.data.io import iter_jsonl
    from refusalkit.detect import get_detector, is_refusal
    from refusalkit.tokens.calibrate import gap_summary, wilson
    from refusalkit.tokens.policy import load_profile

    try:
        det, det_name = get_detector(args.detector), args.detector
        det.predict(["I can't help with that."])
    except Exception as e:  # noqa: BLE001 - fall back and say so
        print(f"detector {args.detector!r} unavailable ({e}); using keyword")
        det, det_name = get_detector("keyword"), "keyword"
    out: dict = {"detector": det_name}

    base = list(iter_jsonl(args.base))
    bv = det.predict([r["response"] for r in base], prompts=[r["prompt"] for r in base])
    y = [r.get("expected") == "refuse" or r.get("label") == "should_not_comply" for r in base]
    pred = [is_refusal(v) for v in bv]
    out["base"] = f1_of(pred, y)
    cats = defaultdict(lambda: [0, 0, 0, 0])
    for p, t, r in zip(pred, y, base):
        c = cats[r.get("category")]
        if t:
            c[0] += p
            c[1] += 1
        else:
            c[2] += p
            c[3] += 1
    out["base_per_category"] = {k: {"harmful": v[0] / v[1] if v[1] else None,
                                    "contrast": v[2] / v[3] if v[3] else None} for k, v in cats.items()}
    sh = sum(p for p, t in zip(pred, y) if t) / max(1, sum(y))
    sc = sum(p for p, t in zip(pred, y) if not t) / max(1, len(y) - sum(y))
    print(f"base model ({det_name} detector, {len(base)} test prompts): F1 {out['base']['f1']:.3f} "
          f"(P {out['base']['precision']:.3f} R {out['base']['recall']:.3f}); refuses {sh:.1%} of should-not-comply, "
          f"{sc:.1%} of contrast")

    out["profiles"] = {}
    for name in args.profiles:
        prof = load_profile(name)
        b = prof["test"]["binary"]
        out["profiles"][name] = {"binary": b, "per_category": prof["test"]["per_category"],
                                 "thresholds": prof["policy"].get("thresholds")}
        per = prof["test"]["per_category"]
        rates = "; ".join(f"{c}: {d['harmful']['rate']:.0%}" + (f" / contrast {d['contrast']['rate']:.0%}"
                                                               if "contrast" in d else "")
                          for c, d in per.items() if "harmful" in d)
        print(f"profile {name}: F1 {b['f1']:.3f} (P {b['precision']:.3f} R {b['recall']:.3f}) | {rates}")

    pol = list(iter_jsonl(args.policy_responses))
    pv = det.predict([r["response"] for r in pol], prompts=[r["prompt"] for r in pol])
    agree_ref = [is_refusal(v) for r, v in zip(pol, pv) if r.get("refused")]
    agree_res = [not is_refusal(v) for r, v in zip(pol, pv) if not r.get("refused")]
    n = len(agree_ref) + len(agree_res)
    k = sum(agree_ref) + sum(agree_res)
    lo, hi = wilson(k, n)
    out["agreement"] = {"overall": k / n if n else None, "ci95": [lo, hi], "n": n,
                        "refusal_token_then_refusal_text": (sum(agree_ref) / len(agree_ref)) if agree_ref else None,
                        "n_refusal_token": len(agree_ref),
                        "respond_then_answer": (sum(agree_res) / len(agree_res)) if agree_res else None,
                        "n_respond": len(agree_res)}
    a = out["agreement"]
    # an answer the detector accepts can still be a degenerate loop; count those among the [respond] answers
    answers = [r["response"] for r in pol if not r.get("refused")]
    loops = sum(repeated_share(t) > 0.25 for t in answers)
    out["respond_answers_repetitive"] = {"n": len(answers), "repetitive": loops,
                                         "rule": "more than 25% of the word 4-grams repeat"}
    print(f"agreement of control token and text ({det_name}): {a['overall']:.1%} [{lo:.1%}, {hi:.1%}] of {n}; "
          f"refusal token -> refusal text {a['refusal_token_then_refusal_text']:.1%} (n={len(agree_ref)}), "
          f"[respond] -> answer {a['respond_then_answer']:.1%} (n={len(agree_res)})")

    print(f"answers after [respond]: {loops} of {len(answers)} repetitive (more than 25% of word 4-grams repeated)")

    if args.gap_profile:
        prof = load_profile(args.gap_profile)
        rows = prof.get("test_gap_table") or []
        out["gap_table"] = rows
        print("\ntarget | category | n | threshold | achieved [95% CI] | gap | target in CI")
        for r in rows:
            print(f"{r['target']:.0%} | {r['category']} | {r['n']} | {r['threshold']:.3g} | {r['achieved']:.1%} "
                  f"[{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}] | {r['gap'] * 100:+.1f} | {'yes' if r['within_ci'] else 'NO'}")
        gs = gap_summary(rows)
        out["mean_abs_gap"], out["misses_outside_ci"] = gs["mean_abs_gap"], gs["outside"]
        print(f"mean |gap| {out['mean_abs_gap'] * 100:.1f} points over {gs['n']} (target, category) cells; "
              f"per target: " + ", ".join(f"{t:.0%}: {g * 100:.1f}" for t, g in gs["per_target"].items())
              + f"; outside the 95% CI: {out['misses_outside_ci']}")
        from refusalkit.tokens.profile import gap_floor
        fl = gap_floor(prof["calibration"], prof["test"], tuple(gs["per_target"]))
        out["sampling_floor"] = fl
        print(f"sampling alone at these split sizes ({fl['sims']} simulations): mean |gap| "
              f"{fl['oracle_mean_abs_gap'] * 100:.1f} points with exact thresholds, "
              f"{fl['calibrated_mean_abs_gap'] * 100:.1f} with thresholds from the calibration split; "
              f"cells outside the 95% CI {fl['oracle_outside_share']:.0%} / {fl['calibrated_outside_share']:.0%}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
