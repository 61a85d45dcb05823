"""Latent analysis on a real model (issue 19's "Must show"): ablation, addition, the exported abliterated model,
the Latent Guard against the prompt predictor and keywords, and the hooks' overhead, side by side in one process.

    python bench/latent.py --direction DIR --sections guard,ablation,addition,overhead,export \
        --n-harmful 100 --n-harmless 100 --n-xstest 450 --max-new-tokens 48 --json bench/latent_subject.json

DIR comes from ``refusalkit latent extract --model subject -o DIR``. Prompts: a seeded sample of the harmful
test split (harmful_instructions.jsonl) and the harmless test split (harmless_instructions.jsonl), never used
for extraction or selection; XSTest (a stratified seeded sample when --n-xstest < 450) is used for measuring
only. Refusal in generated answers is judged by refusalkit's shipped detector (``get_detector()``). Each
section merges its figures into the --json file, so sections can run in separate invocations.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from refusalkit.data.io import read_records  # noqa: E402
from refusalkit.data.registry import data_root  # noqa: E402


def sample(path: Path, split: str | None, n: int, seed: int = 0, label: str | None = None) -> list[dict]:
    rows = [
        r
        for r in read_records(path)
        if (split is None or r.get("split") == split) and (label is None or r.get("label") == label)
    ]
    return rows if n >= len(rows) else random.Random(seed).sample(rows, n)


def judged_refusal_rate(texts: list[str], prompts: list[str]) -> tuple[float, list[bool]]:
    from refusalkit.detect import get_detector, is_refusal

    labels = get_detector().predict(texts, prompts)
    flags = [is_refusal(x) for x in labels]
    return float(np.mean(flags)), flags


def generate(hf, prompts, spec, args):
    from refusalkit.latent.intervene import intervention
    from refusalkit.models.base import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens)
    t = time.perf_counter()
    with intervention(hf.model, spec):
        gens = hf.generate(prompts, cfg, batch_size=args.batch_size)
    dt = time.perf_counter() - t
    return [g.text for g in gens], sum(g.n_tokens for g in gens), dt


def section_ablation(hf, art, args, out):
    from refusalkit.latent.directions import first_token, kl_div
    from refusalkit.latent.use import ablation_spec

    data = data_root()
    harmful = [r["prompt"] for r in sample(data / "harmful_instructions.jsonl", "test", args.n_harmful)]
    harmless = [r["prompt"] for r in sample(data / "harmless_instructions.jsonl", "test", args.n_harmless)]
    spec = ablation_spec(art)
    res = {"n_harmful": len(harmful), "n_harmless": len(harmless), "max_new_tokens": args.max_new_tokens}
    rows: list[dict] = []
    for name, prompts in (("harmful", harmful), ("harmless", harmless)):
        for cond, s in (("plain", None), ("ablated", spec)):
            texts, ntok, dt = generate(hf, prompts, s, args)
            rate, flags = judged_refusal_rate(texts, prompts)
            res[f"{name}_{cond}_refusal"] = rate
            res[f"{name}_{cond}_examples"] = texts[:3]
            rows.extend(
                {"group": name, "condition": cond, "prompt": p, "response": t, "refusal": f}
                for p, t, f in zip(prompts, texts, flags)
            )
            print(
                f"ablation {name:8s} {cond:8s} refusal {rate:.3f}  ({len(prompts)} prompts, {ntok} tokens, {dt:.0f}s)",
                flush=True,
            )
    ids = art.card["refusal"]["refusal_token_ids"]
    base = first_token(hf, harmless, ids, keep_logprobs=True, batch_size=args.batch_size)
    abl = first_token(hf, harmless, ids, spec, keep_logprobs=True, batch_size=args.batch_size)
    res["harmless_first_token_kl"] = kl_div(base.logprobs, abl.logprobs)
    print(f"ablation harmless first-token KL {res['harmless_first_token_kl']:.4f}", flush=True)
    flips = flipped(rows)
    res["harmless_flips"] = flips
    print(
        f"ablation harmless answers that changed verdict: {len(flips['to_compliance'])} refusal -> compliance, "
        f"{len(flips['to_refusal'])} compliance -> refusal",
        flush=True,
    )
    if args.rows:
        write_rows(args.rows, rows)
    out["ablation"] = res


def flipped(rows: list[dict]) -> dict[str, list[str]]:
    """Return the harmless prompts whose verdict changed between the plain and the ablated model, both ways."""
    plain = {r["prompt"]: r["refusal"] for r in rows if r["group"] == "harmless" and r["condition"] == "plain"}
    abl = {r["prompt"]: r["refusal"] for r in rows if r["group"] == "harmless" and r["condition"] == "ablated"}
    return {
        "to_compliance": [p for p in plain if plain[p] and not abl.get(p, True)],
        "to_refusal": [p for p in plain if not plain[p] and abl.get(p, False)],
    }


def write_rows(path: str, rows: list[dict]) -> None:
    """Write the per-prompt answers and verdicts as JSONL, atomically."""
    from refusalkit.data.io import write_text_atomic

    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def section_addition(hf, art, args, out):
    from refusalkit.latent.use import steer_spec

    data = data_root()
    harmless = [r["prompt"] for r in sample(data / "harmless_instructions.jsonl", "test", args.n_harmless)]
    spec = steer_spec(art, args.coef)
    texts, ntok, dt = generate(hf, harmless, spec, args)
    rate, _ = judged_refusal_rate(texts, harmless)
    out["addition"] = {
        "n_harmless": len(harmless),
        "coef": args.coef,
        "layer": spec["layer"],
        "harmless_refusal": rate,
        "examples": texts[:3],
    }
    print(f"addition coef {args.coef} at layer {spec['layer']}: harmless refusal {rate:.3f} ({dt:.0f}s)", flush=True)


def section_guard(hf, art, args, out):
    from refusalkit.latent.guard import auroc, keyword_score
    from refusalkit.latent.use import guard_acts, guard_of, scores_of_acts
    from refusalkit.predict import get_predictor

    data = data_root()
    harmful = [r["prompt"] for r in sample(data / "harmful_instructions.jsonl", "test", args.n_harmful)]
    harmless = [r["prompt"] for r in sample(data / "harmless_instructions.jsonl", "test", args.n_harmless)]
    xs = sample(data / "xstest_prompts.jsonl", None, args.n_xstest // 2, label="unsafe") + sample(
        data / "xstest_prompts.jsonl", None, args.n_xstest // 2, label="safe"
    )
    guard = guard_of(art)
    pred = get_predictor("chatgpt")
    res = {"guard_positions": guard.positions, "guard_layers": guard.layers}
    t = time.perf_counter()
    for name, pos, neg in (
        ("test", harmful, harmless),
        (
            "xstest",
            [r["prompt"] for r in xs if r["label"] == "unsafe"],
            [r["prompt"] for r in xs if r["label"] == "safe"],
        ),
    ):
        prompts = pos + neg
        y = np.array([1] * len(pos) + [0] * len(neg))
        # every position the artifact has, so Zhao et al.'s inst position is measured beside the guard's own
        acts = guard_acts(hf, art, prompts, positions=list(art.card["positions"]), batch_size=args.batch_size)
        ls = scores_of_acts(art, acts)
        p = guard.p_harmful(ls)
        # the other score on the same activations and layers (AUROC needs no logistic map): how much the
        # choice of score matters, side by side
        other = "cosine" if guard.method == "projection" else "projection"
        inst = guard_of_inst(art, guard)
        per_layer = {
            pn: {int(i): round(auroc(v[:, i].numpy(), y), 4) for i in range(v.shape[1])} for pn, v in ls.items()
        }
        res[name] = {
            "n_pos": len(pos),
            "n_neg": len(neg),
            "guard_auroc": auroc(p, y),
            "guard_method": guard.method,
            f"{other}_score_auroc": auroc(guard.score(scores_of_acts(art, acts, other)), y),
            "inst_guard_auroc": auroc(inst.score(ls), y),
            "inst_guard_layers": inst.layers,
            "guard_accuracy_at_0.5": float(((p >= 0.5) == y).mean()),
            "predictor_auroc": auroc(pred.p_refusal(prompts), y),
            "keyword_auroc": auroc(keyword_score(prompts), y),
            "per_layer_auroc": per_layer,
        }
        r = res[name]
        print(
            f"guard {name}: AUROC guard ({guard.method}, {guard.positions[0]}) {r['guard_auroc']:.3f}  "
            f"{other} score {r[other + '_score_auroc']:.3f}  at inst {r['inst_guard_auroc']:.3f}  "
            f"predictor(chatgpt) {r['predictor_auroc']:.3f}  keywords {r['keyword_auroc']:.3f}  "
            f"(acc@0.5 {r['guard_accuracy_at_0.5']:.3f}; {len(pos)}+{len(neg)} prompts)",
            flush=True,
        )
    res["seconds"] = time.perf_counter() - t
    out["guard"] = res


def guard_of_inst(art, guard):
    """Return the guard restricted to Zhao et al.'s position: the inst layers within 0.01 of the best validation
    AUROC (the guard's own when it reads inst already)."""
    from refusalkit.latent.guard import LatentGuard

    if set(guard.positions) == {"inst"}:
        return guard
    v = guard.val_auroc.get("inst") or {}
    if not v:
        raise SystemExit("the guard's card has no validation AUROC at inst")
    pool = {k: a for k, a in v.items() if k >= 1}
    best = max(pool.values())
    layers = sorted(k for k, a in pool.items() if a >= best - 0.01)
    return LatentGuard(layers, 1.0, 0.0, method=guard.method, positions=["inst"] * len(layers))


def section_overhead(hf, art, args, out):
    from refusalkit.latent.intervene import intervention
    from refusalkit.latent.use import ablation_spec
    from refusalkit.models.base import GenerationConfig

    data = data_root()
    prompts = [r["prompt"] for r in sample(data / "harmless_instructions.jsonl", "test", args.batch_size, seed=1)]
    spec = ablation_spec(art)
    rates: dict[str, list[float]] = {"plain": [], "ablated": []}
    generate(hf, prompts[:2], None, argparse.Namespace(max_new_tokens=2, batch_size=2))  # warm-up
    for _ in range(args.overhead_reps):  # interleaved, so load changes hit both alike
        for cond, s in (("plain", None), ("ablated", spec)):
            # fixed length: count every generated position, EOS or not
            cfg = GenerationConfig(max_new_tokens=args.overhead_tokens, extra={"min_new_tokens": args.overhead_tokens})
            t = time.perf_counter()
            with intervention(hf.model, s):
                hf.generate(prompts, cfg, batch_size=len(prompts))
            dt = time.perf_counter() - t
            rates[cond].append(len(prompts) * args.overhead_tokens / dt)
    plain, abl = float(np.median(rates["plain"])), float(np.median(rates["ablated"]))
    out["overhead"] = {
        "tokens_per_s_plain": plain,
        "tokens_per_s_ablated": abl,
        "overhead_pct": 100 * (plain - abl) / plain,
        "reps": rates,
        "batch": len(prompts),
        "new_tokens": args.overhead_tokens,
    }
    print(
        f"overhead: plain {plain:.2f} tok/s, ablated {abl:.2f} tok/s ({out['overhead']['overhead_pct']:+.1f}%)",
        flush=True,
    )


def section_export(hf, art, args, out):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from refusalkit.latent.use import export_orthogonalized
    from refusalkit.models.hf import HFModel

    data = data_root()
    harmful = [r["prompt"] for r in sample(data / "harmful_instructions.jsonl", "test", args.n_harmful)]
    tmp = Path(tempfile.mkdtemp(prefix="latent-export-"))
    try:
        t = time.perf_counter()
        # edits hf.model in place (run this section last); saved in bf16 like `refusalkit latent export`
        export_orthogonalized(hf, art, tmp / "abliterated", save_dtype=torch.bfloat16)
        del hf
        # plain transformers, no refusalkit code between the folder and generate()
        model = AutoModelForCausalLM.from_pretrained(tmp / "abliterated", dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(tmp / "abliterated")
        plain = HFModel(tmp / "abliterated", model=model, tokenizer=tok, batch_size=args.batch_size)
        texts, ntok, dt = generate(plain, harmful, None, args)
        rate, _ = judged_refusal_rate(texts, harmful)
        out["export"] = {
            "n_harmful": len(harmful),
            "harmful_refusal": rate,
            "export_and_load_s": time.perf_counter() - t - dt,
            "examples": texts[:3],
        }
        print(f"export: harmful refusal with the orthogonalised model {rate:.3f}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def section_separation(hf, art, args, out):
    from refusalkit.latent.directions import separation_check

    data = data_root()
    harmless = [r["prompt"] for r in sample(data / "harmless_instructions.jsonl", "test", args.n_judge)]
    harmful = [r["prompt"] for r in sample(data / "harmful_instructions.jsonl", "test", args.n_judge)]
    layer = art.card["refusal"]["layer"]
    res = separation_check(
        hf,
        harmless,
        harmful,
        art.tensor("harmfulness")[layer],
        art.tensor("refusal_direction"),
        layer,
        art.card["refusal"]["refusal_token_ids"],
        coef=args.coef,
        batch_size=args.batch_size,
    )
    out["separation"] = res
    for k in ("plain", "harmfulness", "refusal"):
        print(
            f"separation: harmless steered along {k:11s} judged harmful {res[k]['judged_harmful']:.3f} "
            f"(log-odds {res[k]['logodds']:+.2f}), refusal p {res[k]['p_refusal']:.3f}",
            flush=True,
        )
    print(f"separation: harmful, plain: judged harmful {res['harmful_plain']['judged_harmful']:.3f}", flush=True)


SECTIONS = {
    "separation": section_separation,
    "ablation": section_ablation,
    "addition": section_addition,
    "guard": section_guard,
    "overhead": section_overhead,
    "export": section_export,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--direction", required=True)
    ap.add_argument("--model", default=None, help="default: the model named in the direction's card")
    ap.add_argument("--sections", default="guard,ablation,addition,overhead,export")
    ap.add_argument("--n-harmful", type=int, default=100)
    ap.add_argument("--n-harmless", type=int, default=100)
    ap.add_argument("--n-xstest", type=int, default=450)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--coef", type=float, default=1.0)
    ap.add_argument("--n-judge", type=int, default=32, help="prompts per class in the separation check")
    ap.add_argument("--overhead-reps", type=int, default=3)
    ap.add_argument("--overhead-tokens", type=int, default=16)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--json", default=None, help="merge the figures into this JSON file")
    ap.add_argument("--rows", default=None, help="write each ablation answer and its verdict to this JSONL file")
    args = ap.parse_args()
    from refusalkit.latent.use import load_for

    art, hf = load_for(args.direction, args.model, batch_size=args.batch_size, dtype=args.dtype)
    out: dict = {}
    if args.json and Path(args.json).is_file():
        out = json.loads(Path(args.json).read_text())
    out.setdefault("meta", {}).update(
        {
            "model": art.card["model"]["id"],
            "direction": str(args.direction),
            "refusal_layer": art.card["refusal"]["layer"],
            "refusal_position": art.card["refusal"]["position"],
            "torch_threads": torch.get_num_threads(),
            "dtype": str(hf.model.dtype),
            "date": time.strftime("%Y-%m-%d"),
        }
    )
    names = [s.strip() for s in args.sections.split(",") if s.strip()]
    if "export" in names:  # it edits the weights in place
        names = [n for n in names if n != "export"] + ["export"]
    for name in names:
        SECTIONS[name](hf, art, args, out)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
