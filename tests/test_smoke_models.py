"""HFModel on a tiny random model: batching, order, greedy determinism, logits and hidden states."""

from refusalkit.models.base import GenerationConfig
from refusalkit.models.hf import HFModel


def test_batched_generation_matches_single(tiny_model_dir):
    m = HFModel(tiny_model_dir, batch_size=4)
    prompts = ["Hi", "Tell me a long story about a dragon and a castle", "2+2?", "Why is the sky blue?", "x"]
    cfg = GenerationConfig(max_new_tokens=6)
    batched = m.generate(prompts, cfg)
    single = [m.generate([p], cfg)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(0 < g.n_tokens <= 6 for g in batched)


def test_logits_and_hidden_states(tiny_model_dir):
    m = HFModel(tiny_model_dir, batch_size=2)
    lp = m.next_token_logprobs(["a", "a much longer prompt here"])
    assert lp.shape[0] == 2
    single = m.next_token_logprobs(["a"])
    assert (lp[0] - single[0]).abs().max() < 1e-4  # left padding must not change the last position
    hs = m.hidden_states(["a", "b c"], positions=(-1, -2))
    assert hs.shape[:3] == (2, 3, 2)
