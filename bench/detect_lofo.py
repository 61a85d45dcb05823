"""Leave-one-family-out on the real-output corpus: train on six model families of
``data/detect/real/corpus.jsonl`` plus the training mix of the shipped default (scripts/rebuild_shipped.py:
synthetic + written + Reuter & Schulze training split), test on the seventh; every family in turn.

Usage:

    python bench/detect_lofo.py [--variant linear --variant linear+prompt --variant tsetlin ...]
                                [--json OUT.json] [--write-candidate DIR --candidate-variant linear]

Variants: ``linear`` (the shipped default's recipe, response features only), ``linear+prompt`` (the same plus
TF-IDF n-grams of the prompt, a cheap prompt-harm signal), ``linear-noRS`` (the mix without the Reuter &
Schulze rows, whose fine labels count "as an AI I have no opinion, but ..." answers as refusals),
``linear-realonly`` (the linear recipe on the six corpus families alone, no mix), ``tsetlin``.
The shipped ``keyword`` and ``default`` detectors are scored on the same held-out rows for comparison.
Binary accuracy: anything but ``full_compliance`` is a refusal (XSTest's convention).

Leakage rules: corpus rows that also sit in the Reuter & Schulze training split are dropped from the mix
(the corpus label wins); when ``gpt-3.5-2023`` (ChatGPT 2023, the Reuter & Schulze model) is held out, the
whole Reuter & Schulze split leaves the mix too, so no ChatGPT-2023 response is trained on. The shipped
detectors saw 397 of that family's 500 rows (with the paper's labels), so their figure there is not held out.

``--write-candidate DIR`` trains the chosen variant on every corpus row plus the mix and saves it (a
detector folder ``refusalkit detect evaluate -d DIR`` loads).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import sparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from refusalkit.detect.linear import LinearDetector  # noqa: E402
from refusalkit.detect.text import clip  # noqa: E402


class PromptLinear(LinearDetector):
    """The linear default plus a TF-IDF block of the prompt's n-grams (weighted by ``prompt_weight``).
    Experimental: it lives here until it earns a place in the package."""

    def __init__(self, prompt_weight: float = 0.5, **kw):
        super().__init__(**kw)
        self.prompt_weight = prompt_weight

    def fit(self, X, y, prompts=None, sample_weight=None):
        from refusalkit.detect.linear import _vectorizer

        self.pvec_ = _vectorizer(min_df=2, ngram_range=(1, 2), max_features=20000)
        self.pvec_.fit([clip(p or "") for p in (prompts or [""] * len(X))])
        return super().fit(X, y, prompts, sample_weight)

    def _features(self, X, prompts):
        F = super()._features(X, prompts)
        P = self.pvec_.transform([clip(p or "") for p in (prompts or [""] * len(X))]) * self.prompt_weight
        return sparse.hstack([F, P], format="csr")


def make(variant: str):
    """Return an untrained detector of ``variant``."""
    from refusalkit.detect.registry import make_detector

    if variant in ("linear", "linear-noRS", "linear-realonly"):
        return make_detector("linear", name="default")
    if variant == "linear+prompt":
        return PromptLinear(name="default+prompt")
    if variant == "tsetlin":
        return make_detector("tsetlin")
    raise SystemExit(f"unknown variant {variant!r}")


def mix_rows(data_dir: Path, corpus: list[dict]) -> list[dict]:
    """Return the shipped default's training mix less the rows the corpus relabelled."""
    from rebuild_shipped import training_rows

    rows = training_rows(data_dir)[0]
    seen = {r["response"] for r in corpus}
    return [r for r in rows if r["response"] not in seen]


def binary(rows: list[dict], pred: list[str]) -> dict:
    """Return n, binary accuracy, false positives and false negatives (refusal = positive)."""
    g = np.array([r["label"] != "full_compliance" for r in rows])
    p = np.array([x != "full_compliance" for x in pred])
    return {"n": len(rows), "accuracy": float((g == p).mean()), "fp": int((p & ~g).sum()), "fn": int((g & ~p).sum())}


def train_rows(variant: str, mix: list[dict], corpus: list[dict], held: str | None) -> list[dict]:
    """Return the training rows of ``variant`` with family ``held`` left out."""
    m = mix
    if variant == "linear-realonly":
        m = []
    elif variant == "linear-noRS" or held == "gpt-3.5-2023":
        m = [r for r in mix if r["source"] != "reuter_schulze"]
    return m + [r for r in corpus if r["family"] != held]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=REPO / "data" / "detect" / "real" / "corpus.jsonl")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--variant", action="append", default=None)
    ap.add_argument("--family", action="append", default=None, help="hold out only these families")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--write-candidate", type=Path, default=None)
    ap.add_argument("--candidate-variant", default="linear")
    a = ap.parse_args()
    from refusalkit.data.registry import data_root
    from refusalkit.detect import get_detector
    from refusalkit.detect.datasets import read_real_corpus
    from refusalkit.detect.training import fit_rows

    corpus = read_real_corpus(a.corpus)
    mix = mix_rows(a.data_dir or data_root(), corpus)
    print(
        f"corpus {len(corpus)} rows; mix {len(mix)} rows {dict(Counter(r['source'].split(':')[0] for r in mix))}",
        flush=True,
    )
    if a.write_candidate:
        t0 = time.time()
        rows = train_rows(a.candidate_variant, mix, corpus, None)
        det = fit_rows(make(a.candidate_variant), rows)
        card = {
            "name": "default",
            "kind": "linear",
            "variant": a.candidate_variant,
            "trained_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "command": f"python bench/detect_lofo.py --write-candidate DIR --candidate-variant {a.candidate_variant}",
            "training_data": {
                "n": len(rows),
                "labels": dict(Counter(r["label"] for r in rows)),
                "sources": dict(Counter(r["source"] for r in rows)),
                "description": "the shipped default's mix (scripts/rebuild_shipped.py; Reuter & "
                "Schulze training rows that the corpus relabelled dropped) plus every labelled row "
                "of data/detect/real/corpus.jsonl (docs/labelling.md, excluded rows skipped)",
            },
            "train_seconds": round(time.time() - t0, 1),
        }
        det.save(a.write_candidate, card)
        print(f"wrote {a.write_candidate} ({len(rows)} rows, {card['train_seconds']}s)", flush=True)
        return
    shipped = {n: get_detector(n) for n in ("keyword", "default")}
    variants = a.variant or ["linear", "linear+prompt"]
    families = a.family or sorted({r["family"] for r in corpus})
    out: dict[str, dict] = {}
    for fam in families:
        held = [r for r in corpus if r["family"] == fam]
        X, P = [r["response"] for r in held], [r["prompt"] for r in held]
        res = {n: binary(held, d.predict(X, P)) for n, d in shipped.items()}
        for v in variants:
            t0 = time.time()
            det = fit_rows(make(v), train_rows(v, mix, corpus, fam))
            res[v] = binary(held, det.predict(X, P))
            res[v]["seconds"] = round(time.time() - t0, 1)
        out[fam] = res
        print(
            f"{fam:<16} n={len(held):<4} "
            + "  ".join(f"{k} {m['accuracy']:.3f} (FP {m['fp']}, FN {m['fn']})" for k, m in res.items()),
            flush=True,
        )
    if a.json:
        tmp = a.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1))
        tmp.replace(a.json)


if __name__ == "__main__":
    main()
