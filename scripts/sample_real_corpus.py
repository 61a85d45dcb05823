"""Draw the stratified sample of real model responses that refusalkit's detector corpus is labelled from.

Sources (../shared/data, see its README): jbb_artifacts (JailbreakBench artifacts: Vicuna-13B, Llama-2-7B-chat,
GPT-3.5, GPT-4 under five attacks), derta_model_responses (Llama-3-8B/70B vanilla/DPO/DeRTa/instruct, GPT-3.5,
GPT-4 under five attacks) and chatgpt_refusals (ChatGPT on Quora and political questions; the Reuter & Schulze test
split is left out so `detect evaluate --rs-test` stays a held-out figure). Rows whose prompt is an XSTest prompt are
dropped: XSTest stays evaluation-only.

Writes data/detect/real/sample.jsonl (one row per response: id, source, source_model, family, prompt, goal,
response, plus the source's own automatic label where it has one, kept for agreement checks only).

    python scripts/sample_real_corpus.py --data-dir ../shared/data -o data/detect/real/sample.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import defaultdict
from pathlib import Path

SEED = 20261207
QUOTAS = {"jbb_artifacts": 1000, "derta_model_responses": 1500, "chatgpt_refusals": 500}


def family(source: str, model: str) -> str:
    """Return the model family used for leave-one-source-model-out splits."""
    m = model.lower()
    if source == "chatgpt_refusals":
        return "gpt-3.5-2023"
    for pat, name in (("vicuna", "vicuna-13b"), ("llama-2", "llama-2-7b-chat"), ("gpt-4", "gpt-4"),
                      ("gpt-3.5", "gpt-3.5"), ("70b", "llama-3-70b"), ("8b", "llama-3-8b")):
        if pat in m:
            return name
    raise ValueError(f"no family for {source} {model}")


def derta_variant(model: str) -> str:
    """Return the training variant of a DeRTa-release model name (vanilla, dpo, derta, recaug, instruct, api)."""
    m = model.lower()
    for v in ("derta", "dpo", "vanill", "recaug"):
        if v in m:
            return v
    return "instruct" if "instruct" in m else "api"


def stratified(rows: list[dict], key, n: int, rng: random.Random) -> list[dict]:
    """Return n rows spread as evenly as possible over the strata given by key (round-robin over shuffled strata)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    for g in groups.values():
        rng.shuffle(g)
    order = sorted(groups)
    out: list[dict] = []
    while len(out) < n and any(groups.values()):
        for k in order:
            if groups[k] and len(out) < n:
                out.append(groups[k].pop())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("-o", "--output", default="data/detect/real/sample.jsonl")
    a = ap.parse_args()
    d = Path(a.data_dir)
    read = lambda f: [json.loads(line) for line in open(d / f, encoding="utf-8")]  # noqa: E731
    norm = lambda s: re.sub(r"\s+", " ", s.strip().lower())  # noqa: E731
    xstest = {norm(r["prompt"]) for r in read("xstest_prompts.jsonl")}
    rng = random.Random(SEED)
    out: list[dict] = []

    jbb = [r for r in read("jbb_artifacts.jsonl") if r.get("response") and norm(r["prompt"]) not in xstest]
    for r in stratified(jbb, lambda r: f"{r['source_model']}|{r['label']}|{r['attack_method']}",
                        QUOTAS["jbb_artifacts"], rng):
        out.append({"id": r["id"], "source": "jbb_artifacts", "source_model": r["source_model"],
                    "family": family("jbb", r["source_model"]), "attack": r["attack_method"], "prompt": r["prompt"],
                    "goal": r.get("goal"), "response": r["response"], "auto_label": r["label"]})

    derta = [r for r in read("derta_model_responses.jsonl") if r.get("response") and norm(r["prompt"]) not in xstest]
    for r in stratified(derta, lambda r: f"{family('derta', r['source_model'])}|{derta_variant(r['source_model'])}|"
                        f"{r['category']}", QUOTAS["derta_model_responses"], rng):
        out.append({"id": r["id"], "source": "derta_model_responses", "source_model": r["source_model"],
                    "family": family("derta", r["source_model"]), "attack": r["category"], "prompt": r["prompt"],
                    "goal": None, "response": r["response"], "auto_label": None})

    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from refusalkit.detect.datasets import rs_split
    _, _, rs_test = rs_split(d / "chatgpt_refusals.jsonl")
    test_ids = {r["id"] for r in rs_test}
    cg = [r for r in read("chatgpt_refusals.jsonl")
          if r.get("response") and r["id"] not in test_ids and r["label"] != "excluded"
          and norm(r["prompt"]) not in xstest]
    for r in stratified(cg, lambda r: f"{r['category']}|{r.get('fine_label')}", QUOTAS["chatgpt_refusals"], rng):
        out.append({"id": r["id"], "source": "chatgpt_refusals", "source_model": r["source_model"],
                    "family": family("chatgpt_refusals", r["source_model"]), "attack": r["category"],
                    "prompt": r["prompt"], "goal": None, "response": r["response"], "auto_label": r["label"]})

    rng.shuffle(out)
    p = Path(a.output)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in out:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(p)
    print(f"wrote {len(out)} rows to {p}")


if __name__ == "__main__":
    main()
