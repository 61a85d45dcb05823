"""The server's pieces that run concurrently, checked in-process on the tiny model."""

from __future__ import annotations

import threading

from refusalkit.models.base import GenerationConfig
from refusalkit.models.hf import HFModel
from refusalkit.serve.app import PromptCounter
from refusalkit.serve.engine import _visible


def test_prompt_counting_beside_batched_generation_does_not_break_it(tiny_model_dir):
    """Regression: counting prompt tokens with the model's own fast tokenizer in another thread switched
    padding off under the generation thread's padded batch encode ("Unable to create tensor"), a 500
    under concurrent load. The counter has its own tokenizer copy."""
    model = HFModel(tiny_model_dir, name="tiny")
    counter = PromptCounter(model.tokenizer)
    stop = threading.Event()
    errors: list[BaseException] = []
    counts: list[int] = []

    def count() -> None:
        i = 0
        while not stop.is_set():
            try:
                counts.append(counter([{"role": "user", "content": "hello world " * (i % 50 + 1)}]))
            except BaseException as e:  # noqa: BLE001 - collected and asserted on below
                errors.append(e)
            i += 1

    threads = [threading.Thread(target=count) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(30):
            batch = [[{"role": "user", "content": "hi " * (j + 1)}] for j in range(8)]
            gens = model.generate(batch, GenerationConfig(max_new_tokens=2))
            assert len(gens) == 8
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors and counts
    expected = len(model.encode([[{"role": "user", "content": "hello world "}]])["input_ids"][0])
    assert counter([{"role": "user", "content": "hello world "}]) == expected


def test_stream_holds_back_what_may_become_a_stop_string():
    assert _visible(" Hello wor", ("world",), final=False) == ("Hello", False)
    assert _visible(" Hello world and more", ("world",), final=False) == ("Hello", True)
    assert _visible("Hello  ", (), final=False) == ("Hello", False)
    assert _visible("Hello  ", (), final=True) == ("Hello", False)


def test_batches_respect_the_sequence_and_padded_token_budgets():
    """A batch takes the oldest request, then later ones with the same settings while at most max_batch
    sequences and max_batch_tokens padded tokens (sequences x longest prompt+answer) fit."""
    import asyncio

    from refusalkit.serve.batching import BatchingEngine, batch_key
    from refusalkit.serve.engine import Job

    def job(name: str, prompt_tokens: int, n: int = 1, max_new: int = 8) -> Job:
        return Job(
            [{"role": "user", "content": name}],
            GenerationConfig(max_new_tokens=max_new),
            n=n,
            prompt_tokens=prompt_tokens,
        )

    engine = BatchingEngine(None, max_batch=4, max_batch_tokens=1000)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    try:
        jobs = [job("A", 92), job("B", 92), job("C", 992), job("D", 92), job("E", 92, max_new=4), job("F", 92, n=2)]
        futures = [loop.create_future() for _ in jobs]
        engine._queue = [(batch_key(j), j, f) for j, f in zip(jobs, futures)]
        futures[1].cancel()  # B's caller went away: skipped
        batches = []
        while batch := engine._take():
            batches.append([j.messages[0]["content"] for j, _ in batch])
        # C alone is over the token budget but is still served, alone
        assert batches == [["A", "D", "F"], ["C"], ["E"]]
    finally:
        loop.close()


def test_row_policies_decide_each_row_as_its_policy_alone_and_share_a_batch():
    """Requests under different policies share a batch: each row is decided by its own policy exactly as
    that policy decides alone, and the batch key ignores the policy (only its softmax temperature counts)."""
    import numpy as np
    import pytest

    from refusalkit.serve.batching import batch_key
    from refusalkit.serve.engine import Job
    from refusalkit.serve.refusal import RequestPolicy, RowPolicies
    from refusalkit.tokens.policy import Policy
    from refusalkit.tokens.scheme import TokenScheme

    scheme = TokenScheme()
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(len(scheme.tokens)), size=40)
    pols = [
        Policy(scheme, rule="argmax"),
        Policy(scheme, thresholds={c: 0.1 for c in scheme.categories}),
        Policy(scheme, thresholds={c: 1.0 for c in scheme.categories}),
        Policy(scheme, rule="set", controlled=["Requests with safety concerns"], threshold=0.4),
    ]
    rows = [pols[i % len(pols)] for i in range(len(q))]
    got = RowPolicies(rows).decide(q)
    want = np.array([p.decide(q[i : i + 1])[0] for i, p in enumerate(rows)])
    assert (got == want).all() and len(set(got.tolist())) > 2  # several different decisions were made
    with pytest.raises(RuntimeError):
        RowPolicies(rows).decide(q[:3])
    with pytest.raises(ValueError):
        RowPolicies([pols[0], Policy(scheme, rule="argmax", temperature=2.0)])
    cfg = GenerationConfig(max_new_tokens=4)
    jobs = [Job([{"role": "user", "content": "hi"}], cfg, policy=RequestPolicy(p, "thresholds")) for p in pols]
    assert len({batch_key(j) for j in jobs}) == 1
    hot = Job([{"role": "user", "content": "hi"}], cfg, policy=RequestPolicy(Policy(scheme, temperature=2.0), "x"))
    assert batch_key(hot) != batch_key(jobs[0])


def test_head_cache_logits_equal_a_full_pass(tiny_model_dir):
    """The deciding pass with the template's head computed once gives the logits of a full left-padded pass
    (prompts of different lengths in one batch, twice, so the cached head is reused); a prompt with its own
    system message does not start with the head: None, and the caller decides from a full pass."""
    import torch

    from refusalkit.serve.decide import HeadCache

    model = HFModel(tiny_model_dir, name="tiny")
    heads = HeadCache(model)
    prompts = [[{"role": "user", "content": "hi " * (j * 3 + 1)}] for j in range(5)]
    with torch.inference_mode():
        full = model.model(**model.encode(prompts), logits_to_keep=1).logits[:, -1, :].float()
    for _ in range(2):
        got = heads.first_logits(prompts)
        assert got is not None and got.shape == full.shape
        assert torch.allclose(got, full, atol=1e-4), (got - full).abs().max()
    own_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert heads.first_logits([prompts[0], own_system]) is None
