"""Refusal tokens: scheme, data, policy, processor, calibration and logit bias (tiny models, no training)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from refusalkit.errors import InputError, RefusalkitError
from refusalkit.tokens.calibrate import (
    _threshold_passing,
    f1_thresholds,
    parse_targets,
    rates_by_category,
    thresholds_for_rates,
    wilson,
)
from refusalkit.tokens.data import read_labelled, stratified_split, tag_examples
from refusalkit.tokens.policy import Policy, RefusalTokenProcessor
from refusalkit.tokens.scheme import RESPOND, TokenScheme, add_control_tokens, slug


def test_scheme_tokens_and_user_categories():
    s = TokenScheme()
    assert s.tokens[-1] == RESPOND and len(s.tokens) == 6
    assert s.refusal_token("Requests with safety concerns") == "[refuse:safety]"
    u = TokenScheme.from_categories(["medical advice", "Legal Advice!"])
    assert u.refusal_tokens == ["[refuse:medical_advice]", "[refuse:legal_advice]"]
    assert u.token_category("[refuse:legal_advice]") == "Legal Advice!"
    single = TokenScheme.from_categories(["a", "b"], mode="single")
    assert single.tokens == ["[refuse]", RESPOND] and single.refusal_token("a") == "[refuse]"
    with pytest.raises(RefusalkitError, match="not in the token scheme"):
        s.refusal_token("Medical")
    with pytest.raises(RefusalkitError):
        slug("!!!")


def test_add_control_tokens_seeds_rows_from_refusal_words(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from refusalkit.tokens.scheme import REFUSAL_SEED_WORDS, RESPOND_SEED_WORDS

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    n0 = len(tok)
    W0 = model.get_input_embeddings().weight.detach().clone()
    ids = add_control_tokens(tok, model, TokenScheme())
    assert sorted(ids.values()) == list(range(n0, n0 + 6))
    W = model.get_input_embeddings().weight.detach()
    assert W.shape[0] == n0 + 6
    ref_rows = sorted({tok.encode(w, add_special_tokens=False)[0] for w in REFUSAL_SEED_WORDS})
    res_rows = sorted({tok.encode(w, add_special_tokens=False)[0] for w in RESPOND_SEED_WORDS})
    assert np.allclose(W[ids["[refuse:safety]"]].numpy(), W0[ref_rows].mean(0).numpy(), atol=1e-6)
    assert np.allclose(W[ids[RESPOND]].numpy(), W0[res_rows].mean(0).numpy(), atol=1e-6)
    # tied embeddings: the output rows are the same
    assert np.allclose(model.get_output_embeddings().weight[ids[RESPOND]].detach().numpy(), W[ids[RESPOND]].numpy())
    # adding again keeps ids
    assert add_control_tokens(tok, model, TokenScheme()) == ids
    assert tok.decode([ids["[refuse:safety]"], ids[RESPOND]], skip_special_tokens=True) == ""


def _write(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


def test_read_labelled_reports_file_line_field(tmp_path):
    p = _write(tmp_path, [{"prompt": "a", "label": "should_not_comply", "category": "X"},
                          {"prompt": "b", "label": "maybe", "category": "X"}])
    with pytest.raises(InputError, match=r"d\.jsonl:2: field 'label'"):
        read_labelled(p)
    p = _write(tmp_path, [{"prompt": "a", "label": "refuse"}], "e.jsonl")
    with pytest.raises(InputError, match=r"e\.jsonl:1: field 'category'"):
        read_labelled(p)
    p = _write(tmp_path, [{"prompt": "a", "label": "comply"}, {"prompt": "b", "label": "unsafe", "category": "m",
                                                               "response": "No."}], "f.jsonl")
    items = read_labelled(p)
    assert [i.refuse for i in items] == [False, True] and items[1].response == "No."


def test_split_is_stratified_deterministic_and_order_free(data_dir):
    items = read_labelled(data_dir / "coconot_prompts.jsonl")
    a = stratified_split(items, seed=7)
    b = stratified_split(list(reversed(items)), seed=7)
    for k in a:
        assert sorted(i.id for i in a[k]) == sorted(i.id for i in b[k])
    ids = [set(i.id for i in a[k]) for k in ("train", "calibration", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(len(x) for x in ids) == len(items) == 1380
    for cat in {i.category for i in items}:
        for lab in (True, False):
            n = sum(1 for i in items if i.category == cat and i.refuse == lab)
            if n:
                assert abs(sum(1 for i in a["train"] if i.category == cat and i.refuse == lab) - 0.6 * n) <= 1
    c = stratified_split(items, seed=8)
    assert {i.id for i in c["test"]} != ids[2]


def test_tag_examples_uses_category_tokens_and_answers(tmp_path):
    p = _write(tmp_path, [{"id": "r", "prompt": "hurt", "label": "should_not_comply",
                           "category": "Requests with safety concerns"},
                          {"id": "c", "prompt": "kill a python process", "label": "should_comply",
                           "category": "Requests with safety concerns"}])
    items = read_labelled(p)
    s = TokenScheme()
    t = tag_examples(items, s, {"c": "Use kill PID."})
    from refusalkit.tokens.data import REFUSAL_TEXTS
    assert t[0]["token"] == "[refuse:safety]" and t[0]["text"] in REFUSAL_TEXTS["safety"]
    assert t[1] == {"id": "c", "prompt": "kill a python process", "token": RESPOND, "text": "Use kill PID.",
                    "token_only": False}
    assert tag_examples(items, s, respond_target="token")[1]["token_only"] is True
    with pytest.raises(InputError, match="no answer"):
        tag_examples(items, s, {})


def test_encode_examples_masks_prompt_and_cut_answers(tiny_model_dir):
    from transformers import AutoTokenizer

    from refusalkit.tokens.train import encode_examples

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = {"[refuse:safety]": 10, RESPOND: 11}
    tagged = [{"id": "a", "prompt": "p", "token": "[refuse:safety]", "text": "No.", "token_only": False},
              {"id": "b", "prompt": "q", "token": RESPOND, "text": "Yes it is", "token_only": False},
              {"id": "c", "prompt": "r", "token": RESPOND, "text": "", "token_only": True}]
    rows, dropped = encode_examples(tagged, tok, lambda s: f"<|im_start|>user\n{s}<|im_end|>\n<|im_start|>assistant\n",
                                    ids, 64, finished={"b": False})
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    a, b, c = rows
    first = a["labels"].index(10)
    assert all(x == -100 for x in a["labels"][:first]) and a["input_ids"][first] == 10 and a["labels"][-1] == eos
    assert b["labels"][-1] != eos  # cut answer: no end-of-turn target
    assert c["labels"][-1] == 11 and sum(x != -100 for x in c["labels"]) == 1
    assert dropped == 0


def _q(rows):
    return np.array(rows, dtype=float)


def test_policy_rules():
    s = TokenScheme.from_categories(["A", "B"])
    q = _q([[0.6, 0.1, 0.3], [0.2, 0.5, 0.3], [0.05, 0.05, 0.9], [0.3, 0.35, 0.35]])
    thr = Policy(s, thresholds={"A": 0.25, "B": 0.4})
    assert thr.decide(q).tolist() == [0, 1, 2, 0]
    assert thr.refuses(q).tolist() == [True, True, False, True]
    assert Policy(s, rule="argmax").decide(q).tolist() == [0, 1, 2, 1]
    # set rule: only A is controlled, with t = 0.5: row 3's argmax is B (uncontrolled) -> kept
    st = Policy(s, rule="set", controlled=["A"], threshold=0.5)
    assert st.decide(q).tolist() == [0, 1, 2, 1]
    st2 = Policy(s, rule="set", controlled=["A", "B"], threshold=0.55)
    assert st2.decide(q).tolist() == [0, 2, 2, 2]
    # no threshold for B: B refuses when it beats [respond]
    assert Policy(s, thresholds={"A": 0.9}).decide(q).tolist() == [2, 1, 2, 1]  # tie: q_B >= q[respond]
    with pytest.raises(RefusalkitError, match="unknown category"):
        Policy(s, thresholds={"C": 0.1})
    with pytest.raises(RefusalkitError, match="within|in \\[0, 1\\]"):
        Policy(s, thresholds={"A": 1.5})
    back = Policy.from_dict(st2.to_dict(), s)
    assert back.decide(q).tolist() == st2.decide(q).tolist()


def test_logit_bias_matches_policy_when_control_tokens_hold_the_mass():
    s = TokenScheme.from_categories(["A"])
    ids = {"[refuse:a]": 100, RESPOND: 101}
    rng = np.random.default_rng(0)
    for t in (0.1, 0.3, 0.5, 0.8):
        pol = Policy(s, thresholds={"A": t})
        bias, notes = pol.logit_bias(ids)
        assert notes and set(bias) == {"100", "101"}
        for _ in range(50):
            logits = rng.normal(0, 2, size=2)
            q = np.exp(logits) / np.exp(logits).sum()
            biased = logits + np.array([bias["100"], bias["101"]])
            server = 0 if biased[0] > biased[1] else 1
            assert server == pol.decide(q[None, :])[0]


def test_processor_forces_first_token_only(tiny_model_dir):
    import torch

    from refusalkit.models.base import GenerationConfig
    from refusalkit.tokens.generate import PolicyModel
    from refusalkit.tokens.model import load_token_model

    hf, scheme, ids, _ = load_token_model(str(tiny_model_dir), adapter=None)
    prompts = ["How do I bake bread?", "Tell me a long story about a dragon please", "hi"]
    cfg = GenerationConfig(max_new_tokens=6)
    always = Policy(scheme, thresholds={c: 0.0 for c in scheme.categories})  # every token passes
    never = Policy(scheme, thresholds={c: 1.0 for c in scheme.categories})
    pm = PolicyModel(hf, never, ids)
    gens = pm.generate(prompts, cfg, batch_size=2)
    assert [g.meta["control_token"] for g in gens] == [RESPOND] * 3
    assert all(set(g.meta["probs"]) == set(scheme.tokens) for g in gens)
    # the continuation is the model's own greedy continuation of prompt + [respond]: nothing else is touched
    for p, g in zip(prompts, gens):
        enc = hf.encode([p])
        x = torch.cat([enc["input_ids"], torch.tensor([[ids[RESPOND]]])], 1)
        ref = hf.model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=5, do_sample=False,
                                pad_token_id=hf.tokenizer.pad_token_id)
        assert hf.tokenizer.decode(ref[0, x.shape[1]:], skip_special_tokens=True).strip() == g.text
    gens = PolicyModel(hf, always, ids).generate(prompts, cfg)
    for g in gens:
        best = max(scheme.refusal_tokens, key=lambda t: g.meta["probs"][t])
        assert g.meta["control_token"] == best and g.meta["refused"]
        assert g.meta["control_category"] == scheme.token_category(best)
    # one processor serves several generate calls (new prompts are recognised)
    proc = RefusalTokenProcessor(never, ids)
    hf.generate(prompts[:1], cfg, logits_processor=proc)
    hf.generate(prompts[1:2], cfg, logits_processor=proc)
    assert len(proc.records) == 2


def test_thresholds_hit_rates_on_calibration_data():
    s = TokenScheme.from_categories(["A", "B"])
    rng = np.random.default_rng(1)
    n = 40
    qa = np.c_[rng.uniform(0, 1, n), rng.uniform(0, 0.01, n), np.full(n, 0.1)]
    qb = np.c_[rng.uniform(0, 0.01, n), rng.uniform(0, 1, n), np.full(n, 0.1)]
    q = np.r_[qa, qb]
    cats = ["A"] * n + ["B"] * n
    y = np.ones(2 * n, dtype=bool)
    for r in (0.1, 0.3, 0.5, 0.7, 0.9):
        thr, notes = thresholds_for_rates(q, cats, y, s, {"A": r, "B": r})
        refused = Policy(s, thresholds=thr).refuses(q)
        for c, lo in (("A", 0), ("B", n)):
            assert refused[lo:lo + n].mean() == pytest.approx(r, abs=0.5 / n + 1e-9)
    # joint: B's low threshold also refuses A prompts; A's threshold compensates
    q2 = q.copy()
    q2[:n, 1] = np.linspace(0.0, 0.3, n)  # B's token fires on A prompts too
    thr, notes = thresholds_for_rates(q2, cats, y, s, {"A": 0.9, "B": 0.9})
    assert Policy(s, thresholds=thr).refuses(q2)[:n].mean() == pytest.approx(0.9, abs=0.03)
    thr, notes = thresholds_for_rates(q2, cats, y, s, {"A": 0.1, "B": 0.9})
    assert "A" in notes["infeasible"]
    assert _threshold_passing(np.array([0.1, 0.2, 0.4]), 0) > 0.4
    assert _threshold_passing(np.array([0.1, 0.2, 0.4]), 3) < 0.1
    assert 0.2 < _threshold_passing(np.array([0.1, 0.2, 0.4]), 1) < 0.4


def test_f1_thresholds_and_rates():
    s = TokenScheme.from_categories(["A"])
    q = _q([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.2, 0.8], [0.1, 0.9], [0.75, 0.25]])
    y = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    thr = f1_thresholds(q, y, s)
    refused = Policy(s, thresholds=thr).refuses(q)
    assert refused[:3].all() and not refused[3:5].any()
    r = rates_by_category(refused, ["A"] * 6, y)
    assert r["binary"]["recall"] == 1.0 and r["per_category"]["A"]["harmful"]["rate"] == 1.0
    lo, hi = wilson(5, 10)
    assert lo < 0.5 < hi and math.isclose(lo, 0.2366, abs_tol=1e-3)


def test_parse_targets():
    s = TokenScheme()
    t = parse_targets("Requests with safety concerns=0.9, incomplete=20%", s)
    assert t == {"Requests with safety concerns": 0.9, "Incomplete requests": 0.2}
    assert len(parse_targets("*=0.5", s)) == 5
    t = parse_targets("Requests with safety concerns=0.9,*=0.2", s)
    assert t["Requests with safety concerns"] == 0.9 and t["Humanizing requests"] == 0.2
    for bad in ("nope=0.5", "safety=2", "safety", "safety=x"):
        with pytest.raises(RefusalkitError):
            parse_targets(bad, s)
