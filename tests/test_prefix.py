"""The shared-prefix forward pass (models/prefix.py) gives what a plain left-padded forward pass gives."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _tiny(kind: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0)
    torch.manual_seed(0)
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True)).eval()
    return LlamaForCausalLM(LlamaConfig(**common)).eval()


def _plain(model, ids, hidden: bool):
    n = max(len(r) for r in ids)
    x = torch.zeros((len(ids), n), dtype=torch.long)
    mask = torch.zeros((len(ids), n), dtype=torch.long)
    for i, r in enumerate(ids):
        x[i, n - len(r):] = torch.tensor(r)
        mask[i, n - len(r):] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        if hidden:
            return model.model(input_ids=x, attention_mask=mask, position_ids=pos).last_hidden_state[:, -1]
        return model(input_ids=x, attention_mask=mask, position_ids=pos).logits[:, -1]


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_prefix_forward_equals_plain_forward(kind):
    from refusalkit.models.prefix import common_prefix_len, last_hidden_states, prefix_forward

    model = _tiny(kind)
    prefix = [5, 6, 7, 8, 9, 10, 11]
    ids = [prefix + [20, 21, 22], prefix + [30], prefix + [40, 41, 42, 43, 44, 45], prefix + [20, 21, 23]]
    assert common_prefix_len(ids) == 7
    got = prefix_forward(model, ids)
    assert torch.allclose(got, _plain(model, ids, False), atol=1e-4)
    assert (got.argmax(1) == _plain(model, ids, False).argmax(1)).all()
    h = last_hidden_states(model, ids, batch_size=3)
    assert h.shape == (4, 32)
    assert torch.allclose(h, _plain(model, ids, True), atol=1e-4)
    # no shared prefix at all, and one prompt that is the others' prefix: the last token is never cached
    other = [[3, 4], [9, 4, 4, 4]]
    assert torch.allclose(prefix_forward(model, other), _plain(model, other, False), atol=1e-4)
    nested = [prefix, prefix + [50]]
    assert common_prefix_len(nested) == 6
    assert torch.allclose(prefix_forward(model, nested), _plain(model, nested, False), atol=1e-4)


def test_bf16_checkpoint_loads_as_float32_on_a_cpu_without_bf16(tmp_path, monkeypatch, bundled_dir):
    """A bf16 checkpoint (the bundled subject model is one) runs 4-5x slower in bf16 on a CPU without native
    bf16: by default it loads as float32 there; ``model`` keeps the checkpoint's dtype."""
    from transformers import AutoTokenizer

    from refusalkit.errors import RefusalkitError
    from refusalkit.models import hf as hfmod

    monkeypatch.setattr(hfmod, "_cpu_has_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _tiny("qwen2").to(torch.bfloat16).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(bundled_dir).save_pretrained(tmp_path)
    assert hfmod.resolve_dtype(None) == "float32" and hfmod.resolve_dtype("model") is None
    with pytest.raises(RefusalkitError, match="unknown --dtype"):
        hfmod.resolve_dtype("fp8")
    assert hfmod._load(str(tmp_path))[0].dtype == torch.float32
    assert hfmod._load(str(tmp_path), dtype="model")[0].dtype == torch.bfloat16
    monkeypatch.setattr(hfmod, "_cpu_has_bf16", lambda: True)
    assert hfmod._load(str(tmp_path))[0].dtype == torch.bfloat16
