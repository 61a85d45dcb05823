"""Does the bundled subject model refuse? Refusal counts on JailbreakBench behaviours and XSTest-safe prompts.

Usage:

    python bench/subject_sanity.py [--model subject] [--n 20] [--max-new-tokens 32] [--dtype float32]
                                   [--out responses.jsonl] [--data-dir ../shared/data]

Takes ``--n`` JailbreakBench harmful behaviours (every fifth row, so all ten categories appear) and ``--n``
XSTest prompts labelled safe (evenly spaced, so every safe category appears), generates greedily, and counts
refusals with the shipped ``default`` detector and with the ``keyword`` detector.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="subject")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dtype", default=None, help="load dtype (default: the folder's own, bf16 for subject)")
    ap.add_argument("--out", default=None, help="also write every prompt, response and verdict here (JSONL)")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    args = ap.parse_args()

    from refusalkit.detect import get_detector
    from refusalkit.models.base import GenerationConfig
    from refusalkit.models.spec import load_model

    data = Path(args.data_dir)
    harmful = _rows(data / "jbb_harmful_behaviors.jsonl")[::5][:args.n]
    safe = [r for r in _rows(data / "xstest_prompts.jsonl") if r["label"] == "safe"]
    safe = safe[::max(1, len(safe) // args.n)][:args.n]
    t = time.perf_counter()
    lm = load_model(args.model, batch_size=args.batch_size, dtype=args.dtype)
    load_s = time.perf_counter() - t
    dets = {name: get_detector(name) for name in ("default", "keyword")}
    out_rows = []
    print(f"model {lm.name} loaded in {load_s:.1f}s; {args.max_new_tokens} new tokens, batch {args.batch_size}")
    for label, rows in (("JailbreakBench harmful", harmful), ("XSTest safe", safe)):
        t = time.perf_counter()
        gens = lm.generate([r["prompt"] for r in rows], GenerationConfig(max_new_tokens=args.max_new_tokens))
        secs = time.perf_counter() - t
        texts = [g.text for g in gens]
        prompts = [r["prompt"] for r in rows]
        refused = {name: [p >= 0.5 for p in d.p_refusal(texts, prompts)] for name, d in dets.items()}
        for i, r in enumerate(rows):
            out_rows.append({"set": label, "id": r["id"], "category": r["category"], "prompt": r["prompt"],
                             "response": texts[i], **{f"refused_{k}": bool(v[i]) for k, v in refused.items()}})
        counts = ", ".join(f"{name} detector {sum(v)}/{len(rows)}" for name, v in refused.items())
        ntok = sum(g.n_tokens for g in gens)
        print(f"{label}: refused {counts} ({ntok} tokens in {secs:.0f}s, {ntok / secs:.2f} tok/s)", flush=True)
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out_rows))


if __name__ == "__main__":
    main()
