"""Refusal-token decisions over an OpenAI-compatible API (vLLM, llama.cpp server, ``refusalkit serve``).

The endpoint serves the adapter-merged model (``refusalkit tokens merge``), so the control tokens are in its
vocabulary. One chat request per prompt asks for the first generated token's ``top_logprobs`` (at most 20
in OpenAI's API); the control tokens' probabilities are read from them and the policy (``tokens.policy``)
decides client-side, exactly as it does on local logits: ``q_k = exp(logprob_k)`` is the same softmax over
the whole vocabulary at temperature 1.

A control token outside the top K has no logprob in the answer. Its probability is then unknown but at most
the smallest listed one; it is set to 0, and the decision is marked uncertain when putting that bound in its
place would change it. After training the control tokens hold nearly all the first position's probability,
so with K = 20 they are listed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refusalkit.errors import RefusalkitError
from refusalkit.models.base import GenerationConfig, PromptLike
from refusalkit.tokens.policy import Policy
from refusalkit.tokens.scheme import TokenScheme

MAX_TOP_LOGPROBS = 20


@dataclass
class RemoteScore:
    """One prompt's answer from the endpoint: the control-token probabilities (0 where not listed), the
    tokens that were not among the top K, the bound on their probability, and the generated text."""

    q: np.ndarray
    missing: list[str] = field(default_factory=list)
    bound: float = 0.0
    first_token: str | None = None
    text: str = ""
    n_tokens: int = 0
    finish_reason: str = "stop"


def parse_first_token(
    choice: dict[str, Any], tokens: list[str], temperature: float = 1.0
) -> tuple[np.ndarray, list[str], float, str | None]:
    """Return ``(q, missing, bound, first_token)`` from one choice of a chat completion with logprobs.

    Raises RefusalkitError when the answer has no logprobs for its first token (the server ignored
    ``logprobs``) or when ``temperature`` is not 1 (a tempered softmax needs the whole vocabulary).
    """
    if temperature != 1.0:
        raise RefusalkitError(
            f"temperature {temperature}: over an OpenAI-compatible API only temperature 1 can be scored "
            "(the endpoint gives log-probabilities of the top tokens, not the whole vocabulary's logits)"
        )
    content = ((choice.get("logprobs") or {}).get("content")) or []
    if not content or not isinstance(content[0], dict) or "top_logprobs" not in content[0]:
        raise RefusalkitError(
            "the endpoint answered without top_logprobs for the first token; it must support "
            "'logprobs': true and 'top_logprobs' (vLLM, llama.cpp server and refusalkit serve do)"
        )
    first = content[0]
    listed: dict[str, float] = {}
    for t in first.get("top_logprobs") or []:
        tok, lp = t.get("token"), t.get("logprob")
        if isinstance(tok, str) and isinstance(lp, (int, float)) and math.isfinite(lp):
            listed.setdefault(tok, float(lp))
            listed.setdefault(tok.strip(), float(lp))  # some servers keep a leading space on special tokens
    if isinstance(first.get("token"), str) and isinstance(first.get("logprob"), (int, float)):
        listed.setdefault(first["token"], float(first["logprob"]))
    q = np.array([math.exp(listed[t]) if t in listed else 0.0 for t in tokens], dtype=np.float64)
    missing = [t for t in tokens if t not in listed]
    lps = [float(t["logprob"]) for t in first.get("top_logprobs") or [] if isinstance(t.get("logprob"), (int, float))]
    bound = math.exp(min(lps)) if missing and lps else 0.0
    return q, missing, bound, first.get("token")


def score_remote(
    client: Any,
    prompts: list[PromptLike],
    scheme: TokenScheme,
    *,
    max_new_tokens: int = 1,
    top_logprobs: int = MAX_TOP_LOGPROBS,
    concurrency: int = 8,
    on_done: Callable[[int], None] | None = None,
) -> list[RemoteScore]:
    """Return one RemoteScore per prompt, in order: one greedy chat request each to ``client`` (an
    ``OpenAICompatModel``) with ``logprobs`` and ``top_logprobs``; ``max_new_tokens`` > 1 also keeps the
    endpoint's text."""
    if not 1 <= top_logprobs <= MAX_TOP_LOGPROBS:
        raise RefusalkitError(f"top_logprobs must be within 1..{MAX_TOP_LOGPROBS}, got {top_logprobs}")
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    tokens = scheme.tokens

    def one(prompt: PromptLike) -> RemoteScore:
        body = client.payload(prompt, cfg)
        body.update(logprobs=True, top_logprobs=top_logprobs)
        body.pop("logit_bias", None)  # biases would move the probabilities the policy decides on
        data = client.post("/chat/completions", body)
        choice = (data.get("choices") or [{}])[0]
        q, missing, bound, first = parse_first_token(choice, tokens)
        usage = data.get("usage") or {}
        if on_done:
            on_done(1)
        return RemoteScore(
            q=q,
            missing=missing,
            bound=bound,
            first_token=first,
            text=((choice.get("message") or {}).get("content") or "").strip(),
            n_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=choice.get("finish_reason") or "stop",
        )

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(prompts) or 1))) as pool:
        return list(pool.map(one, prompts))


def decide_remote(policy: Policy, scores: list[RemoteScore]) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(choice, certain)``: the policy's control-token index per prompt (``Policy.decide`` on the
    listed probabilities, unlisted ones 0) and whether it stays the same with every unlisted token at its
    upper bound instead."""
    if policy.temperature != 1.0:
        raise RefusalkitError(
            f"the policy's temperature is {policy.temperature}; over an OpenAI-compatible API only "
            "temperature 1 policies can be applied"
        )
    if not scores:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=bool)
    q = np.stack([s.q for s in scores])
    hi = q.copy()
    idx = {t: j for j, t in enumerate(policy.scheme.tokens)}
    for i, s in enumerate(scores):
        for t in s.missing:
            hi[i, idx[t]] = s.bound
    choice = policy.decide(q)
    return choice, choice == policy.decide(hi)
