"""Per-request refusal control for ``refusalkit serve --adapter A``.

The server holds one refusal-token model (the base model with adapter ``A`` merged, control tokens in its
tokenizer), the named profiles it may apply (the adapter's shipped ``profiles/*.json`` and the files given
with ``--profile-file``) and a default policy (``--profile``; without it ``argmax``, as
``refusalkit tokens generate`` without a profile). A request picks its policy with the body field
``"refusal": {"profile": NAME}`` or ``{"thresholds": {CATEGORY: T, ...}}``; the policy is a
``tokens.policy.Policy`` and generation goes through ``tokens.generate.PolicyModel``, the code
``refusalkit tokens generate`` runs (``tokens.policy.RefusalTokenProcessor`` deciding from the first
generation step's logits), so the server and the CLI make the same decision for the same prompt and policy.

Requests with different policies share a batch: :class:`RowPolicies` gives the processor one policy per
row, so the decision costs no extra pass. For adapters whose answers are written by the base model
(``--respond-target token``, like the bundled one) a batch is one adapter ``generate`` call, in which the
processor decides every row at the first step, refused rows go on to write their refusal and answered
rows end at once, then one base-model ``generate`` call over the answered rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from refusalkit.errors import RefusalkitError
from refusalkit.models.base import Generation, GenerationConfig, PromptLike
from refusalkit.serve.decide import HeadCache
from refusalkit.serve.errors import APIError
from refusalkit.tokens.calibrate import parse_targets
from refusalkit.tokens.generate import decision_meta
from refusalkit.tokens.policy import Policy, RefusalTokenProcessor, policy_from_profile
from refusalkit.tokens.scheme import RESPOND, TokenScheme

log = logging.getLogger(__name__)

DEFAULT_PROFILE = "argmax"


@dataclass
class RequestPolicy:
    """The policy one request runs under: the ``Policy`` and where it came from."""

    policy: Policy
    source: str  # "profile:NAME", "thresholds" or "default:NAME"


class RowPolicies(Policy):
    """One policy per row of a batch, seen by ``RefusalTokenProcessor`` as a single policy: row ``i`` of the
    first-position probabilities is decided by ``rows[i]`` (``Policy.decide`` decides each row on its own,
    so a row's decision is the one its policy makes alone). The rows share the scheme and the softmax
    temperature (the processor computes the probabilities once for the batch)."""

    def __init__(self, rows: Sequence[Policy]):
        if not rows:
            raise ValueError("RowPolicies needs at least one row")
        first = rows[0]
        super().__init__(first.scheme, rule="argmax", temperature=first.temperature)
        if any(p.temperature != first.temperature or p.scheme.tokens != first.scheme.tokens for p in rows):
            raise ValueError("the rows of one batch must share the token scheme and the policy temperature")
        self.rows = list(rows)

    def decide(self, q: np.ndarray) -> np.ndarray:
        """Return each row's control-token index under its own policy (rows with one policy object are
        decided together)."""
        q = np.asarray(q, dtype=np.float64)
        if len(q) != len(self.rows):
            raise RuntimeError(f"the policy has {len(self.rows)} rows, the batch {len(q)}")
        out = np.empty(len(q), dtype=np.int64)
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(self.rows):
            groups.setdefault(id(p), []).append(i)
        for idx in groups.values():
            out[idx] = self.rows[idx[0]].decide(q[idx])
        return out


def _read_profile_file(path: Path) -> dict[str, Any]:
    try:
        prof = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RefusalkitError(f"--profile-file {path}: not a readable JSON profile ({type(e).__name__})") from None
    if not isinstance(prof, dict) or not isinstance(prof.get("policy"), dict) or "scheme" not in prof:
        raise RefusalkitError(f"--profile-file {path}: not a calibration profile (needs 'scheme' and 'policy')")
    return prof


class FixedChoices(Policy):
    """The decisions already made for some rows (indices into the scheme's tokens), as a policy: the processor
    then forces them at the first step of a ``generate`` call that writes the refusals."""

    def __init__(self, like: Policy, choices: Sequence[int]):
        super().__init__(like.scheme, rule="argmax", temperature=like.temperature)
        self.choices = np.asarray(choices, dtype=np.int64)

    def decide(self, q: np.ndarray) -> np.ndarray:
        """Return the fixed choices (one per row of ``q``)."""
        if len(q) != len(self.choices):
            raise RuntimeError(f"{len(self.choices)} fixed decisions for a batch of {len(q)}")
        return self.choices


class RefusalControl:
    """The refusal-token side of the server: the model, the profiles, the default policy.

    ``hf`` is the HFModel with the adapter merged; ``answer_model`` the base model that writes answers for
    adapters trained with the loss on the control token only (None otherwise), as in ``tokens generate``.
    """

    def __init__(
        self,
        hf: Any,
        scheme: TokenScheme,
        token_ids: dict[str, int],
        info: dict[str, Any],
        *,
        profiles: dict[str, dict[str, Any]],
        default: str | None = None,
        emit_respond: bool = True,
        answer_model: Any = None,
        refusal_prefixes: dict[str, list[int]] | None = None,
    ):
        self.hf = hf
        # a decision head on the frozen model: a refusal starts with its opener's tokens (tokens.generate)
        self.refusal_prefixes = refusal_prefixes
        self.scheme = scheme
        self.token_ids = token_ids
        self.info = info
        self.emit_respond = emit_respond
        self.answer_model = answer_model
        # the adapter's deciding pass over the prompts' own tokens, the template's head run once (serve.decide)
        self.heads = HeadCache(hf) if answer_model is not None else None
        self.policies: dict[str, Policy] = {DEFAULT_PROFILE: Policy(scheme, rule="argmax")}
        for name, prof in profiles.items():
            if prof.get("token_ids") and prof["token_ids"] != token_ids:
                raise RefusalkitError(
                    f"profile {name!r} was calibrated for token ids {prof['token_ids']}, this adapter has {token_ids}"
                )
            try:
                self.policies[name] = policy_from_profile(prof)
            except (RefusalkitError, KeyError, TypeError, ValueError) as e:
                raise RefusalkitError(f"profile {name!r}: bad policy ({e})") from None
        self.default_name = default or DEFAULT_PROFILE
        if self.default_name not in self.policies:
            raise RefusalkitError(
                f"--profile {self.default_name!r}: no such profile; available: {', '.join(sorted(self.policies))}"
            )
        self.default = RequestPolicy(self.policies[self.default_name], f"default:{self.default_name}")

    @classmethod
    def load(
        cls,
        model: str,
        adapter: str,
        *,
        profile: str | None = None,
        profile_files: list[Path] | None = None,
        batch_size: int = 16,
    ) -> RefusalControl:
        """Return the control for ``model`` with ``adapter`` (a folder or ``bundled``): the adapter's shipped
        profiles, then ``profile_files`` (named by their ``name`` field or file stem), default ``profile``.

        The profile files are read before the model loads, so a bad file fails fast with one line.
        """
        from refusalkit.tokens.generate import answer_model_for, emits_respond, opener_prefixes, refusal_openers
        from refusalkit.tokens.model import load_token_model, resolve_adapter

        adir = resolve_adapter(adapter, model)  # `bundled`: the adapter shipped for this model
        profiles: dict[str, dict[str, Any]] = {}
        shipped = adir / "profiles"
        for p in sorted(shipped.glob("*.json")) if shipped.is_dir() else []:
            prof = json.loads(p.read_text(encoding="utf-8"))
            if isinstance(prof, dict) and "policy" in prof and "scheme" in prof:  # curves.json is not a profile
                profiles[p.stem] = prof
        for f in profile_files or []:
            prof = _read_profile_file(Path(f))
            profiles[str(prof.get("name") or Path(f).stem)] = prof
        if profile is not None and profile not in profiles and profile != DEFAULT_PROFILE:
            names = ", ".join(sorted({*profiles, DEFAULT_PROFILE}))
            raise RefusalkitError(f"--profile {profile!r}: no such profile for this adapter; available: {names}")
        hf, scheme, ids, info = load_token_model(model, adapter, batch_size=batch_size)
        openers = refusal_openers(info, scheme)
        return cls(
            hf,
            scheme,
            ids,
            info,
            profiles=profiles,
            default=profile,
            emit_respond=emits_respond(info),
            answer_model=answer_model_for(model, info, batch_size),
            refusal_prefixes=opener_prefixes(openers, hf.tokenizer) if openers else None,
        )

    # --- a request's policy ----------------------------------------------------------------------------
    def resolve(self, spec: Any) -> RequestPolicy:
        """Return the policy for a request's ``refusal`` field (None: the server default); raise APIError
        (400, ``param`` naming the field) for an unknown profile or category."""
        if spec is None:
            return self.default
        if spec.profile is not None:
            pol = self.policies.get(spec.profile)
            if pol is None:
                raise APIError(
                    400,
                    f"unknown refusal profile {spec.profile!r}; this server has: {', '.join(sorted(self.policies))}",
                    param="refusal.profile",
                    code="invalid_value",
                )
            return RequestPolicy(pol, f"profile:{spec.profile}")
        cats = ["*"] if self.scheme.mode == "single" else list(self.scheme.categories)
        known = {"*", *cats, *(self.scheme.categories.values() if self.scheme.mode == "category" else ())}
        for name in spec.thresholds:
            if name not in known:
                raise APIError(
                    400,
                    f"refusal.thresholds: unknown category {name!r}; this adapter's categories: "
                    f"{', '.join(f'{c!r}' for c in cats)} (or their short names, or '*' for all)",
                    param="refusal.thresholds",
                    code="invalid_value",
                )
        # names are resolved as the CLI's --thresholds are: '*' first, so named categories win
        thr: dict[str, float] = {}
        items = sorted(spec.thresholds.items(), key=lambda kv: kv[0] != "*")
        try:
            for name, value in items:
                thr.update(parse_targets(f"{name}={value!r}", self.scheme))
            pol = Policy(self.scheme, thresholds=thr)
        except RefusalkitError as e:
            raise APIError(400, f"refusal.thresholds: {e}", param="refusal.thresholds", code="invalid_value") from None
        return RequestPolicy(pol, "thresholds")

    # --- generation ------------------------------------------------------------------------------------
    def generate(
        self, prompts: list[PromptLike], cfg: GenerationConfig, policies: Sequence[Policy], batch_size: int
    ) -> list[Generation]:
        """Return one Generation per prompt, prompt ``i`` under ``policies[i]`` (``meta``: control_token,
        control_category, refused, probs; ``answered_by`` when the base model wrote the answer).

        The prompts are generated in batches of at most ``batch_size``, formed in the order HFModel uses
        (by rendered length, stable), so that inside each call its own ordering is the identity and the
        processor's rows line up with the policies.
        """
        if len(policies) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(policies)} policies")
        order = sorted(range(len(prompts)), key=lambda i: len(self.hf.render(prompts[i], cfg.system_prompt)))
        out: dict[int, Generation] = {}
        for s in range(0, len(order), max(1, batch_size)):
            idx = order[s : s + batch_size]
            gens = self._generate_batch([prompts[i] for i in idx], cfg, RowPolicies([policies[i] for i in idx]))
            out.update(zip(idx, gens))
        return [out[i] for i in range(len(prompts))]

    def _generate_batch(self, prompts: list[PromptLike], cfg: GenerationConfig, rows: RowPolicies) -> list[Generation]:
        """Generate one batch (already in HFModel's order); the processor decides each row under its own policy.

        Without an answer model the decision is made at the first step of the adapter's own ``generate``
        call: no pass is spent on deciding alone. With one (the base model writes the answers), the adapter
        decides from its first-position logits over the prompts' own tokens (``serve.decide.HeadCache``: the
        template's head is computed once per server), writes the refusals of the refused rows only, and the
        answer model answers the rest. Where the head cache does not apply (a prompt with its own system
        message), the adapter's ``generate`` call decides every row at its first step, refused rows go on to
        write their refusal, answered rows end at once.
        """
        end_id = self.hf.tokenizer.eos_token_id if self.answer_model is not None else None
        proc = RefusalTokenProcessor(
            rows, self.token_ids, emit_respond=self.emit_respond, end_id=end_id, refusal_prefixes=self.refusal_prefixes
        )
        logits = self.heads.first_logits(prompts, cfg.system_prompt) if self.heads is not None else None
        if logits is None:
            gens = self.hf.generate(prompts, cfg, logits_processor=proc, batch_size=len(prompts))
            records = self._records(proc, len(prompts))
            for g, r in zip(gens, records):
                g.meta.update(decision_meta(r))
            answer = [i for i, r in enumerate(records) if not r["refused"]]  # a subset keeps HFModel's order
        else:
            # the same processor decides and records, from the logits of the deciding pass
            proc(torch.zeros((len(prompts), 1), dtype=torch.long), logits)
            records = self._records(proc, len(prompts))
            gens = [Generation(text="") for _ in prompts]  # each is replaced below
            refused = [i for i, r in enumerate(records) if r["refused"]]
            if refused:
                # the refusal text after the chosen token; the decision carried out is the deciding pass's
                chosen = [self.scheme.tokens.index(records[i]["token"]) for i in refused]
                force = RefusalTokenProcessor(
                    FixedChoices(rows, chosen), self.token_ids, emit_respond=self.emit_respond, end_id=end_id
                )
                texts = self.hf.generate(
                    [prompts[i] for i in refused], cfg, logits_processor=force, batch_size=len(refused)
                )
                for i, g in zip(refused, texts):
                    g.meta.update(decision_meta(records[i]))
                    gens[i] = g
            answer = [i for i, r in enumerate(records) if not r["refused"]]
        if self.answer_model is None or not answer:
            return gens
        # the [respond] decision is carried out by the answer model (the base model): an adapter trained with
        # the loss on the control token only never learned text after [respond]
        texts = self.answer_model.generate([prompts[i] for i in answer], cfg, batch_size=len(answer))
        for i, g in zip(answer, texts):
            g.meta.update(decision_meta(records[i]), answered_by="base")
            gens[i] = g
        return gens

    @staticmethod
    def _records(proc: RefusalTokenProcessor, n: int) -> list[dict[str, Any]]:
        if len(proc.records) != n:
            raise RuntimeError(f"the policy saw {len(proc.records)} rows for a batch of {n}")
        return proc.records

    def describe(self, rp: RequestPolicy, meta: dict[str, Any]) -> dict[str, Any]:
        """Return the response's ``refusal`` object for one answer's ``meta``."""
        pol = rp.policy
        tok = meta.get("control_token")
        out: dict[str, Any] = {
            "control_token": tok,
            "category": meta.get("control_category"),
            "refused": bool(meta.get("refused")),
            "probs": meta.get("probs") or {},
            "policy": rp.source,
            "rule": pol.rule,
            "thresholds": dict(pol.thresholds) if pol.rule == "threshold" else {},
        }
        if pol.rule == "set":
            out.update(controlled=pol.controlled, set_threshold=pol.threshold)
        if "answered_by" in meta:
            out["answered_by"] = meta["answered_by"]
        return out

    def summary(self) -> dict[str, Any]:
        """Return what ``/v1/models`` tells about the refusal control (profiles, default, tokens)."""
        return {
            "adapter": Path(self.info["adapter"]).name if self.info.get("adapter") else None,
            "profiles": sorted(self.policies),
            "default_profile": self.default_name,
            "categories": {c: s for c, s in self.scheme.categories.items()} if self.scheme.mode == "category" else {},
            "tokens": self.scheme.tokens,
            "respond_token": RESPOND,
        }
