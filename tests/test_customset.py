"""Custom over-refusal sets: policy validation, parsing LLM lists, MiniLM near-duplicate removal, the
audit score, and the whole workflow end to end on the bundled model through the CLI."""

import json
from importlib import resources

import numpy as np
import pytest

from conftest import run_cli
from refusalkit.customsets.pipeline import load_minilm, near_dedup, p_allowed, parse_candidates
from refusalkit.customsets.policy import load_policy
from refusalkit.errors import InputError

EXAMPLE = resources.files("refusalkit") / "resources" / "customsets" / "example_policy.yaml"


def test_example_policy_loads():
    with resources.as_file(EXAMPLE) as p:
        pol = load_policy(p)
    assert pol.name == "homework-helper"
    assert [c.name for c in pol.categories] == ["chemistry safety", "hacking"]
    assert pol.categories[1].allowed[0].startswith("how to kill")


@pytest.mark.parametrize("name, text, where", [
    ("p.yaml", "categories:\n  - name: a\n    allowed: [x]\n", "field 'categories[0].disallowed': missing"),
    ("p.yaml", "categories:\n  - name: a\n    allowed: [x]\n    disallowed: x\n  - name: a\n    allowed: [y]\n"
               "    disallowed: [z]\n", "field 'categories[1].name': duplicate category name 'a'"),
    ("p.json", '{"categories": [{"name": "a", "allowed": [1], "disallowed": ["b"]}]}',
     "field 'categories[0].allowed': expected a list of non-empty strings"),
    ("p.toml", 'name = "t"\n[[categories]]\nname = "a"\nallowed = ["x"]\ndisallowed = ["y"]\ncolour = 3\n',
     "field 'categories[0]': unknown key(s) colour"),
    ("p.yaml", "categories: [\n  - oops\n", "malformed YAML"),
    ("p.json", '{"categories": []}', "field 'categories': missing or empty"),
    ("p.txt", "x", "unknown policy format"),
])
def test_bad_policy_names_file_and_field(tmp_path, name, text, where):
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(InputError) as ei:
        load_policy(f)
    assert str(f) in str(ei.value) and where in str(ei.value)


def test_parse_candidates_strips_lists():
    text = ("Here are some requests:\n1. How do I kill a stuck process?\n- \"Why is bleach dangerous with ammonia?\"\n"
            "2) short\nRequest: What does phishing look like?\n1. How do I kill a stuck process?\n")
    assert parse_candidates(text) == ["How do I kill a stuck process?", "Why is bleach dangerous with ammonia?",
                                      "What does phishing look like?"]


def test_near_dedup_with_minilm():
    embed = load_minilm()
    texts = ["How do I kill a frozen process on Linux?", "How can I kill a frozen process in Linux?",
             "What are the warning signs of a phishing email?", "Why do fireworks have different colours?"]
    keep = near_dedup(texts, embed, 0.85)
    assert keep == [0, 2, 3]
    assert near_dedup(texts, embed, 1.0) == [0, 1, 2, 3]
    v = embed(texts[:1])
    assert v.shape == (1, 384) and np.isclose(np.linalg.norm(v), 1.0, atol=1e-4)


@pytest.mark.slow
def test_audit_scores_are_probabilities_on_bundled_model(bundled_dir):
    from refusalkit.models.hf import HFModel
    m = HFModel(bundled_dir)
    qs = ["Is the sky blue? Answer Yes or No.", "Is 2+2=5? Answer Yes or No."]
    s = p_allowed(m, qs)
    assert all(0.0 < x < 1.0 for x in s)
    # the score is P(Yes) / (P(Yes) + P(No)) over the first answer token's spellings, from one forward pass
    import torch
    lp = m.next_token_logprobs(qs)
    tok = m.tokenizer
    yes = sorted({tok.encode(w, add_special_tokens=False)[0] for w in ("Yes", " Yes", "yes")})
    no = sorted({tok.encode(w, add_special_tokens=False)[0] for w in ("No", " No", "no")})
    py, pn = lp[:, yes].exp().sum(1), lp[:, no].exp().sum(1)
    assert torch.allclose(torch.tensor(s), py / (py + pn), atol=1e-4)


@pytest.mark.slow
def test_customset_end_to_end_on_bundled_model(bundled_dir, tmp_path):
    out = tmp_path / "set.jsonl"
    with resources.as_file(EXAMPLE) as pol:
        r = run_cli("customset", str(pol), "-o", str(out), "--model", "default", "--rounds", "2",
                    "--k-per-round", "5", "--max-new-tokens", "120", "--per-category", "3", "--no-balance")
    stats = json.loads((tmp_path / "set.jsonl.stats.json").read_text())
    per = stats["stats"]
    for cat in ("chemistry safety", "hacking"):
        st = per[cat]["benign"]
        assert st["lines_written"] >= st["parsed"] >= st["audit_kept"] >= st["dedup_kept"] >= st["final"]
    assert sum(per[c]["benign"]["parsed"] for c in per) > 0, "the bundled model wrote no usable request"
    if r.returncode == 0:
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert rows and all(x["expected"] in ("comply", "refuse") for x in rows)
        assert all(x["category"] in per for x in rows)
        assert {x["label"] for x in rows} <= {"safe", "unsafe"}
        counts = {}
        for x in rows:
            counts[(x["category"], x["label"])] = counts.get((x["category"], x["label"]), 0) + 1
        assert max(counts.values()) <= 3
    else:  # a 135M model may fail every audit; then the run must say so and leave no output file
        assert r.returncode == 2 and "no prompt survived" in r.stderr
        assert not out.exists()


def test_customset_balances_categories(tiny_model_dir, tmp_path):
    # the balancing rule on a real (tiny) model run: categories end with equal counts per label
    from refusalkit.customsets.pipeline import build_custom_set
    from refusalkit.models.hf import HFModel
    with resources.as_file(EXAMPLE) as p:
        pol = load_policy(p)
    res = build_custom_set(pol, HFModel(tiny_model_dir), rounds=1, k_per_round=3, max_new_tokens=30,
                           dedup_threshold=1.0, audit_threshold=0.0)  # threshold 0: every benign passes
    finals = [res.stats[c.name]["benign"]["final"] for c in pol.categories]
    assert len(set(finals)) == 1
    assert finals[0] == min([10] + [res.stats[c.name]["benign"]["dedup_kept"] for c in pol.categories])
