"""Generation under a refusal-token policy: a model wrapper that forces the policy's control token at the
first response position and reports, per answer, the token it chose, its category and the scores."""

from __future__ import annotations

from typing import Any

from refusalkit.models.base import Generation, GenerationConfig, PromptLike
from refusalkit.tokens.model import is_head_adapter
from refusalkit.tokens.policy import Policy, RefusalTokenProcessor
from refusalkit.tokens.scheme import TokenScheme

#: the refusal opener of a decision head whose card names none
DEFAULT_OPENER = "I'm sorry, but I can't help with that"


class PolicyModel:
    """A ``LanguageModel`` (usable by the run store and runner) that generates with a refusal policy.

    ``generate`` returns Generations whose ``meta`` holds ``control_token``, ``control_category``,
    ``refused`` and ``probs`` (control token -> probability at the first position). ``policy=None``
    generates freely (the model picks its own first token) and records nothing. ``answer_model`` (an
    HFModel of the base model) writes the answers the policy decides to give (``meta["answered_by"]``).
    ``refusal_openers`` (refusal token -> text; decision heads on a frozen model, see
    :func:`refusal_openers`) makes a refusal start with its opener, which the model continues, instead of
    the control token; the decision is still recorded in ``meta``.
    """

    def __init__(
        self,
        hf: Any,
        policy: Policy | None,
        token_ids: dict[str, int],
        *,
        name: str | None = None,
        emit_respond: bool = True,
        answer_model: Any = None,
        refusal_openers: dict[str, str] | None = None,
    ):
        self.hf = hf
        self.answer_model = answer_model
        self.policy = policy
        self.token_ids = token_ids
        # with an answer model, the adapter's text after [respond] would be thrown away: end those rows at once
        end_id = hf.tokenizer.eos_token_id if answer_model is not None and policy is not None else None
        prefixes = opener_prefixes(refusal_openers, hf.tokenizer) if refusal_openers is not None else None
        self.processor = RefusalTokenProcessor(
            policy, token_ids, emit_respond=emit_respond, end_id=end_id, refusal_prefixes=prefixes
        )
        self.name = name or hf.name

    def generate(
        self, prompts: list[PromptLike], config: GenerationConfig | None = None, *, batch_size: int | None = None
    ) -> list[Generation]:
        """Return one Generation per prompt, in input order, each with the policy's decision in ``meta``."""
        cfg = config or GenerationConfig()
        bs = batch_size or self.hf.batch_size
        if self.policy is None:
            # free generation: the model picks its first token; control tokens are masked afterwards
            return self.hf.generate(prompts, cfg, batch_size=bs, logits_processor=self.processor)
        # Batches are formed here in the order HFModel would use (by rendered length, stable), so that inside
        # each call its own ordering is the identity and the processor's records line up with the rows.
        order = sorted(range(len(prompts)), key=lambda i: len(self.hf.render(prompts[i], cfg.system_prompt)))
        out: dict[int, Generation] = {}  # prompt index -> generation; `order` is a permutation, so all get one
        for s in range(0, len(order), bs):
            idx = order[s : s + bs]
            if self.answer_model is not None:
                self._generate_split(prompts, idx, cfg, out)
                continue
            self.processor.reset()
            gens = self.hf.generate(
                [prompts[i] for i in idx], cfg, logits_processor=self.processor, batch_size=len(idx)
            )
            for i, g, r in zip(idx, gens, self._records(len(idx))):
                g.meta.update(decision_meta(r))
                out[i] = g
        return [out[i] for i in range(len(prompts))]

    def _records(self, n: int) -> list[dict[str, Any]]:
        recs = self.processor.records
        if len(recs) != n:
            raise RuntimeError(f"the policy saw {len(recs)} rows for a batch of {n}")
        return recs

    def _generate_split(
        self, prompts: list[PromptLike], idx: list[int], cfg: GenerationConfig, out: dict[int, Generation]
    ) -> None:
        """Generate the rows ``idx`` (sorted as HFModel sorts) when an answer model writes the answers: the
        adapter decides every row in one step (the prompt's forward pass), writes the refusals of the refused
        rows only, and the answer model answers the rest; results go into ``out``. Generating the whole batch
        with the adapter would spend a full generation on rows whose text is thrown away."""
        self.processor.reset()
        one = cfg.with_(max_new_tokens=1)
        self.hf.generate([prompts[i] for i in idx], one, logits_processor=self.processor, batch_size=len(idx))
        recs = dict(zip(idx, self._records(len(idx))))
        refused = [i for i in idx if recs[i]["refused"]]  # a subset keeps the order: HFModel's stays the identity
        if refused:
            self.processor.reset()
            gens = self.hf.generate(
                [prompts[i] for i in refused], cfg, logits_processor=self.processor, batch_size=len(refused)
            )
            # the decision carried out is this pass's (a smaller batch pads differently; a row whose
            # decision turns to [respond] here ends at once and is answered below)
            for i, g, r in zip(refused, gens, self._records(len(refused))):
                recs[i] = r
                g.meta.update(decision_meta(r))
                out[i] = g
        answer = [i for i in idx if not recs[i]["refused"]]
        if answer:
            # the [respond] decision is carried out by the answer model (the base model): an adapter
            # trained with the loss on the control token only never learned text after [respond]
            for i, g in zip(
                answer, self.answer_model.generate([prompts[i] for i in answer], cfg, batch_size=len(answer))
            ):
                g.meta.update(decision_meta(recs[i]), answered_by="base")
                out[i] = g


