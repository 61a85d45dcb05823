"""Latent analysis on tiny models built from configs: layer discovery, capture positions, direction maths,
hooks that leave the model untouched, exact ablation, orthogonalised weights and artifact checks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from refusalkit.errors import RefusalkitError

V = 300


def _tiny(arch: str, seed: int = 0):
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )
    torch.manual_seed(seed)
    common = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "llama":
        m = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True))
    elif arch == "qwen2":
        m = Qwen2ForCausalLM(Qwen2Config(**common))
    elif arch == "gemma2":
        m = Gemma2ForCausalLM(Gemma2Config(**common, head_dim=8))
    else:
        m = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=3, n_head=4, bos_token_id=1, eos_token_id=2))
    return m.eval()


ARCHS = ["llama", "qwen2", "gpt2", "gemma2"]


@pytest.mark.parametrize("arch,path", [("llama", "model.layers"), ("qwen2", "model.layers"),
                                       ("gpt2", "transformer.h"), ("gemma2", "model.layers")])
def test_layer_stack_found_without_names(arch, path):
    from refusalkit.latent.layers import layer_stack, residual_writers
    m = _tiny(arch)
    st = layer_stack(m)
    assert st.path == path and len(st) == 3
    writers = residual_writers(m, st)
    assert len(writers) == 3 and all(len(w) == 2 for w in writers)


def _layer_inputs(m, ids):
    """Record each decoder layer's residual input (reference values, taken with plain pre-hooks)."""
    from refusalkit.latent.layers import layer_input, layer_stack
    got = []
    hs = [li.register_forward_pre_hook(lambda _m, a, kw: got.append(layer_input(a, kw).detach().clone()),
                                      with_kwargs=True) for li in layer_stack(m).layers]
    try:
        with torch.no_grad():
            m(input_ids=ids)
    finally:
        for h in hs:
            h.remove()
    return got


@pytest.mark.parametrize("arch", ARCHS)
def test_ablation_zeroes_projection_and_hooks_are_removed(arch):
    from refusalkit.latent.intervene import ablate
    m = _tiny(arch)
    m(input_ids=torch.tensor([[3, 4]]))  # warm
    r = torch.randn(32)
    ids = torch.randint(3, V, (2, 7))
    with torch.no_grad():
        before = m(input_ids=ids).logits
    n_hooks = sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules())
    with ablate(m, r):
        inputs = _layer_inputs(m, ids)
        with torch.no_grad():
            during = m(input_ids=ids).logits
    ru = r / r.norm()
    assert max(float((h @ ru).abs().max()) for h in inputs) < 1e-5
    assert not torch.allclose(before, during)
    assert sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules()) == n_hooks
    with torch.no_grad():
        assert torch.equal(m(input_ids=ids).logits, before)


def test_hooks_removed_after_an_exception():
    from refusalkit.latent.intervene import ablate, add
    m = _tiny("llama")
    with pytest.raises(ValueError):
        with ablate(m, torch.randn(32)), add(m, torch.randn(32), 1, 2.0):
            raise ValueError("boom")
    assert all(not x._forward_hooks and not x._forward_pre_hooks for x in m.modules())


def test_add_shifts_one_layer_input_by_coef_times_vector():
    from refusalkit.latent.intervene import add
    m = _tiny("qwen2")
    ids = torch.randint(3, V, (1, 5))
    v = torch.randn(32)
    ref = _layer_inputs(m, ids)
    with add(m, v, 1, 0.5):
        got = _layer_inputs(m, ids)
    assert torch.allclose(got[0], ref[0])
    assert torch.allclose(got[1], ref[1] + 0.5 * v, atol=1e-5)
    with pytest.raises(RefusalkitError, match="out of range"):
        with add(m, v, 7):
            pass


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_orthogonalised_weights_equal_hooked_ablation(arch, tmp_path):
    from transformers import AutoModelForCausalLM

    from refusalkit.latent.intervene import ablate, orthogonalize
    m = _tiny(arch)
    r = torch.randn(32)
    ids = torch.randint(3, V, (2, 6))
    with torch.no_grad(), ablate(m, r):
        hooked = m(input_ids=ids).logits
    m2 = orthogonalize(copy.deepcopy(m), r)
    with torch.no_grad():
        assert torch.allclose(m2(input_ids=ids).logits, hooked, atol=1e-4)
    m2.save_pretrained(tmp_path / "abl")
    m3 = AutoModelForCausalLM.from_pretrained(tmp_path / "abl").eval()
    with torch.no_grad():
        assert torch.allclose(m3(input_ids=ids).logits, hooked, atol=1e-4)
    with torch.no_grad():  # the original is untouched (the tied head was untied in the copy only)
        assert not torch.allclose(m(input_ids=ids).logits, hooked)


