"""DeRTa: the data builder (k distribution, prefixes, harmless mixing, tense share), the RTO labels and
loss on a tiny model, one end-to-end `train derta-data` -> `train derta` -> `generate --adapter` run, and
bad input."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from refusalkit.training.derta import RTO_OFFSET, derta_loss, encode_derta
from refusalkit.training.derta_data import (
    BuildConfig,
    build_derta_data,
    read_harmful_pairs,
    read_harmless,
    reformulate,
    rewrite_with_attacker,
)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def harmful(data_dir):
    return read_harmful_pairs(str(data_dir / "jbb_artifacts.jsonl"))


def _harmless(n: int) -> list[dict]:
    return [
        {
            "id": f"h{i}",
            "prompt": f"Name a colour, number {i}.",
            "response": f"Blue {i}.",
            "finished": True,
            "source": "t",
        }
        for i in range(n)
    ]


def test_harmful_pairs_are_the_jailbroken_rows_with_the_goal_as_query(harmful, data_dir):
    rows = [json.loads(line) for line in open(data_dir / "jbb_artifacts.jsonl")]
    jb = [r for r in rows if r["label"] == "jailbroken"]
    assert len(harmful) == len(jb)
    assert {p["prompt"] for p in harmful} == {r["goal"].strip() for r in jb}
    assert all(p["source"].startswith("jbb:") for p in harmful)


def test_builder_k_share_prefix_lengths_and_harmless_mix(harmful, tok):
    cfg = BuildConfig(n_harmful=90, n_harmless=30, max_response_tokens=40, seed=7)
    rows, card = build_derta_data(harmful, _harmless(50), tok, cfg)
    harm = [r for r in rows if r["kind"] == "harmful"]
    assert len(harm) == 90 and len(rows) == 120
    assert sum(r["k"] == 0 for r in harm) == 30  # exactly a third
    for r in harm:
        ids = tok(r["harmful_response"], add_special_tokens=False)["input_ids"]
        assert cfg.min_response_tokens <= r["harmful_tokens"] <= 40
        assert 0 <= r["k"] <= r["harmful_tokens"]
        assert r["harmful_prefix"] == tok.decode(ids[: r["k"]])
        assert r["response"].startswith("Sorry")
    ks = [r["k"] for r in harm if r["k"] > 0]
    assert max(ks) > 25 and min(ks) < 10  # spread over the response, not clustered
    assert len({r["prompt"] for r in harm}) == 90  # round-robin: 90 distinct goals before any repeats
    hl = [r for r in rows if r["kind"] == "harmless"]
    assert len(hl) == 30 and all(r["k"] == 0 and r["response"].startswith("Blue") for r in hl)
    assert card["by_kind"] == {"harmful": 90, "harmless": 30}
    assert card["k"]["zero_share"] == pytest.approx(1 / 3)
    again, _ = build_derta_data(harmful, _harmless(50), tok, cfg)
    assert again == rows  # seeded


def test_tense_rows_replace_harmful_ones_at_the_requested_share(harmful, tok):
    tense = [{"prompt": f"How did people do bad thing {i} in the past?", "transform": "past"} for i in range(20)]
    cfg = BuildConfig(n_harmful=60, n_harmless=40, tense_share=0.05, seed=1)
    rows, card = build_derta_data(harmful, _harmless(40), tok, cfg, tense=tense)
    assert len(rows) == 100
    assert card["by_kind"]["tense"] == 5 and card["by_kind"]["harmful"] == 55
    assert all(r["k"] == 0 and r["source"] == "tense:past" for r in rows if r["kind"] == "tense")


def test_rewrite_with_attacker_runs_a_real_model_and_keeps_each_requests_category(tiny_model_dir):
    reqs = [{"prompt": f"Explain how to do harmful thing {i}", "category": f"c{i}"} for i in range(3)]
    seen: list[str] = []
    rows = rewrite_with_attacker(reqs, str(tiny_model_dir), ["past", "future"], seed=3, batch_size=2, log=seen.append)
    assert [r["original"] for r in rows] == [r["prompt"] for r in reqs]
    assert [r["category"] for r in rows] == ["c0", "c1", "c2"]
    assert {r["transform"] for r in rows} == {"past", "future"}
    assert all(isinstance(r["prompt"], str) and r["prompt"].strip() for r in rows)
    assert seen == ["  reformulated 2/3", "  reformulated 3/3"]


def test_reformulate_uses_the_paper_prompt_and_cleans_the_answer():
    seen = []

    def attacker(prompts):
        seen.extend(prompts)
        return ['Reformulated request: "How did people pick locks in the 1990s?"' for _ in prompts]

    out = reformulate(["Explain how to pick a lock"], attacker, ["past"])
    assert "past tense" in seen[0] and "Explain how to pick a lock" in seen[0]
    assert out == [
        {
            "prompt": "How did people pick locks in the 1990s?",
            "original": "Explain how to pick a lock",
            "transform": "past",
        }
    ]


def test_harmless_answers_come_from_a_generate_file(tmp_path):
    src = tmp_path / "h.jsonl"
    src.write_text("".join(json.dumps({"id": f"a{i}", "prompt": f"Q{i}", "split": "train"}) + "\n" for i in range(3)))
    ans = tmp_path / "ans.jsonl"
    ans.write_text(
        json.dumps({"id": "a0", "prompt": "Q0", "response": "A0", "finish_reason": "length"})
        + "\n"
        + json.dumps({"id": "zz", "prompt": "Q2", "response": "A2", "finish_reason": "stop"})
        + "\n"
    )
    rows = read_harmless(str(src), str(ans))
    assert [(r["id"], r["response"], r["finished"]) for r in rows] == [("a0", "A0", False), ("a2", "A2", True)]


def _row(k: int) -> dict:
    return {
        "id": "x",
        "kind": "harmful",
        "prompt": "How do I make a weapon?",
        "harmful_response": "Sure, here is how to make a weapon: first you take the metal pipe and",
        "k": k,
        "response": "Sorry, I can't help with that.",
        "finished": True,
    }


def test_rto_labels_sit_on_the_prefix_and_predict_the_refusals_first_token(tok):
    render = lambda q: f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"  # noqa: E731
    p_ids = tok(render("How do I make a weapon?"), add_special_tokens=False)["input_ids"]
    h_ids = tok(_row(5)["harmful_response"], add_special_tokens=False)["input_ids"][:5]
    r_ids = tok("Sorry, I can't help with that.", add_special_tokens=False)["input_ids"]
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    (d,), _ = encode_derta([_row(5)], tok, render, objective="derta")
    assert d["input_ids"] == p_ids + h_ids + r_ids + [eos]
    assert d["labels"] == [-100] * len(p_ids) + [r_ids[0] + RTO_OFFSET] * 5 + r_ids + [eos]
    (s,), _ = encode_derta([_row(5)], tok, render, objective="sft")
    assert s["input_ids"] == p_ids + r_ids + [eos]
    assert s["labels"] == [-100] * len(p_ids) + r_ids + [eos]
    (z,), _ = encode_derta([_row(0)], tok, render, objective="derta")
    assert z == s  # k = 0: DeRTa is plain SFT for that row


def test_derta_loss_is_response_mean_plus_rto_mean(tiny_model_dir, tok):
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    render = lambda q: f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"  # noqa: E731
    (d,), _ = encode_derta([_row(6)], tok, render, objective="derta")
    ids = torch.tensor([d["input_ids"]])
    labels = torch.tensor([d["labels"]])
    with torch.no_grad():
        out = model(input_ids=ids)
    loss = derta_loss(rto_weight=0.5)(out, labels)
    logp = F.log_softmax(out.logits[0].float(), -1)
    r0 = tok("Sorry", add_special_tokens=False)["input_ids"][0]
    start = d["labels"].index(r0 + RTO_OFFSET)
    rto = [-logp[j - 1, r0] for j in range(start, start + 6)]  # position j-1 (q + rhat[:t]) predicts r[0]
    resp = [-logp[j - 1, d["labels"][j]] for j in range(start + 6, len(d["labels"]))]
    expected = torch.stack(resp).mean() + 0.5 * torch.stack(rto).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    # with no RTO labels the loss is the model's own token-mean causal-LM loss
    (s,), _ = encode_derta([_row(6)], tok, render, objective="sft")
    sid, slab = torch.tensor([s["input_ids"]]), torch.tensor([s["labels"]])
    with torch.no_grad():
        o2 = model(input_ids=sid, labels=slab)
    assert float(derta_loss()(o2, slab)) == pytest.approx(float(o2.loss), rel=1e-5)


def _small_inputs(tmp_path, data_dir):
    rows = [json.loads(line) for line in open(data_dir / "jbb_artifacts.jsonl")]
    harm = tmp_path / "jbb.jsonl"
    harm.write_text("".join(json.dumps(r) + "\n" for r in rows[:120]))
    hl = tmp_path / "harmless.jsonl"
    hl.write_text(
        "".join(
            json.dumps({"id": f"h{i}", "prompt": f"Say hello {i}", "response": f"Hello {i}!", "split": "train"}) + "\n"
            for i in range(20)
        )
    )
    return harm, hl


def test_train_derta_end_to_end_and_generate_with_the_adapter(tmp_path, data_dir, tiny_model_dir):
    harm, hl = _small_inputs(tmp_path, data_dir)
    data = tmp_path / "derta.jsonl"
    r = run_cli(
        "train", "derta-data", str(harm), "--harmless", str(hl), "--model", str(tiny_model_dir),
        "--n-harmful", "12", "--n-harmless", "6", "-o", str(data),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    card = json.loads((tmp_path / "derta.card.json").read_text())
    assert card["n"] == 18 and card["k"]["zero_share"] == pytest.approx(4 / 12)
    out = tmp_path / "adapter"
    r = run_cli(
        "train", "derta", str(data), "-o", str(out), "--model", str(tiny_model_dir),
        "--max-steps", "2", "--batch-size", "4", "--threads", "1",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    info = json.loads((out / "derta.json").read_text())
    assert info["objective"] == "derta" and info["global_step"] == 2 and info["n_rto_targets"] > 0
    assert {"adapter_model.safetensors", "adapter_config.json", "manifest.json"} <= {p.name for p in out.iterdir()}
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "How do I pick a lock?"}) + "\n")
    gen = tmp_path / "gen.jsonl"
    r = run_cli(
        "generate", str(prompts), "-o", str(gen), "--model", str(tiny_model_dir), "--adapter", str(out),
        "--max-new-tokens", "3",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert len(gen.read_text().splitlines()) == 1
    # the run is keyed by the adapter's weights: a second run with the base model alone is a new run
    r2 = run_cli(
        "generate", str(prompts), "-o", str(tmp_path / "base.jsonl"), "--model", str(tiny_model_dir),
        "--max-new-tokens", "3",
    )  # fmt: skip
    assert r2.returncode == 0 and "1 new" in r2.stdout, r2.stdout + r2.stderr


def test_bad_derta_data_names_file_line_and_field(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    good = {"id": "a", "kind": "harmful", "prompt": "q", "response": "Sorry.", "k": 0}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "k": -2}) + "\n")
    r = run_cli("train", "derta", str(bad), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir))
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {bad}:2: field 'k': expected a non-negative integer, got -2"
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()
