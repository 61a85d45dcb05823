"""Agreement of refusal-token decisions read over an OpenAI-compatible API with local scoring (issue 18, item 6).

Local: the model with the adapter merged (``tokens.model.load_token_model``) scores each prompt's first
response position (``tokens.calibrate.score_prompts``). Remote: the same merged model is written to a
temporary folder (what ``refusalkit tokens merge`` writes) and served by ``refusalkit serve`` on a free
loopback port; each prompt is one chat request with ``max_tokens`` 1, ``logprobs`` and ``top_logprobs`` 20,
and ``tokens.remote`` reads the control tokens' probabilities and decides client-side. Each profile's
policy (``Policy.decide``) is applied to both; the script reports, per profile, the share of prompts with
the same control token (and the same refuse/answer outcome), decisions marked uncertain (a control token
not among the top 20), the largest probability difference, and the time of each path.

Prompts: a deterministic sample of CoCoNot (both labels, every category) and XSTest (safe and unsafe) from
the data root, half each.

    python bench/tokens_openai_agreement.py --n 200 --profiles argmax,balanced,strict,lenient --out agreement.json
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path

from serve_load import start_server  # bench/ is on sys.path when run as a script


def sample_prompts(data: Path, n: int, seed: int = 0) -> list[dict]:
    """Return ``n`` prompts: half CoCoNot, half XSTest, sampled with ``seed`` (ids kept)."""
    rng = random.Random(seed)
    out = []
    for name, k in (("coconot_prompts.jsonl", n - n // 2), ("xstest_prompts.jsonl", n // 2)):
        rows = [json.loads(line) for line in (data / name).read_text(encoding="utf-8").splitlines() if line.strip()]
        out += rng.sample(rows, min(k, len(rows)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--adapter", default="bundled")
    ap.add_argument("--n", type=int, default=200, help="prompts (half CoCoNot, half XSTest)")
    ap.add_argument("--profiles", default="argmax,balanced,strict,lenient", help="shipped names or profile files")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--data", type=Path, default=None, help="data root (default: refusalkit's)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    if args.n < 2:
        sys.exit("error: --n must be at least 2")

    import numpy as np

    from refusalkit.data.registry import data_root
    from refusalkit.models.openai_compat import OpenAICompatModel
    from refusalkit.tokens.calibrate import score_prompts
    from refusalkit.tokens.model import load_token_model
    from refusalkit.tokens.policy import load_profile, policy_from_profile
    from refusalkit.tokens.remote import decide_remote, score_remote

    rows = sample_prompts(args.data or data_root(), args.n)
    prompts = [r["prompt"] for r in rows]
    profiles = {Path(p).stem: load_profile(p) for p in args.profiles.split(",") if p.strip()}

    t0 = time.perf_counter()
    hf, scheme, ids, _ = load_token_model(args.model, args.adapter)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    q_local = score_prompts(hf, prompts, ids, scheme)
    local_s = time.perf_counter() - t0

    key = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="rk-merged-") as tmp, tempfile.TemporaryFile() as log:
        merged = Path(tmp) / "merged"
        hf.model.save_pretrained(merged)  # what `refusalkit tokens merge` writes
        hf.tokenizer.save_pretrained(merged)
        del hf
        proc, url = start_server(str(merged), key, 300, [], log)
        try:
            client = OpenAICompatModel("merged", url, api_key=key, concurrency=args.concurrency, timeout=300)
            t0 = time.perf_counter()
            scores = score_remote(client, prompts, scheme, concurrency=args.concurrency)
            remote_s = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    q_remote = np.stack([s.q for s in scores])
    listed = np.array([not s.missing for s in scores])
    diff = np.abs(q_local - q_remote)
    result: dict = {
        "model": args.model,
        "adapter": args.adapter,
        "n": len(prompts),
        "sources": {
            "coconot": sum(r["id"].startswith("coconot") for r in rows),
            "xstest": sum(r["id"].startswith("xstest") for r in rows),
        },
        "all_control_tokens_in_top20": int(listed.sum()),
        "max_abs_prob_diff": float(diff[listed].max()) if listed.any() else None,
        "seconds": {"load": round(load_s, 1), "local_scoring": round(local_s, 1), "remote_scoring": round(remote_s, 1)},
        "profiles": {},
    }
    for name, prof in profiles.items():
        pol = policy_from_profile(prof)
        local = pol.decide(q_local)
        remote, certain = decide_remote(pol, scores)
        n_ref = len(scheme.tokens) - 1
        same = local == remote
        result["profiles"][name] = {
            "same_control_token": float(same.mean()),
            "same_outcome": float(((local < n_ref) == (remote < n_ref)).mean()),
            "disagreements": [rows[i]["id"] for i in np.flatnonzero(~same)],
            "uncertain": int((~certain).sum()),
            "refused_local": int((local < n_ref).sum()),
        }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
