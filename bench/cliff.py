"""The refusal cliff on a real model (issue 16's "Must show"): probe AUROC per layer on held-out prompts, the cliff
statistic over JailbreakBench behaviours, the refusal rate vs number of heads ablated, and Cliff-as-a-Judge vs
random selection at equal size, in one process.

    python bench/cliff.py --model subject --sections probe,cliff,heads,select --n-train 260 --n-test 100 \
        --n-cliff 50 --n-heads-prompts 32 --max-new-tokens 256 --out bench/cliff_subject

Data (the data root, ``$REFUSALKIT_DATA``): the probe trains on the harmful/harmless ``train`` splits, chooses
its layer on ``val`` and is measured on ``test`` (``harmful_instructions.jsonl``, ``harmless_instructions.jsonl``;
labels harmful = 1). The cliff section scans JailbreakBench behaviours (``jbb_harmful_behaviors.jsonl``; the
harmful splits draw on JailbreakBench too, so a behaviour may also be a probe training prompt). Heads: ranked on
harmful ``val`` prompts, the curve measured on harmful and harmless ``test`` prompts. Selection: the pool is the
harmful ``train`` split. Answers are judged by the shipped ``default`` detector. Instruct models are prompted
with the chain-of-thought surrogate (``refusalkit.latent.cliff.COT_TEMPLATE``); every figure says so.

What the selection section does NOT do: train on the selected sets (refusal tokens / DeRTa) and compare the
trained models; it reports what each selection contains (the model's own verdicts, scores), the input that
training comparison needs.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from refusalkit.data.io import read_records  # noqa: E402
from refusalkit.data.registry import data_root  # noqa: E402


def sample(path: Path, split: str | None, n: int, seed: int = 0) -> list[dict]:
    rows = [r for r in read_records(path) if split is None or r.get("split") == split]
    return rows if n >= len(rows) else random.Random(seed).sample(rows, n)


def log(msg: str) -> None:
    print(msg, flush=True)


def section_probe(hf, args, res: dict[str, Any]):
    from refusalkit.latent.guard import auroc
    from refusalkit.latent.probe import data_from_splits, last_position_acts, load_probe, save_probe, train_probe

    d = data_root()
    if args.probe:
        probe = load_probe(args.probe)
        probe.check_model(hf.model, args.model)
    else:
        data = data_from_splits(
            str(d / "harmful_instructions.jsonl"),
            str(d / "harmless_instructions.jsonl"),
            n_train=args.n_train,
            n_val_harmful=args.n_val,
            n_val_harmless=args.n_val,
        )
        t = time.perf_counter()
        probe, card = train_probe(hf, args.model, data, batch_size=args.batch_size, status=log)
        res["probe_train_s"] = round(time.perf_counter() - t, 1)
        if args.out:
            save_probe(Path(args.out) / "probe", probe, card)
    harmful = [r["prompt"] for r in sample(d / "harmful_instructions.jsonl", "test", args.n_test)]
    harmless = [r["prompt"] for r in sample(d / "harmless_instructions.jsonl", "test", args.n_test)]
    X = last_position_acts(hf, harmful + harmless, batch_size=args.batch_size)
    y = np.array([1] * len(harmful) + [0] * len(harmless))
    per_layer = [round(auroc(probe.logit(X[:, li], li), y), 4) for li in range(probe.n_layers)]
    p = probe.score(X[:, probe.layer])
    res["probe"] = {
        "layer": probe.layer,
        "val_auroc": (probe.card or {}).get("val_auroc"),
        "test_auroc_per_layer": per_layer,
        "test_auroc_best_layer": per_layer[probe.layer],
        "test_accuracy_at_0_5": round(float(((p >= 0.5) == (y == 1)).mean()), 4),
        "n_test": {"harmful": len(harmful), "harmless": len(harmless)},
        "labels": "harmful (1) vs harmless (0) instructions",
    }
    log(f"probe: layer {probe.layer}, test AUROC {per_layer[probe.layer]:.4f}; per layer {per_layer}")
    if args.out:
        from refusalkit.latent.report import _plt, _png

        plt = _plt()
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(range(len(per_layer)), per_layer, marker="o", ms=3, label="test")
        if probe.card and probe.card.get("val_auroc"):
            ax.plot(range(len(per_layer)), probe.card["val_auroc"], marker=".", ms=3, alpha=0.6, label="validation")
        ax.axvline(probe.layer, color="grey", ls="--", lw=1)
        ax.set_xlabel("layer (input of)")
        ax.set_ylabel("AUROC")
        ax.set_ylim(0.4, 1.01)
        ax.legend()
        (Path(args.out) / "probe_auroc.png").write_bytes(_png(fig))
    return probe


def section_cliff(hf, probe, det, args, res: dict[str, Any]) -> None:
    from refusalkit.latent.cliff import scan, summarize, uses_think
    from refusalkit.latent.cliff_report import report_html, summary_plot

    rows = sample(data_root() / "jbb_harmful_behaviors.jsonl", None, args.n_cliff)
    t = time.perf_counter()
    recs = scan(
        hf,
        probe,
        [r["prompt"] for r in rows],
        det,
        window=args.window,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        answer_tokens=args.answer_tokens,
    )
    for r, x in zip(rows, recs):
        x["id"] = r["id"]
    s = summarize(recs)
    s["prompting"] = "reasoning template" if uses_think(hf.tokenizer) else "chain-of-thought surrogate"
    s["seconds"] = round(time.perf_counter() - t, 1)
    res["cliff"] = s
    log(f"cliff: {json.dumps(s)}")
    if args.out:
        png = summary_plot(recs, args.window)
        (Path(args.out) / "cliff.png").write_bytes(png)
        (Path(args.out) / "cliff.html").write_text(report_html(recs, s, png, {"model": args.model}), encoding="utf-8")
        with open(Path(args.out) / "cliff.jsonl", "w", encoding="utf-8") as fh:
            for x in recs:
                fh.write(json.dumps(x) + "\n")


def section_heads(hf, probe, det, args, res: dict[str, Any]) -> None:
    from refusalkit.latent.heads import attention_layout, attribute, refusal_curve
    from refusalkit.models.base import GenerationConfig

    d = data_root()
    rank_prompts = [r["prompt"] for r in sample(d / "harmful_instructions.jsonl", "val", args.n_heads_prompts)]
    t = time.perf_counter()
    base, ranking = attribute(hf, probe, rank_prompts, batch_size=args.batch_size)
    lay = attention_layout(hf.model)
    groups = {
        "harmful": [r["prompt"] for r in sample(d / "harmful_instructions.jsonl", "test", args.n_curve, seed=1)],
        "harmless": [r["prompt"] for r in sample(d / "harmless_instructions.jsonl", "test", args.n_curve, seed=1)],
    }
    cfg = GenerationConfig(max_new_tokens=args.curve_tokens)
    out = {"base_score": round(base, 5), "top": ranking[:10], "n_heads": lay.total, "n_ranked": len(ranking)}
    for mode in args.head_modes.split(","):
        out[mode] = refusal_curve(
            hf,
            ranking,
            groups,
            [float(f) for f in args.fractions.split(",")],
            det,
            mode=mode,
            factor=args.amplify,
            config=cfg,
            batch_size=args.batch_size,
            on_point=lambda p, m=mode: log(f"heads {m}: k={p['k']} {p['refusal_rate']}"),
        )
    out["seconds"] = round(time.perf_counter() - t, 1)
    res["heads"] = out


def section_select(hf, probe, det, args, res: dict[str, Any]) -> None:
    from refusalkit.latent.cliff import scan
    from refusalkit.latent.probe import prompt_scores
    from refusalkit.latent.select import select_random, select_worst

    pool = sample(data_root() / "harmful_instructions.jsonl", "train", args.n_pool, seed=2)
    prompts = [r["prompt"] for r in pool]
    t = time.perf_counter()
    last = [float(v) for v in prompt_scores(hf, probe, prompts, batch_size=args.batch_size)]
    recs = scan(
        hf,
        probe,
        prompts,
        det,
        window=args.window,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        answer_tokens=args.answer_tokens,
    )
    cliffs = [r["cliff"] for r in recs]
    complied = np.array([not r["refused"] for r in recs])
    out: dict[str, Any] = {"n_pool": len(pool), "pool_compliance_rate": round(float(complied.mean()), 4)}
    for frac in [float(f) for f in args.select_fractions.split(",")]:
        picks = {
            "cliff": select_worst(cliffs, "cliff", frac),
            "last_p_refusal": select_worst(last, "last_p_refusal", frac),
            "random": select_random(len(pool), frac, seed=0),
        }
        out[str(frac)] = {
            k: {
                "n": len(idx),
                "complied_share": round(float(complied[idx].mean()), 4),
                "mean_cliff": round(float(np.mean([cliffs[i] for i in idx if cliffs[i] is not None] or [np.nan])), 4),
                "mean_last_p_refusal": round(float(np.mean([last[i] for i in idx])), 4),
                "ids": [pool[i]["id"] for i in idx],
            }
            for k, idx in picks.items()
        }
        log(f"select {frac}: " + ", ".join(f"{k} complied {v['complied_share']}" for k, v in out[str(frac)].items()))
    out["seconds"] = round(time.perf_counter() - t, 1)
    out["not_done"] = "training on the selections and comparing refusal-token F1 / DeRTa attack success"
    res["select"] = out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--probe", help="an existing probe artifact (else one is trained)")
    ap.add_argument("--sections", default="probe,cliff,heads,select")
    ap.add_argument("--n-train", type=int, default=260)
    ap.add_argument("--n-val", type=int, default=39)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--n-cliff", type=int, default=50)
    ap.add_argument("--n-heads-prompts", type=int, default=32)
    ap.add_argument("--n-curve", type=int, default=50)
    ap.add_argument("--n-pool", type=int, default=260)
    ap.add_argument("--fractions", default="0,0.01,0.03,0.05")
    ap.add_argument("--head-modes", default="ablate,amplify")
    ap.add_argument("--amplify", type=float, default=2.0)
    ap.add_argument("--select-fractions", default="0.02,0.1")
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--answer-tokens", type=int, default=64)
    ap.add_argument("--curve-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", help="folder for the probe, plots, traces and results.json")
    args = ap.parse_args()

    from refusalkit.detect import get_detector
    from refusalkit.latent.use import load_hf

    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    sections = set(args.sections.split(","))
    hf = load_hf(args.model, batch_size=args.batch_size)
    det = get_detector("default")
    res: dict[str, Any] = {"model": args.model, "args": vars(args)}
    t0 = time.perf_counter()
    probe = section_probe(hf, args, res) if "probe" in sections or not args.probe else None
    if probe is None:
        from refusalkit.latent.probe import load_probe

        probe = load_probe(args.probe)
        probe.check_model(hf.model, args.model)
    if "cliff" in sections:
        section_cliff(hf, probe, det, args, res)
    if "heads" in sections:
        section_heads(hf, probe, det, args, res)
    if "select" in sections:
        section_select(hf, probe, det, args, res)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    if args.out:
        (Path(args.out) / "results.json").write_text(json.dumps(res, indent=1), encoding="utf-8")
    log(f"done in {res['seconds']} s")


if __name__ == "__main__":
    main()