def test_orthogonalise_refuses_post_norm_architectures():
    from refusalkit.latent.intervene import orthogonalize
    with pytest.raises(RefusalkitError, match="not exact"):
        orthogonalize(_tiny("gemma2"), torch.randn(32))


def test_diff_in_means_and_cosine():
    from refusalkit.latent.directions import cosine_per_layer, diff_in_means
    a = torch.tensor([[[1.0, 2.0]], [[0.0, 1.0]]])
    b = torch.tensor([[[0.0, 2.0]], [[0.0, -1.0]]])
    d = diff_in_means(a, b)
    assert torch.equal(d, torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]]))
    assert cosine_per_layer(d[:, 0], torch.tensor([[2.0, 0.0], [1.0, 0.0]])) == pytest.approx([1.0, 0.0])


def test_candidate_grid_skips_last_layers_and_thins():
    from refusalkit.latent.directions import candidate_grid
    names = ("inst", "post-2", "post-1")
    g = candidate_grid(10, names)
    assert {li for li, _ in g} == set(range(1, 8)) and {p for _, p in g} == {"post-2", "post-1"}
    g = candidate_grid(10, names, max_candidates=4)
    assert len(g) == 4 and {p for _, p in g} == {"post-2", "post-1"}


def test_guard_fit_separates_and_calibrates():
    from refusalkit.latent.guard import auroc, fit_guard, layer_scores
    g = torch.Generator().manual_seed(0)
    mu_h, mu_s = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
    harmful = mu_h + 0.3 * torch.randn(20, 4, 16, generator=g)
    harmless = mu_s + 0.3 * torch.randn(30, 4, 16, generator=g)
    s = layer_scores(torch.cat([harmful, harmless]), mu_h, mu_s)
    y = np.array([1] * 20 + [0] * 30)
    guard = fit_guard(s, y)
    p = guard.p_harmful(s)
    assert guard.val_auroc_combined == 1.0 and auroc(p, y) == 1.0
    assert ((p >= 0) & (p <= 1)).all() and (p[:20] > 0.5).all() and (p[20:] < 0.5).all()


def test_guard_projection_puts_class_means_at_plus_minus_half_and_ignores_a_shared_offset():
    """The projection score is scale-free per layer (means at +-0.5) and, unlike the cosine score, does not
    shrink when every prompt shares a large common component (as residual streams do)."""
    from refusalkit.latent.guard import LatentGuard, auroc, layer_scores
    g = torch.Generator().manual_seed(1)
    mu_h, mu_s = torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g)
    s = layer_scores(torch.stack([mu_h, mu_s]), mu_h, mu_s, "projection")
    assert torch.allclose(s, torch.tensor([[0.5] * 3, [-0.5] * 3]), atol=1e-5)
    shared = 1000 * torch.randn(16, generator=g)
    x = torch.cat([mu_h + 0.5 * torch.randn(40, 3, 16, generator=g), mu_s + 0.5 * torch.randn(40, 3, 16, generator=g)])
    y = np.array([1] * 40 + [0] * 40)
    proj = layer_scores(x + shared, mu_h + shared, mu_s + shared, "projection")
    assert torch.allclose(proj, layer_scores(x, mu_h, mu_s, "projection"), atol=1e-2)
    cos = layer_scores(x + shared, mu_h + shared, mu_s + shared, "cosine")
    assert float(cos.abs().max()) < 1e-3 < float(proj.abs().max())  # the cosine score collapses towards 0
    assert auroc(proj.mean(1).numpy(), y) > 0.95
    # a card written before the method field existed keeps Zhao et al.'s cosine score
    assert LatentGuard.from_dict({"layers": [1], "a": 1.0, "b": 0.0}).method == "cosine"
    with pytest.raises(Exception, match="unknown guard method"):
        layer_scores(x, mu_h, mu_s, "dot")