def decision_meta(rec: dict[str, Any]) -> dict[str, Any]:
    """Return a policy processor's record as a Generation's ``meta`` fields (what ``tokens generate`` and the
    server write)."""
    return {
        "control_token": rec["token"],
        "control_category": rec["category"],
        "refused": rec["refused"],
        "probs": rec["probs"],
    }


def emits_respond(info: dict[str, Any]) -> bool:
    """Return whether ``[respond]`` should be written before answers for an adapter (its ``refusal_tokens.json``
    info): yes when training taught the text after it (``respond_target="self"``), no when the loss covered
    the control token only (the answer then starts without it) or for a decision head (the frozen model
    never saw the token)."""
    if is_head_adapter(info):
        return False
    return (info.get("config") or {}).get("respond_target", "self") != "token"


def refusal_openers(info: dict[str, Any], scheme: TokenScheme) -> dict[str, str] | None:
    """Return ``{refusal token: opener text}`` for a decision head (its card's ``refusal_openers``: per
    token, ``"*"`` for the others), None for a LoRA adapter (it writes its refusals after the token itself).

    The frozen model under a decision head has never seen a control token as input, so a refusal is written
    by the model continuing this opener (``PolicyModel(refusal_openers=...)``)."""
    if not is_head_adapter(info):
        return None
    given = info.get("refusal_openers") or {}
    fallback = given.get("*") or DEFAULT_OPENER
    return {t: given.get(t) or fallback for t in scheme.refusal_tokens}


def opener_prefixes(openers: dict[str, str], tokenizer: Any) -> dict[str, list[int]]:
    """Return ``{refusal token: token ids}`` of the openers (:func:`refusal_openers`): what
    ``RefusalTokenProcessor(refusal_prefixes=...)`` forces after a refusal decision. The opener follows the
    assistant header directly, as a prefilled answer would."""
    return {t: tokenizer(text, add_special_tokens=False)["input_ids"] for t, text in openers.items()}


def answer_model_for(model_spec: str, info: dict[str, Any], batch_size: int = 16) -> Any:
    """Return the base model that writes answers for an adapter trained with the loss on the control
    token only (None for adapters that learned answers after ``[respond]``, and for decision heads, whose
    model is the base model already)."""
    if emits_respond(info) or info.get("adapter") is None or is_head_adapter(info):
        return None
    from refusalkit.models.spec import load_model

    return load_model(model_spec, batch_size=batch_size)
