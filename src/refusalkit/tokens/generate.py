"""Generation under a refusal-token policy: a model wrapper that forces the policy's control token at the
first response position and reports, per answer, the token it chose, its category and the scores."""

from __future__ import annotations

from typing import Any

from refusalkit.models.base import Generation, GenerationConfig, PromptLike
from refusalkit.tokens.policy import Policy, RefusalTokenProcessor


class PolicyModel:
    """A ``LanguageModel`` (usable by the run store and runner) that generates with a refusal policy.

    ``generate`` returns Generations whose ``meta`` holds ``control_token``, ``control_category``,
    ``refused`` and ``probs`` (control token -> probability at the first position). ``policy=None``
    generates freely (the model picks its own first token) and records nothing.
    """

    def __init__(self, hf: Any, policy: Policy | None, token_ids: dict[str, int], *, name: str | None = None):
        self.hf = hf
        self.policy = policy
        self.token_ids = token_ids
        self.processor = RefusalTokenProcessor(policy, token_ids) if policy is not None else None
        self.name = name or hf.name

    def generate(self, prompts: list[PromptLike], config: GenerationConfig | None = None, *,
                 batch_size: int | None = None) -> list[Generation]:
        """Return one Generation per prompt, in input order, each with the policy's decision in ``meta``."""
        cfg = config or GenerationConfig()
        bs = batch_size or self.hf.batch_size
        if self.processor is None:
            return self.hf.generate(prompts, cfg, batch_size=bs)
        # Batches are formed here in the order HFModel would use (by rendered length, stable), so that inside
        # each call its own ordering is the identity and the processor's records line up with the rows.
        order = sorted(range(len(prompts)), key=lambda i: len(self.hf.render(prompts[i], cfg.system_prompt)))
        out: list[Generation | None] = [None] * len(prompts)
        for s in range(0, len(order), bs):
            idx = order[s:s + bs]
            self.processor.reset()
            gens = self.hf.generate([prompts[i] for i in idx], cfg, logits_processor=self.processor,
                                    batch_size=len(idx))
            recs = self.processor.records
            if len(recs) != len(idx):
                raise RuntimeError(f"the policy saw {len(recs)} rows for a batch of {len(idx)}")
            for i, g, r in zip(idx, gens, recs):
                g.meta.update({"control_token": r["token"], "control_category": r["category"],
                               "refused": r["refused"], "probs": r["probs"]})
                out[i] = g
        return out  # type: ignore[return-value]