def test_guard_chooses_the_position_that_separates_validation_best_and_reads_old_cards():
    from refusalkit.latent.guard import LatentGuard, auroc, fit_guard

    g = torch.Generator().manual_seed(2)
    y = np.array([1] * 30 + [0] * 30)
    sign = torch.tensor(y * 2 - 1, dtype=torch.float32).unsqueeze(1)
    weak = 0.2 * sign + torch.randn(60, 4, generator=g)  # inst: the classes overlap
    strong = sign + 0.3 * torch.randn(60, 4, generator=g)  # post-1: they separate
    strong[:, 0] = torch.randn(60, generator=g)  # ... except at layer 0, which min_layer skips anyway
    guard = fit_guard({"inst": weak, "post-1": strong}, y)
    assert set(guard.positions) == {"post-1"} and 0 not in guard.layers
    assert auroc(guard.p_harmful({"inst": weak, "post-1": strong}), y) > 0.95
    assert set(fit_guard({"inst": weak, "post-1": strong}, y, position="inst").positions) == {"inst"}
    with pytest.raises(Exception, match="no scores at position"):
        guard.score({"inst": weak})
    back = LatentGuard.from_dict(guard.to_dict())
    assert back.positions == guard.positions and back.layers == guard.layers and back.val_auroc == guard.val_auroc
    old = LatentGuard.from_dict({"layers": [1, 2], "a": 2.0, "b": 0.0, "val_auroc": {"1": 0.9}, "method": "projection"})
    assert old.positions == ["inst", "inst"] and old.val_auroc == {"inst": {1: 0.9}}
    assert np.allclose(old.score(weak), weak[:, [1, 2]].mean(1).numpy())


# --- on a tiny Llama with the bundled tokenizer and chat template ---------------------------------------------

@pytest.fixture(scope="module")
def tiny_hf(tiny_model_dir):
    from refusalkit.models.hf import HFModel
    return HFModel(tiny_model_dir, batch_size=4)


def test_positions_follow_the_chat_template(tiny_hf):
    from refusalkit.latent.capture import parse_positions, template_suffix_ids
    suffix = template_suffix_ids(tiny_hf)
    assert suffix and tiny_hf.tokenizer.decode(suffix).strip().endswith("assistant")
    pos = parse_positions("inst,post", len(suffix))
    assert pos.offsets[0] == -(len(suffix) + 1) and pos.names[0] == "inst" and pos.offsets[-1] == -1
    assert parse_positions("last,-1", len(suffix)).offsets == (-1,)
    for bad in ("7", "middle", ""):
        with pytest.raises(RefusalkitError):
            parse_positions(bad, len(suffix))


def test_capture_matches_hidden_states_and_is_padding_aware(tiny_hf):
    from refusalkit.latent.capture import capture, parse_positions, template_suffix_ids
    pos = parse_positions("inst,post", len(template_suffix_ids(tiny_hf)))
    prompts = ["Hi", "Write a much longer request about gardening in the spring, please, with detail."]
    acts = capture(tiny_hf, prompts, pos, batch_size=2)
    assert acts.shape == (2, 2, len(pos.offsets), 32)
    hs = tiny_hf.hidden_states(prompts[:1], positions=pos.offsets)  # [1, L+1, P, d]; hs[:, li] is layer l's input
    assert torch.allclose(acts[0], hs[0, :2], atol=1e-4)
    alone = capture(tiny_hf, prompts[:1], pos, batch_size=1)  # no padding
    assert torch.allclose(acts[0], alone[0], atol=1e-4)
    # the instruction's last token really is the instruction's
    enc = tiny_hf.encode(prompts[:1])
    inst_tok = enc["input_ids"][0, pos.offsets[0]].item()
    assert tiny_hf.tokenizer.decode([inst_tok]).strip() == "Hi"


def test_capture_all_positions_and_to_disk(tiny_hf, tmp_path):
    from refusalkit.latent.capture import capture_batches, capture_to_disk, load_shards, parse_positions
    prompts = ["Hi", "Tell me a story about a fox"]
    pos = parse_positions("all", 0)
    per = [t for batch in capture_batches(tiny_hf, prompts, pos, batch_size=2) for t in batch]
    n_tok = [len(tiny_hf.tokenizer(tiny_hf.render(p), add_special_tokens=False)["input_ids"]) for p in prompts]
    assert [t.shape for t in per] == [(2, n, 32) for n in n_tok]
    out = capture_to_disk(tiny_hf, prompts, pos, tmp_path / "acts", chunk=1, batch_size=2)
    back = list(load_shards(out))
    assert len(back) == 2 and all(torch.allclose(a, b) for a, b in zip(per, back))


def test_first_token_scores_and_kl(tiny_hf):
    from refusalkit.latent.directions import REFUSAL_OPENERS, first_token, first_token_ids, kl_div
    ids = first_token_ids(tiny_hf.tokenizer, REFUSAL_OPENERS)
    prompts = ["Hi", "How do I bake bread?"]
    base = first_token(tiny_hf, prompts, ids, keep_logprobs=True)
    same = first_token(tiny_hf, prompts, ids, keep_logprobs=True)
    assert kl_div(base.logprobs, same.logprobs) == pytest.approx(0.0, abs=1e-6)
    abl = first_token(tiny_hf, prompts, ids, {"op": "ablate", "direction": torch.randn(32)}, keep_logprobs=True)
    assert kl_div(base.logprobs, abl.logprobs) > 0
    assert ((base.p_refusal >= 0) & (base.p_refusal <= 1)).all()


