"""Experiment: a linear probe on the bundled SmolLM2-135M's hidden states as a response classifier, on the
Reuter & Schulze protocol (70/15/15, ``random_state=0``).

Each (prompt, response) pair is chat-templated (user turn, then the response as the assistant turn, first
``--max-response-tokens`` tokens) and run through the frozen model once; the features are the hidden
states averaged over the response tokens, one layer at a time. A standardised logistic regression is fit on
the training split for each layer, ``C`` is chosen on the validation split, and test accuracy is printed.
It is a measurement, not a shipped detector (about 4 responses/s to featurise on 2 cores).

    python bench/detect_probe.py [--max-response-tokens 160] [--layers 4 8 12 16 20 24 28 30] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "chatgpt_refusals.jsonl"))
    ap.add_argument("--max-response-tokens", type=int, default=160)
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 8, 12, 16, 20, 24, 28, 30])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from refusalkit.detect.datasets import rs_split
    from refusalkit.models.hf import HFModel
    from refusalkit.models.spec import load_model

    m: HFModel = load_model("default")
    tok, model = m.tokenizer, m.model
    tr, va, te = rs_split(args.data)
    splits = {"train": tr, "validation": va, "test": te}
    feats: dict[str, dict[int, list[np.ndarray]]] = {k: {layer: [] for layer in args.layers} for k in splits}
    t0 = time.perf_counter()
    for name, rows in splits.items():
        for r in rows:
            pid = tok(m.render(r["prompt"][:1000]), add_special_tokens=False)["input_ids"][-128:]
            rid = tok(r["response"], add_special_tokens=False)["input_ids"][: args.max_response_tokens] or [tok.eos_token_id]
            with torch.no_grad():
                hs = model(torch.tensor([pid + rid]), output_hidden_states=True).hidden_states
            for layer in args.layers:
                feats[name][layer].append(hs[layer][0, len(pid):].mean(0).float().numpy())
    secs = time.perf_counter() - t0
    y = {k: np.array([int(r["label"] != "full_compliance") for r in rows]) for k, rows in splits.items()}
    print(f"featurised {len(tr) + len(va) + len(te)} responses in {secs:.0f}s; RS protocol train {len(tr)}, "
          f"validation {len(va)}, test {len(te)}")
    out = []
    for layer in args.layers:
        X = {k: np.stack(v[layer]) for k, v in feats.items()}
        sc = StandardScaler().fit(X["train"])
        best = None
        for C in (0.001, 0.01, 0.1):
            lr = LogisticRegression(C=C, max_iter=3000).fit(sc.transform(X["train"]), y["train"])
            va_acc = float((lr.predict(sc.transform(X["validation"])) == y["validation"]).mean())
            te_acc = float((lr.predict(sc.transform(X["test"])) == y["test"]).mean())
            if best is None or va_acc > best["validation"]:
                best = {"layer": layer, "C": C, "validation": va_acc, "test": te_acc}
        out.append(best)
        print(f"layer {layer:2d}: C {best['C']:<6} validation {best['validation']:.4f}  test {best['test']:.4f}")
    print("(paper: BERT 96.48%, TF-IDF LR 90.62%)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "seconds": round(secs, 1), "layers": out}, indent=1))


if __name__ == "__main__":
    main()
