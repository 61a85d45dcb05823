"""Cliff-as-a-Judge vs random selection, compared on what the resulting training does (issue 16, last
must-show): the subject model's refusal-token decision head is refitted with only a selected fraction of its
harmful training prompts, and each head is judged on the held-out test split.

    python bench/cliff_select_train.py --probe PROBE_DIR [--fractions 0.1,0.25] [--random-seeds 3]
                                       [--work /work/tk/subject_head_work] [--out bench/out/cliff-select]

The pool is every harmful (`Requests with safety concerns`, should not comply) prompt of the training split
of ``--data`` (the shipped subject head's data); the rest of the training split and the val split stay in
every run. Cliff-as-a-Judge keeps the pool prompts whose last-position probe score (the probe of
``refusalkit latent probe train``, its calibrated logit) is lowest: the model's refusal intent is weakest
there (``latent select --no-generate``; the generated-trace cliff costs a generation per prompt, hours here).
Random keeps a seeded sample of the same size, for ``--random-seeds`` seeds. ``all`` keeps the whole pool.

Each head is fitted by ``tokens train --head-only``'s code on the shared hidden-state cache (``--work``), so a
fit costs no forward pass for prompts already cached; the test split is scored once for all heads
(``tokens.head.HeadScorer``). Reported per head, under ``argmax``: F1 (should-not-comply positive), recall on
the harmful test prompts, refusal rate on the benign ones (CoCoNot contrast, harmless instructions, safe
look-alikes). Writes ``OUT/summary.json`` and ``OUT/table.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "tokens" / "coconot-harm-v1" / "subject_subsample.jsonl"
SAFETY = "Requests with safety concerns"


def _log(msg: str) -> None:
    print(msg, flush=True)


def pool_scores(args: argparse.Namespace, pool: list, out: Path) -> np.ndarray:
    """Return the probe's calibrated logit at the last prompt position of each pool prompt (cached in OUT)."""
    path = out / "pool_scores.json"
    ids = [it.id for it in pool]
    if path.is_file():
        have = json.loads(path.read_text())
        if have.get("ids") == ids and have.get("probe") == str(args.probe):
            return np.array(have["logit"])
    from refusalkit.latent.probe import load_probe_for, prompt_logits

    t0 = time.perf_counter()
    probe, hf = load_probe_for(args.probe, args.model, batch_size=args.batch_size)
    z = prompt_logits(hf, probe, [it.prompt for it in pool], batch_size=args.batch_size)
    path.write_text(json.dumps({"probe": str(args.probe), "layer": probe.layer, "ids": ids, "logit": z.tolist()}))
    _log(f"scored {len(pool)} pool prompts at layer {probe.layer} in {time.perf_counter() - t0:.0f}s")
    return np.asarray(z)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probe", required=True, help="probe folder of `refusalkit latent probe train`")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--model", default="subject")
    ap.add_argument("--head", default="bundled", help="the head whose training settings are reused")
    ap.add_argument("--fractions", default="0.1,0.25")
    ap.add_argument("--random-seeds", type=int, default=3)
    ap.add_argument("--work", default="/work/tk/subject_head_work", help="hidden-state cache folder")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "cliff-select"))
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    from refusalkit.data.io import iter_jsonl, write_jsonl_atomic
    from refusalkit.latent.select import select_random, select_worst
    from refusalkit.stats import wilson
    from refusalkit.tokens.data import read_labelled, stratified_split
    from refusalkit.tokens.head import HeadScorer, train_head
    from refusalkit.tokens.model import read_adapter_info, resolve_adapter
    from refusalkit.tokens.policy import Policy
    from refusalkit.tokens.scheme import TokenScheme
    from refusalkit.tokens.train import TrainConfig

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {r["id"]: r for r in iter_jsonl(args.data)}
    splits = stratified_split(read_labelled(args.data))
    pool = [it for it in splits["train"] if it.refuse and it.category == SAFETY]
    pool_ids = {it.id for it in pool}
    z = pool_scores(args, pool, out)

    selections: dict[str, list[int]] = {"all": list(range(len(pool)))}
    for f in [float(x) for x in args.fractions.split(",")]:
        selections[f"cliff-judge {f:g}"] = select_worst(list(z), "last_p_refusal", f)
        for s in range(args.random_seeds):
            selections[f"random {f:g} seed {s}"] = select_random(len(pool), f, seed=s)

    base_dir = resolve_adapter(args.head, args.model)
    info = read_adapter_info(base_dir)
    scheme = TokenScheme.from_dict(info["scheme"])
    heads: dict[str, Path] = {}
    for name, idx in selections.items():
        keep = {pool[i].id for i in idx}
        data = out / "data" / f"{name.replace(' ', '_')}.jsonl"
        data.parent.mkdir(exist_ok=True)
        write_jsonl_atomic(data, [r for rid, r in rows.items() if rid not in pool_ids or rid in keep])
        hdir = out / "heads" / name.replace(" ", "_")
        card = hdir / "refusal_tokens.json"
        if not card.is_file() or json.loads(card.read_text())["config"]["data"] != str(data):
            _log(f"fitting {name}: {len(idx)} of {len(pool)} pool prompts")
            # the scheme is the shipped head's, whatever categories a selection happens to contain
            cfg = TrainConfig(
                **{**info["config"], "data": str(data), "head_only": True, "categories": list(scheme.categories)}
            )
            train_head(cfg, hdir, work_dir=args.work, log=_log)
        heads[name] = hdir

    scorer = HeadScorer(args.model, args.work, scheme, batch_size=args.batch_size, log=_log)
    test = splits["test"]
    H, lse = scorer.states(test)
    y = np.array([it.refuse for it in test])
    harm = np.array([it.refuse and it.category == SAFETY for it in test])
    benign = ~y
    pol = Policy(scheme, rule="argmax")
    res: dict[str, dict] = {}
    for name, hdir in heads.items():
        ref = pol.refuses(scorer.probs(hdir, H, lse))
        tp = int((ref & y).sum())
        idx = selections[name]
        res[name] = {
            "n_selected": len(idx),
            "mean_pool_logit": float(np.mean(z[idx])),
            "f1": 2 * tp / max(int(ref.sum()) + int(y.sum()), 1),
            "harmful_recall": float(ref[harm].mean()),
            "harmful_recall_wilson": wilson(int(ref[harm].sum()), int(harm.sum())),
            "benign_refusal": float(ref[benign].mean()),
            "benign_refusal_wilson": wilson(int(ref[benign].sum()), int(benign.sum())),
        }
    summary = {
        "data": args.data,
        "probe": str(args.probe),
        "pool": len(pool),
        "test": {"n": len(test), "harmful": int(harm.sum()), "benign": int(benign.sum())},
        "results": res,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    lines = [
        f"Pool: {len(pool)} harmful training prompts; test split {len(test)} ({int(harm.sum())} harmful, "
        f"{int(benign.sum())} benign); argmax.",
        "",
        "| selection | n | mean probe logit | F1 | harmful refused | benign refused |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        lines.append(
            f"| {name} | {r['n_selected']} | {r['mean_pool_logit']:.2f} | {r['f1']:.3f} | "
            f"{100 * r['harmful_recall']:.1f}% | {100 * r['benign_refusal']:.1f}% |"
        )
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
