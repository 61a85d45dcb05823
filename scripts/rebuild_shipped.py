"""Rebuild the detectors and prompt classifiers shipped in ``src/refusalkit/resources/detect/``.

    .venv/bin/python scripts/rebuild_shipped.py [--data-dir ../shared/data] [--only default --only tsetlin ...]
                                                [--out DIR] [--no-loso]
    .venv/bin/python scripts/rebuild_shipped.py --write-manifests   # after editing a shipped folder by hand

Trains ``default`` (linear), ``embedding`` and ``tsetlin`` on refusalkit's synthetic responses, the responses
written for refusalkit in other models' styles (``data/detect/written/``, in this repository only) and the
training split of the Reuter & Schulze set; measures them on that set's test split (the paper's protocol)
and by holding out one source at a time; and writes each with its ``card.json`` and manifest. The prompt
classifiers ``prompt_chatgpt`` and ``prompt_chatgpt_lm`` are trained on every labelled Reuter & Schulze
prompt. This is a maintainer's recipe, kept out of the installed package: it needs the repository's
``data/`` folder and writes into the source tree.

Every shipped artifact folder carries a ``manifest.json`` that loading checks; ``--write-manifests``
rewrites them all (e.g. after adding a calibration profile or README to the shipped refusal-token adapter).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WRITTEN = REPO / "data" / "detect" / "written"
SHIPPED_ROOT = REPO / "src" / "refusalkit" / "resources" / "detect"
ADAPTER = REPO / "src" / "refusalkit" / "resources" / "tokens" / "smollm2-135m-coconot"
SHIPPED = ("default", "tsetlin", "embedding", "prompt_chatgpt", "prompt_chatgpt_lm")
SYNTH_SEED, SYNTH_PER_TOPIC = 0, 25
COMMAND = "python scripts/rebuild_shipped.py --data-dir ../shared/data"


def training_rows(data_dir: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """Return (train rows, RS validation rows, RS test rows) for the shipped detectors."""
    from refusalkit.detect.datasets import RS_FILE, read_labelled_dir, rs_split
    from refusalkit.detect.synth import write_synthetic

    tr, va, te = rs_split(data_dir / RS_FILE)
    synth = write_synthetic(seed=SYNTH_SEED, n_per_topic=SYNTH_PER_TOPIC)
    return synth + read_labelled_dir(WRITTEN, "written") + tr, va, te


def leave_one_source_out(kind: str, rows: list[dict]) -> dict[str, float]:
    """Return binary accuracy on each source when the detector is trained on all the other sources."""
    from refusalkit.detect.registry import make_detector
    from refusalkit.detect.training import evaluate_rows, fit_rows

    out = {}
    for s in sorted({r["source"] for r in rows}):
        held = [r for r in rows if r["source"] == s]
        rest = [r for r in rows if r["source"] != s]
        if len({r["label"] for r in rest}) < 2:
            continue
        out[s] = evaluate_rows(fit_rows(make_detector(kind), rest), held)["binary"]["accuracy"]
    return out


def detector_card(name: str, kind: str, rows: list[dict], test: dict, val: dict, extra: dict) -> dict[str, Any]:
    """Return the model card of a shipped detector: its training data, RS test figures and ``extra``."""
    b = test["binary"]
    written = [r for r in rows if r["source"].startswith("written:")]
    return {
        "name": name, "kind": kind, "trained_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": COMMAND,
        "training_data": {
            "n": len(rows), "labels": dict(Counter(r["label"] for r in rows)),
            "sources": dict(Counter(r["source"] for r in rows)),
            "description": ("refusalkit's synthetic responses (refusalkit.detect.synth, seed "
                            f"{SYNTH_SEED}, {SYNTH_PER_TOPIC} per topic; 6 model voices + de/fr/it/tr), {len(written)} "
                            "responses written for refusalkit in other models' styles (data/detect/written in the "
                            f"repository, {len({r['source'] for r in written})} writers) and the 70% "
                            "training split of Reuter & Schulze 2023 chatgpt_refusals (MIT; drop excluded, "
                            "train_test_split random_state 0), fine labels mapped into the taxonomy "
                            "(disclaimed/contradicted -> partial_refusal, redirected/counseling -> redirection)")},
        "metrics": {"protocol": f"Reuter & Schulze test split (15%, n={test['n']}), their binary convention",
                    "accuracy": b["accuracy"], "macro_f1": b["macro_f1"], "sensitivity": b["sensitivity"],
                    "specificity": b["specificity"], "n_pos": b["n_pos"], "n_neg": b["n_neg"],
                    "validation_accuracy": val["binary"]["accuracy"]},
        "sensitivity": b["sensitivity"], "specificity": b["specificity"], "n_pos": b["n_pos"], "n_neg": b["n_neg"],
        **extra, "platform": platform.platform(),
    }


def build_predictor(data_path: Path, out: Path, features: str, name: str) -> dict[str, Any]:
    """Train a shipped ChatGPT prompt classifier on every labelled Reuter & Schulze prompt, write it with its
    card (including the paper-protocol figures) to ``out``, and return the card."""
    from refusalkit.detect.datasets import read_labelled
    from refusalkit.predict.bootstrap import rs_prompt_figures
    from refusalkit.predict.prompt_model import PromptClassifier

    rows = read_labelled(data_path, "reuter_schulze")
    prompts = [r["prompt"] for r in rows]
    y = [int(r["label"] != "full_compliance") for r in rows]
    clf = PromptClassifier(features=features, target_model="gpt-3.5-turbo (ChatGPT, 2023)").fit(prompts, y)
    card = {"name": name, "target_model": clf.target_model, "features": features, "command": COMMAND,
            "training_data": "all 1,706 labelled prompts of Reuter & Schulze 2023 chatgpt_refusals (MIT); "
                             "label = ChatGPT's response was not 'complied'",
            "n": len(prompts), "n_refused": int(sum(y)), "paper_protocol": rs_prompt_figures(data_path, features),
            "top_ngrams": clf.top_ngrams(15)}
    clf.save(out, card)
    return card


def build_shipped(data_dir: Path, out_root: Path, names: tuple[str, ...], loso: bool = True) -> dict[str, dict]:
    """Train the shipped models ``names`` into ``out_root/<name>`` with their model cards; return the cards."""
    from refusalkit.detect.keyword import KeywordDetector
    from refusalkit.detect.registry import make_detector
    from refusalkit.detect.training import evaluate_rows, fit_rows

    rows, va, te = training_rows(data_dir)
    kw_test = evaluate_rows(KeywordDetector(), te)
    cards = {}
    for name in names:
        if name.startswith("prompt_chatgpt"):
            feats = "tfidf+embedding+lm" if name.endswith("_lm") else "tfidf+embedding"
            c = build_predictor(data_dir / "chatgpt_refusals.jsonl", out_root / name, feats, name)
            cards[name] = c
            print(f"{name}: Quora 5-fold CV accuracy {c['paper_protocol']['cv5_' + c['features']]:.4f}", flush=True)
            continue
        kind = "linear" if name == "default" else name
        t0 = time.time()
        det = fit_rows(make_detector(kind, name=name), rows)
        secs = time.time() - t0
        test, val = evaluate_rows(det, te), evaluate_rows(det, va)
        extra: dict[str, Any] = {"train_seconds": round(secs, 1),
                                 "keyword_baseline_test_accuracy": kw_test["binary"]["accuracy"],
                                 "taxonomy_test": {"accuracy": test["taxonomy"]["accuracy"],
                                                   "macro_f1": test["taxonomy"]["macro_f1"]}}
        if loso and name == "default":
            extra["leave_one_source_out_accuracy"] = leave_one_source_out(kind, rows)
        card = detector_card(name, kind, rows, test, val, extra)
        det.save(out_root / name, card)
        cards[name] = card
        print(f"{name}: RS test accuracy {test['binary']['accuracy']:.4f} (keyword {kw_test['binary']['accuracy']:.4f}), "
              f"trained in {secs:.0f}s -> {out_root / name}", flush=True)
    return cards


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and rebuild the chosen shipped models; return the exit code."""
    from refusalkit.data.registry import data_root
    from refusalkit.errors import RefusalkitError

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="folder with chatgpt_refusals.jsonl (default: $REFUSALKIT_DATA or ../shared/data)")
    ap.add_argument("--out", type=Path, default=SHIPPED_ROOT, help="folder to write the models into")
    ap.add_argument("--only", action="append", choices=SHIPPED, help="rebuild only these (repeatable)")
    ap.add_argument("--no-loso", action="store_true", help="skip the leave-one-source-out figures (20+ fits)")
    ap.add_argument("--write-manifests", action="store_true",
                    help="only rewrite manifest.json of every shipped artifact folder (detectors and the adapter)")
    a = ap.parse_args(argv)
    if a.write_manifests:
        from refusalkit.artifacts import write_manifest

        for folder in [*(SHIPPED_ROOT / n for n in SHIPPED), ADAPTER]:
            print(write_manifest(folder))
        return 0
    try:
        build_shipped(a.data_dir or data_root(), a.out, tuple(a.only or SHIPPED), loso=not a.no_loso)
    except RefusalkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
