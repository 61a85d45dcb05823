"""Benchmark: end-to-end prompts/s of `refusalkit eval` on the bundled model, batched vs batch size 1.

Both evals run in this one process on the same prompts, model object and settings, one after the other;
only the generation batch size differs. Each eval is the full path users run (load prompts, load the
detector, generate through the run store, judge each committed batch, bootstrap metrics, plots, HTML
report), so the share of time spent outside generation is measured too (target: under 5%).

One-time, per-process costs are timed apart and printed, like the model load: importing the detector's
and the plots' libraries (scikit-learn, matplotlib) happens once per process whichever eval comes first,
so it is paid before both arms and would otherwise be charged to whichever arm runs first.
The defaults are the eval command's own (256 new tokens) on 32 prompts.

    python bench/eval.py [--n 32] [--max-new-tokens 256] [--batch-size 16] [--bench xstest] [--detector NAME]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="xstest")
    ap.add_argument("--n", type=int, default=32, help="prompts (stratified --limit)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--detector", default=None, help="default: the shipped default detector")
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args()

    from refusalkit.evaluate.runner import run_eval
    from refusalkit.models.base import GenerationConfig
    from refusalkit.models.spec import load_model

    t = time.perf_counter()
    model = load_model("default", batch_size=args.batch_size)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    from refusalkit.evaluate import plots
    from refusalkit.evaluate.judge import resolve_detector
    resolve_detector(args.detector)
    plots._plt()
    imports_s = time.perf_counter() - t
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, bs in (("batched", args.batch_size), ("batch size 1", 1)):
            t = time.perf_counter()
            res = run_eval([args.bench], model_spec="default", out_dir=Path(tmp) / label.replace(" ", "_"),
                           detector=args.detector, limit=args.n, config=cfg, batch_size=bs, model=model,
                           n_boot=args.n_boot)
            wall = time.perf_counter() - t
            tm = res.timing
            results[label] = {"batch_size": bs, "prompts": res.metrics["n"], "wall_s": round(wall, 2),
                              "prompts_per_s": round(res.metrics["n"] / wall, 3),
                              "generate_s": round(tm["generate_s"], 2), "judge_s": round(tm["judge_s"], 3),
                              "metrics_report_s": round(tm["metrics_report_s"], 3),
                              "outside_generation_share": round(1 - tm["generate_s"] / wall, 4),
                              "detector": res.metrics["detector"]["name"]}
    b, s = results["batched"], results["batch size 1"]
    print(f"one-time costs (shared by both arms): model load {load_s:.1f}s, detector + plotting imports "
          f"{imports_s:.1f}s")
    print(f"{b['prompts']} {args.bench} prompts, "
          f"max_new_tokens={args.max_new_tokens}, detector={b['detector']}")
    print(f"{'run':<14}{'batch':>6}{'wall s':>9}{'prompts/s':>11}{'generate s':>12}{'judge s':>9}"
          f"{'report s':>10}{'outside gen':>13}")
    for label, r in results.items():
        print(f"{label:<14}{r['batch_size']:>6}{r['wall_s']:>9.1f}{r['prompts_per_s']:>11.3f}{r['generate_s']:>12.1f}"
              f"{r['judge_s']:>9.2f}{r['metrics_report_s']:>10.2f}{100 * r['outside_generation_share']:>12.1f}%")
    cold = 1 - b["generate_s"] / (b["wall_s"] + imports_s)
    print(f"batched, counting the one-time imports as well: {100 * cold:.1f}% outside generation")
    print(f"speed-up batched / batch size 1: {b['prompts_per_s'] / s['prompts_per_s']:.2f}x")
    print(json.dumps({"model_load_s": round(load_s, 2), "imports_s": round(imports_s, 2), **results}))


if __name__ == "__main__":
    main()