def test_intervention_composes_with_a_logits_processor(tiny_hf):
    from transformers import LogitsProcessor

    from refusalkit.latent.intervene import InterventionModel
    from refusalkit.models.base import GenerationConfig

    forced = tiny_hf.tokenizer("Sorry", add_special_tokens=False)["input_ids"][0]

    class Force(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores[:] = -1e9
            scores[:, forced] = 0
            return scores

    n_hooks = sum(len(x._forward_hooks) for x in tiny_hf.model.modules())
    im = InterventionModel(tiny_hf, {"op": "ablate", "direction": torch.randn(32)})
    gens = im.generate(["Hi"], GenerationConfig(max_new_tokens=2), logits_processor=Force())
    assert gens[0].text.startswith("Sorry")
    assert sum(len(x._forward_hooks) for x in tiny_hf.model.modules()) == n_hooks


def test_artifact_roundtrip_and_model_mismatch(tiny_hf, tmp_path):
    from refusalkit.latent.artifact import load_artifact, save_artifact, weights_fingerprint
    card = {"model": {"id": "tiny", "fingerprint": weights_fingerprint(tiny_hf.model), "n_layers": 2}}
    save_artifact(tmp_path / "d", {"refusal_direction": torch.ones(32)}, card, extra_files={"a.png": b"x"})
    art = load_artifact(tmp_path / "d")
    assert torch.equal(art.tensor("refusal_direction"), torch.ones(32))
    art.check_model(tiny_hf.model)
    other = _tiny("llama", seed=1)
    with pytest.raises(RefusalkitError, match="extracted from model 'tiny'"):
        art.check_model(other, "other")
    (tmp_path / "d" / "directions.safetensors").write_bytes(b"broken")
    with pytest.raises(RefusalkitError, match="directions.safetensors"):
        load_artifact(tmp_path / "d")
    with pytest.raises(RefusalkitError, match="not a direction artifact"):
        load_artifact(tmp_path)


def test_fingerprint_is_dtype_independent_and_value_sensitive():
    from refusalkit.latent.artifact import weights_fingerprint
    m = _tiny("qwen2")
    fp = weights_fingerprint(m)
    half = copy.deepcopy(m).to(torch.bfloat16)
    assert weights_fingerprint(copy.deepcopy(half).to(torch.float32)) == weights_fingerprint(half)
    m_b = copy.deepcopy(m)
    with torch.no_grad():
        m_b.model.norm.weight[0] += 1.0
    assert weights_fingerprint(m_b) != fp
    assert weights_fingerprint(copy.deepcopy(m)) == fp


def test_export_never_replaces_a_folder_with_other_files(tmp_path):
    from refusalkit.latent.use import check_export_dest
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RefusalkitError, match="other files"):
        check_export_dest(tmp_path)
    assert check_export_dest(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text("{}")
    assert check_export_dest(tmp_path / "old") == tmp_path / "old"


def test_device_map_loads_through_accelerate_and_hooks_follow_the_layers_device(tiny_model_dir, monkeypatch):
    """The path a 7B+ model takes on a GPU machine (REFUSALKIT_DEVICE_MAP, default ``auto`` under CUDA), run here
    with ``auto`` on the CPU: accelerate dispatches the model, and capture and ablation work on the dispatched model."""
    from refusalkit.latent import capture as cap
    from refusalkit.latent.intervene import ablate
    from refusalkit.models.hf import HFModel, device_map

    monkeypatch.setenv("REFUSALKIT_DEVICE_MAP", "none")
    assert device_map() is None
    monkeypatch.setenv("REFUSALKIT_DEVICE_MAP", "auto")  # on a machine without a GPU accelerate puts it all on cpu
    assert device_map() == "auto"
    import transformers

    seen = {}
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    hf = HFModel(tiny_model_dir, batch_size=2)
    assert seen.get("device_map") == "auto"  # (on one device transformers 5 sets no hf_device_map to look at)
    pos = cap.parse_positions("inst,post", len(cap.template_suffix_ids(hf)))
    acts = cap.capture(hf, ["How do I bake bread?", "Name a colour"], pos, batch_size=2)
    r = acts[:, 1, -1].mean(0)
    with ablate(hf.model, r):
        after = cap.capture(hf, ["How do I bake bread?", "Name a colour"], pos, batch_size=2)
    unit = r / r.norm()
    assert float((after[:, 1:] @ unit).abs().max()) < 1e-4 < float((acts[:, 1:] @ unit).abs().max())
