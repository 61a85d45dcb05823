"""Build the refusal-token training mixture of issue 18 item 1 and its data card.

Sources (from the data root, ``$REFUSALKIT_DATA`` or ``../shared/data``, and the repository):
CoCoNot (all five categories), ``harmful_instructions.jsonl`` (train -> train, val -> val, test -> calibration
and test), a seeded sample of ``harmless_instructions.jsonl`` (the same by its splits), and the hand-written
look-alikes ``data/tokens/lookalikes.jsonl`` (XSTest's ten safe prompt types and their unsafe contrasts).
XSTest and JailbreakBench stay evaluation-only: every prompt that is a near-duplicate of one of theirs
(normalised text, TF-IDF or MiniLM cosine > 0.9) is removed and counted in the card.

    .venv/bin/python scripts/build_token_data.py                  # -> data/tokens/coconot-harm-v1/
    .venv/bin/python scripts/build_token_data.py --out DIR --seed 7 --no-minilm

Writes ``DIR/data.jsonl`` (the format ``refusalkit tokens train`` reads; each row's split in
``token_split``), ``DIR/card.json`` and ``DIR/card.md``. Exit code 2 with one line on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NAME = "coconot-harm-v1"


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data-root", type=Path, default=None, help="Shared data folder (default: refusalkit's data root)."
    )
    ap.add_argument("--lookalikes", type=Path, default=ROOT / "data" / "tokens" / "lookalikes.jsonl")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "tokens" / DEFAULT_NAME)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--cal-per-test", type=float, default=2.5, help="Calibration prompts per test prompt.")
    ap.add_argument("--harmless-train", type=int, default=600)
    ap.add_argument("--harmless-val", type=int, default=100)
    ap.add_argument("--harmless-heldout", type=int, default=300, help="Harmless calibration + test prompts.")
    ap.add_argument("--threshold", type=float, default=0.9, help="Near-duplicate cosine threshold.")
    ap.add_argument("--no-minilm", action="store_true", help="Near-duplicates by text and TF-IDF only.")
    ap.add_argument("--floor-sims", type=int, default=4000)
    return ap.parse_args(argv)


def _shown(path: Path, root: Path) -> str:
    """Return ``path`` as the card names it: relative to the repository or as ``$DATA_ROOT/NAME``, so that
    the card does not depend on where the build ran."""
    p = path.resolve()
    for base, tag in ((ROOT, ""), (root.resolve(), "$DATA_ROOT/")):
        if p.is_relative_to(base):
            return tag + str(p.relative_to(base))
    return str(path)


def _card_md(card: dict) -> str:
    """Return the card as Markdown: mapping, counts per source x category x split, drops and the floor."""
    splits = ["train", "val", "calibration", "test"]
    lines = [
        f"# Refusal-token training data `{card['name']}`",
        "",
        "Built by `scripts/build_token_data.py` (config in `card.json`). Rows carry their split in "
        "`token_split`, which `refusalkit tokens train` and `tokens calibrate` use as given.",
        "",
        f"{card['n_rows']} rows: " + ", ".join(f"{k} {v}" for k, v in card["n_by_split"].items()) + ".",
        "",
        "## Counts (source x category x expected x split)",
        "",
        "| source | category | expected | " + " | ".join(splits) + " |",
        "|---|---|---|" + "---:|" * len(splits),
    ]
    agg: dict[tuple, dict[str, int]] = {}
    for c in card["counts"]:
        agg.setdefault((c["source"], c["category"], c["expected"]), {})[c["split"]] = c["n"]
    for (s, cat, e), d in sorted(agg.items()):
        lines.append(f"| {s} | {cat} | {e} | " + " | ".join(str(d.get(sp, 0)) for sp in splits) + " |")
    lines += ["", "## Category mapping (source category -> token-scheme category)", ""]
    for s, m in card["category_map"].items():
        groups: dict[str, list[str]] = {}
        for k, v in m.items():
            groups.setdefault(str(v) if v else "(none: answer)", []).append(k)
        for v, ks in groups.items():
            lines.append(f"- `{s}`: {', '.join(ks)} -> **{v}**")
    lines += ["", "## Left out", "", "| source | reason | n |", "|---|---|---:|"]
    for d in card["dropped_summary"]:
        lines.append(f"| {d['source']} | {d['reason']} | {d['n']} |")
    lines += ["", "Every dropped row, with the prompt it matched, is in `card.json` (`dropped`).", ""]
    fl = card.get("calibration_floor")
    if fl:
        lines += [
            "## Calibration sampling floor for these split sizes",
            "",
            f"Targets {fl['targets']} in every category, {fl['sims']} simulations "
            "(`refusalkit.tokens.gapfloor.sampling_floor`). Prompts to refuse:",
            "",
            "| category | calibration n | test n | gap, exact thresholds | gap, calibrated | "
            "calibration n for <= 1.25x |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for cat, d in fl["per_category"].items():
            cg = d["calibrated_mean_abs_gap"]
            lines.append(
                f"| {cat} | {d['n_calibration']} | {d['n_test']} | {100 * d['oracle_mean_abs_gap']:.1f} | "
                f"{'-' if cg is None else f'{100 * cg:.1f}'} | {d['min_n_calibration_for_1.25x']} |"
            )
        lines += [
            "",
            f"Mean over the cells: {100 * fl['oracle_mean_abs_gap']:.2f} points with exact thresholds (the floor), "
            f"{100 * fl['calibrated_mean_abs_gap']:.2f} with thresholds from this calibration split "
            f"(ratio {fl['calibrated_over_oracle']:.3f}: the target mean |gap| <= 1.25 x floor is "
            f"{'reachable' if fl['mean_gap_target_reachable'] else 'NOT reachable'} in expectation). "
            f"Cells outside their 95% interval by chance: {100 * fl['oracle_outside_share']:.1f}% exact, "
            f"{100 * fl['calibrated_outside_share']:.1f}% calibrated (target <= 10%: "
            f"{'reachable' if fl['inside_target_reachable'] else 'NOT reachable'} in expectation).",
            "",
        ]
    lines += ["## Responses", "", card["responses"] + ".", "", "## Evaluation-only", ""]
    lines += [f"- {e}" for e in card["evaluation_only"]]
    lines += ["", "## Inputs", ""]
    lines += [f"- `{k}`: `{v['path']}` (sha256 `{v['sha256'][:16]}...`)" for k, v in card["inputs"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Build the mixture; return the exit code (2 on bad input, with one line on stderr)."""
    args = _args(argv)
    from refusalkit.data.io import write_json_atomic, write_jsonl_atomic, write_text_atomic
    from refusalkit.data.registry import data_root
    from refusalkit.errors import RefusalkitError
    from refusalkit.tokens.mixture import (
        MixtureConfig,
        build_mixture,
        floor_report,
        make_card,
        read_source,
    )
    from refusalkit.tokens.overlap import minilm_embedder

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        for opt, v in (("--harmless-train", args.harmless_train), ("--harmless-val", args.harmless_val),
                       ("--harmless-heldout", args.harmless_heldout), ("--floor-sims", args.floor_sims)):  # fmt: skip
            if v < 0 or (opt == "--floor-sims" and v == 0):
                raise RefusalkitError(
                    f"option {opt}: must be {'positive' if opt == '--floor-sims' else '>= 0'}, got {v}"
                )
        if not args.cal_per_test > 0:
            raise RefusalkitError(f"option --cal-per-test: must be > 0, got {args.cal_per_test}")
        if not 0 < args.threshold <= 1:
            raise RefusalkitError(f"option --threshold: must be in (0, 1], got {args.threshold}")
        if args.out.exists() and not args.out.is_dir():
            raise RefusalkitError(f"option --out: {args.out} exists and is not a folder")
        root = args.data_root or data_root()
        inputs = {
            "coconot": root / "coconot_prompts.jsonl",
            "harmful_instructions": root / "harmful_instructions.jsonl",
            "harmless_instructions": root / "harmless_instructions.jsonl",
            "lookalikes": args.lookalikes,
        }
        evaluation = {"xstest": root / "xstest_prompts.jsonl", "jailbreakbench": root / "jbb_harmful_behaviors.jsonl"}
        sources = {name: read_source(p, name) for name, p in inputs.items()}
        from refusalkit.data.io import read_records, require_str

        reference = {
            name: [require_str(r, "prompt", file=str(p)) for r in read_records(p)] for name, p in evaluation.items()
        }
        cfg = MixtureConfig(
            seed=args.seed,
            cal_per_test=args.cal_per_test,
            harmless_train=args.harmless_train,
            harmless_val=args.harmless_val,
            harmless_heldout=args.harmless_heldout,
            threshold=args.threshold,
            minilm=not args.no_minilm,
        )
        embed = minilm_embedder() if cfg.minilm else None
        rows, dropped = build_mixture(sources, reference, cfg, embed=embed, log=log)
        floor = floor_report(rows, sims=args.floor_sims)
        card = make_card(
            args.out.name,
            rows,
            dropped,
            cfg,
            {**inputs, **{f"{k} (evaluation-only)": v for k, v in evaluation.items()}},
            floor=floor,
            display=lambda p: _shown(p, root),
        )
    except RefusalkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "data.jsonl"
    write_jsonl_atomic(data, (r.to_record() for r in rows))
    from refusalkit.tokens.mixture import file_sha256

    card["output"] = {"path": "data.jsonl", "sha256": file_sha256(data)}
    write_json_atomic(args.out / "card.json", card)
    write_text_atomic(args.out / "card.md", _card_md(card))
    la = [d for d in dropped if d.source == "lookalikes" and d.reason.startswith("near-duplicate of")]
    log(
        f"wrote {len(rows)} rows to {data} ({', '.join(f'{k} {v}' for k, v in card['n_by_split'].items())}); "
        f"dropped {len(dropped)} ({len(la)} look-alikes as near-duplicates of evaluation prompts); card in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
