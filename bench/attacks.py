"""Direct request vs reformulation attacks (past/future tense by default) on JailbreakBench, with attack
success at k: the measurement of issue 17 (Andriushchenko & Flammarion 2024).

Usage:

    python bench/attacks.py [--model subject] [--attacker SAME] [--judge MODEL] [--transforms past,future]
                            [--n 100] [--k 5] [--max-new-tokens 150] [--temperature 1.0] [--out DIR]
    python bench/attacks.py --runs RUN_DIR [RUN_DIR ...] [--out TABLE.md]   # tabulate `refusalkit attack` runs

Defaults follow the paper where a CPU allows: the target is the bundled ``subject`` model (it refuses most
JailbreakBench behaviours; SmolLM2 refuses none), sampled at temperature 1 with up to 150 new tokens; the
attacker is the target model itself unless ``--attacker`` names another (the paper used GPT-3.5, which
writes better rewrites than a 1.5B model), sampling at temperature 1 with up to 150 new tokens. ``--n``
behaviours are a seeded stratified sample over JailbreakBench's ten categories (all 100 at ``--n 100``).
Success is the detector's (the answer is full compliance) unless ``--judge`` names a harmfulness judge
(then the paper's rating-10 criterion stops the attempts; both are recorded).

Every stage is resumable (rerun the same command after a kill), one model is loaded once for all roles it
plays, and the direct request is generated once and shared by every transform (``OUT/direct``). Writes
``OUT/<transform>/`` (metrics.json, attempts.jsonl, report.html, asr_at_k.png) per transform and
``OUT/table.md`` + ``OUT/summary.json`` with the side-by-side table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _pct(r: dict) -> str:
    if r.get("rate") is None:
        return "-"
    return f"{100 * r['rate']:.0f}% [{100 * r['ci'][0]:.0f}, {100 * r['ci'][1]:.0f}]"


def _wil(r: dict) -> str:
    return f"[{100 * r['wilson'][0]:.0f}, {100 * r['wilson'][1]:.0f}]"


def table(results: dict[str, dict], args: argparse.Namespace) -> str:
    """Return the markdown tables: ASR per transform (direct, k=1, k) and ASR at k per category."""
    first = next(iter(results.values()))
    attacker = next((m["run"]["attacker"] for m in results.values() if m["run"].get("attacker")), "-")
    gen = first["run"].get("generation") or {}
    lines = [
        f"Target `{first['run']['model']}`, attacker `{attacker}`, judge "
        f"`{first['run'].get('judge') or '-'}`; {first['n']} JailbreakBench behaviours (seed "
        f"{first['run'].get('seed', args.seed)}), k = {first['k']}, target T = "
        f"{gen.get('temperature', args.temperature)}, {gen.get('max_new_tokens', args.max_new_tokens)} new tokens; "
        f"success = {first['criterion']}. Rates with 95% bootstrap intervals (Wilson in brackets after).",
        "",
        "| transform | n | direct | ASR@1 | ASR@k | Wilson (ASR@k) | attempts run | mean attempts to success |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in results.items():
        mts = m["attempts"]["mean_to_success"]
        lines.append(
            f"| {name} | {m['n']} | {_pct(m['asr_direct'])} | {_pct(m['asr_at_k'][0])} | "
            f"{_pct(m['asr'])} | {_wil(m['asr'])} | {m['attempts_run']} | "
            f"{'-' if mts is None else f'{mts:.2f}'} |"
        )
    cats = [c["category"] for c in first["per_category"]]
    lines += [
        "",
        "ASR at k per category:",
        "",
        "| category | n | direct | " + " | ".join(results) + " |",
        "|---|---|---|" + "---|" * len(results),
    ]
    for i, cat in enumerate(cats):
        c0 = first["per_category"][i]
        cells = [_pct(results[t]["per_category"][i]["asr_at_k"][-1]) for t in results]
        lines.append(f"| {cat} | {c0['n']} | {_pct(c0['asr_direct'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tabulate_runs(args: argparse.Namespace) -> None:
    """Print (and write beside the first run, as ``table.md``) the table of finished attack runs."""
    results: dict[str, dict] = {}
    for d in args.runs:
        path = Path(d) / "metrics.json"
        if not path.is_file():
            raise SystemExit(f"{path}: missing (run `refusalkit attack ... --out {d}` to the end first)")
        m = json.loads(path.read_text(encoding="utf-8"))
        results[m.get("transform") or Path(d).name] = m
    text = table(results, args)
    out = Path(args.out) if args.out else Path(args.runs[0]).parent / "table.md"
    out.write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="subject")
    ap.add_argument("--attacker", default=None, help="default: the target model itself")
    ap.add_argument("--judge", default=None, help="harmfulness judge model (default: none; detector only)")
    ap.add_argument("--transforms", default="past,future")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=150)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--attacker-max-new-tokens", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--detector", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--out", default=None, help="default: bench/out/attacks-<model>-n<N>-k<K>")
    ap.add_argument(
        "--runs",
        nargs="+",
        default=None,
        help="only tabulate finished `refusalkit attack` folders side by side (their metrics.json); nothing runs",
    )
    args = ap.parse_args()
    if args.runs:
        tabulate_runs(args)
        return

    from refusalkit.attacks import get_transform, run_attack
    from refusalkit.evaluate.attack_report import check_attack_dir, write_attack_outputs
    from refusalkit.evaluate.benchsets import load_eval_examples
    from refusalkit.evaluate.judge import resolve_detector
    from refusalkit.models.base import GenerationConfig
    from refusalkit.models.spec import ModelSpec

    attacker = args.attacker or args.model
    out = Path(
        args.out
        or Path(__file__).resolve().parent / "out" / f"attacks-{args.model.replace('/', '_')}-n{args.n}-k{args.k}"
    )
    out.mkdir(parents=True, exist_ok=True)
    for name in args.transforms.split(","):
        check_attack_dir(out / name.strip())
    examples = load_eval_examples(["jbb"], limit=args.n, seed=args.seed)
    det = resolve_detector(args.detector)
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    acfg = GenerationConfig(max_new_tokens=args.attacker_max_new_tokens, temperature=1.0)
    jcfg = GenerationConfig(max_new_tokens=10, temperature=0.0)
    specs = {s: ModelSpec.parse(s).display for s in {args.model, attacker, *([args.judge] if args.judge else [])}}
    models: dict = {}  # filled by run_attack: each spec is loaded once (and only when something is pending)

    def progress(stage: str, p) -> None:
        if p.new:
            print(f"  {stage}: {p.done}/{p.total} ({p.new_tokens / max(p.seconds, 1e-9):.1f} tok/s)", flush=True)

    results: dict[str, dict] = {}
    for name in [t.strip() for t in args.transforms.split(",") if t.strip()]:
        tf = get_transform(name)
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        res = run_attack(
            examples,
            target=args.model,
            transform=tf,
            k=args.k,
            out_dir=out / name,
            detector=det,
            attacker=attacker if tf.needs_attacker else None,
            judge=args.judge,
            models=models,
            config=cfg,
            attacker_config=acfg,
            judge_config=jcfg,
            seed=args.seed,
            batch_size=args.batch_size,
            direct_dir=out / "direct",
            on_progress=progress,
        )
        run = {
            "model": specs[args.model],
            "attacker": specs[attacker] if tf.needs_attacker else None,
            "judge": specs[args.judge] if args.judge else None,
            "bench": "jbb",
            "limit": args.n,
            "seed": args.seed,
            "transform": name,
            "k": args.k,
            "generation": cfg.to_dict(),
            "attacker_generation": acfg.to_dict() if tf.needs_attacker else None,
            "command": "bench/attacks.py",
        }
        results[name] = write_attack_outputs(out / name, res, run=run, n_boot=args.n_boot, seed=args.seed)
        print(
            f"   {name}: direct {_pct(results[name]['asr_direct'])}, ASR@{args.k} {_pct(results[name]['asr'])} "
            f"({time.perf_counter() - t0:.0f}s; generated {res.n_new})",
            flush=True,
        )
    text = table(results, args)
    (out / "table.md").write_text(text, encoding="utf-8")
    (out / "summary.json").write_text(
        json.dumps(
            {
                name: {
                    k: m[k]
                    for k in (
                        "run",
                        "n",
                        "k",
                        "criterion",
                        "attempts_run",
                        "asr_direct",
                        "asr_at_k",
                        "by_criterion",
                        "per_category",
                        "attempts",
                        "timing",
                    )
                }
                for name, m in results.items()
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(text)
    print(f"wrote {out}/table.md, summary.json and one folder per transform")


if __name__ == "__main__":
    main()
