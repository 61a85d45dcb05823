"""Refusal-token control at inference: a policy decides, from the first response position's control-token
probabilities, which control token to force; a transformers ``LogitsProcessor`` applies it during
``generate``; ``logit_bias`` carries the closest equivalent to OpenAI-compatible servers.

Decision rules (``q`` = softmax(logits / temperature) over the whole vocabulary at the first position):

- ``threshold`` (per category, refusalkit's default): every refusal token k with ``q_k >= t_k`` is a
  candidate; the candidate with the largest ``q_k`` is emitted, else ``[respond]``. A category without a
  threshold uses the model's own preference (``q_k >= q[respond]``).
- ``argmax`` (the paper's default): the control token with the largest ``q``.
- ``set`` (the paper's released code): ``c* = argmax``; if ``c*`` is a refusal token of a category in the
  controlled set S, emit it only when ``q_c* >= t`` (one threshold), else ``[respond]``; otherwise ``c*``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refusalkit.errors import RefusalkitError
from refusalkit.tokens.scheme import RESPOND, TokenScheme

RULES = ("threshold", "argmax", "set")


@dataclass
class Policy:
    """A refusal policy over a token scheme.

    ``thresholds`` maps a category (``"*"`` in the single scheme) to its threshold in [0, 1];
    ``controlled``/``threshold`` are the set S and its threshold for the ``set`` rule.
    """

    scheme: TokenScheme
    rule: str = "threshold"
    thresholds: dict[str, float] = field(default_factory=dict)
    temperature: float = 1.0
    controlled: list[str] | None = None
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise RefusalkitError(f"unknown policy rule {self.rule!r}; use one of {', '.join(RULES)}")
        if not self.temperature > 0:
            raise RefusalkitError(f"temperature must be > 0, got {self.temperature}")
        known = set(self.scheme.categories) if self.scheme.mode == "category" else {"*"}
        for k, v in self.thresholds.items():
            if k not in known:
                raise RefusalkitError(f"threshold for unknown category {k!r}; known: {', '.join(sorted(known))}")
            if not (0.0 <= float(v) <= 1.0):
                raise RefusalkitError(f"threshold for {k!r} must be in [0, 1], got {v}")
        for k in self.controlled or []:
            if k not in known:
                raise RefusalkitError(f"controlled category {k!r} is not in the scheme")

    # --- the decision ------------------------------------------------------------------------------------
    def categories(self) -> list[str]:
        """Return the category of each refusal token, in token order (``["*"]`` in the single scheme)."""
        return ["*"] if self.scheme.mode == "single" else list(self.scheme.categories)

    def decide(self, q: np.ndarray) -> np.ndarray:
        """Return the index (into ``scheme.tokens``) of the control token to emit for each row of ``q``.

        ``q`` has shape ``[n, len(scheme.tokens)]``: the probabilities of the refusal tokens, then of
        ``[respond]``, already computed at this policy's temperature.
        """
        q = np.asarray(q, dtype=np.float64)
        n_ref = q.shape[1] - 1
        respond = n_ref
        if self.rule == "argmax":
            return q.argmax(1)
        if self.rule == "set":
            c = q.argmax(1)
            cats = self.categories()
            ctrl = np.array([cats[j] in set(self.controlled or cats) if j < n_ref else False for j in range(n_ref + 1)])
            gated = ctrl[c] & (q[np.arange(len(q)), c] < self.threshold)
            return np.where(gated, respond, c)
        t = self.threshold_vector()
        passes = np.where(np.isnan(t)[None, :], q[:, :n_ref] >= q[:, [respond]], q[:, :n_ref] >= t[None, :])
        masked = np.where(passes, q[:, :n_ref], -1.0)
        best = masked.argmax(1)
        return np.where(passes.any(1), best, respond)

    def threshold_vector(self) -> np.ndarray:
        """Return the thresholds in refusal-token order (NaN where a category has none)."""
        return np.array([self.thresholds.get(c, np.nan) for c in self.categories()], dtype=np.float64)

    def refuses(self, q: np.ndarray) -> np.ndarray:
        """Return a boolean per row: does the policy emit a refusal token?"""
        return self.decide(q) < len(self.scheme.tokens) - 1

    # --- serialisation -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return the policy as JSON-ready data (the ``policy`` part of a profile)."""
        d = {"rule": self.rule, "temperature": self.temperature, "thresholds": dict(self.thresholds)}
        if self.rule == "set":
            d.update(controlled=self.controlled, threshold=self.threshold)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], scheme: TokenScheme) -> Policy:
        """Return the policy stored by :meth:`to_dict`."""
        return cls(
            scheme=scheme,
            rule=d.get("rule", "threshold"),
            thresholds=dict(d.get("thresholds") or {}),
            temperature=float(d.get("temperature", 1.0)),
            controlled=d.get("controlled"),
            threshold=float(d.get("threshold", 0.5)),
        )

    # --- OpenAI-compatible servers ------------------------------------------------------------------------
    def logit_bias(self, token_ids: dict[str, int]) -> tuple[dict[str, float], list[str]]:
        """Return ``(logit_bias, notes)``: the biases that make an OpenAI-compatible server's first response
        token follow this policy as closely as biases can, and what is lost.

        Use them on a request with ``max_tokens=1`` (the first response token), then continue the answer
        in a second request with the chosen token appended and no biases (e.g. vLLM's
        ``continue_final_message``); see docs/refusal-tokens.md.
        Every control token is lifted by +30 so that the first token is one of them (a server has no
        "choose among these" option), and each refusal token k is shifted against ``[respond]`` by
        ``-log(t_k / (1 - t_k))``: with greedy decoding the server then emits token k over ``[respond]``
        iff ``q_k / q_respond >= t_k / (1 - t_k)``. That equals the policy's ``q_k >= t_k`` exactly when the
        control tokens hold (nearly) all the probability at the first position, as after training; where
        several refusal tokens pass, the server picks the largest biased logit, not the largest ``q``.
        The softmax temperature cannot be expressed (biases act before the server's own sampling).
        """
        notes = [
            "apply to a max_tokens=1 request (temperature 0), then continue with the chosen token "
            "appended and no biases: biases act at every position",
            "the server must serve the adapter-merged model with the control tokens in its vocabulary "
            "(export with `refusalkit tokens merge`)",
            "a threshold t becomes an odds shift log(t/(1-t)) against [respond]: exact when the control "
            "tokens hold nearly all probability at the first position, approximate otherwise",
            "the temperature of the policy is not expressible with biases",
        ]
        cats = self.categories()
        toks = self.scheme.refusal_tokens
        lift = 30.0
        bias: dict[str, float] = {str(token_ids[t]): lift for t in self.scheme.tokens}
        if self.rule == "argmax":
            return bias, notes + ["argmax: all control tokens lifted equally, the model's own choice decides"]
        for c, tok in zip(cats, toks):
            if self.rule == "set":
                if c not in set(self.controlled or cats):
                    continue
                t = self.threshold
            else:
                t_c = self.thresholds.get(c)
                if t_c is None:
                    continue
                t = t_c
            if t <= 0.0:
                shift = 70.0
            elif t >= 1.0:
                shift = -130.0
            else:
                shift = -_logit(t)
            bias[str(token_ids[tok])] = round(max(-100.0, min(100.0, lift + shift)), 4)
        if self.rule == "set":
            notes.append("the set rule's 'argmax first, then threshold' becomes the same per-token odds shift")
        return bias, notes


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def control_probs(logits: Any, token_ids: list[int], temperature: float = 1.0) -> np.ndarray:
    """Return ``[n, len(token_ids)]`` probabilities of the control tokens from first-position logits.

    The softmax runs over the whole vocabulary at ``temperature`` (as in the paper), so the control
    tokens' probabilities need not sum to one.
    """
    import torch

    x = torch.as_tensor(logits).float() / temperature
    return torch.softmax(x, dim=-1)[:, token_ids].cpu().numpy().astype(np.float64)


class RefusalTokenProcessor:
    """A transformers ``LogitsProcessor`` that applies a :class:`Policy` at the first response position.

    At the first generation step it computes the control-token probabilities, lets the policy choose,
    and forces the chosen token (every other logit set to -inf). At later steps it only masks the control
    tokens (they belong to the first position). With ``policy=None`` the first token is left to the model.
    With ``emit_respond=False`` a ``[respond]`` decision is carried out without writing the token: the
    model starts its answer itself, control tokens masked (for adapters trained with the loss on the
    control token only, whose ``[respond]`` was never followed by text in training). With ``end_id`` (the
    end-of-sequence token) a ``[respond]`` row ends at once instead: another model writes its answer, and a
    batch whose rows all answer stops after one step rather than generating text that is thrown away. With
    ``refusal_prefixes`` (refusal token -> token ids; for decision heads on a frozen model, which has never
    seen a control token as input) a refusal is not written as its token: the row is forced through the
    token ids of a refusal opener instead, and the model continues it in its own words. A new ``generate``
    call is recognised by its prompt (the stored prompt is no longer a prefix of the inputs), so one
    processor can serve many calls. :attr:`records` holds, per row of each
    call, the chosen token, its category and the control-token probabilities.
    """

    def __init__(
        self,
        policy: Policy | None,
        token_ids: dict[str, int],
        *,
        emit_respond: bool = True,
        end_id: int | None = None,
        refusal_prefixes: dict[str, list[int]] | None = None,
    ):
        self.policy = policy
        self.emit_respond = emit_respond
        self.end_id = end_id
        if refusal_prefixes is not None and any(not v for v in refusal_prefixes.values()):
            raise RefusalkitError("a refusal opener must have at least one token")
        self.refusal_prefixes = refusal_prefixes
        self._forced: list[list[int]] = []  # per row of the current call: the token ids still to force
        self.tokens = policy.scheme.tokens if policy is not None else list(token_ids)
        self.ids = [token_ids[t] for t in self.tokens]
        self.records: list[dict[str, Any]] = []
        self._prompt = None

    def reset(self) -> None:
        """Forget the stored prompt and records."""
        self.records = []
        self._prompt = None
        self._forced = []

    def _is_first(self, input_ids: Any) -> bool:
        import torch

        p = self._prompt
        if p is None or input_ids.shape[0] != p.shape[0] or input_ids.shape[1] <= p.shape[1]:
            return True
        return not torch.equal(input_ids[:, : p.shape[1]], p)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        """Return the scores, forced to the chosen control token at the first response position."""
        import torch

        if not self._is_first(input_ids):
            # control tokens belong to the first response position only; their output rows are fitted
            # for that position and would otherwise keep winning later (one indexed write per step)
            scores[:, self.ids] = float("-inf")
            if self._forced and self._prompt is not None:
                self._force_prefix(input_ids.shape[1] - self._prompt.shape[1], scores)
            return scores
        self._prompt = input_ids.clone()
        self._forced = []
        if self.policy is None:
            if self.refusal_prefixes is not None:
                scores[:, self.ids] = float("-inf")  # a frozen model's free answer never starts with a control token
            return scores
        q = control_probs(scores, self.ids, self.policy.temperature)
        choice = self.policy.decide(q)
        forced = torch.full_like(scores, float("-inf"))
        rows = torch.arange(scores.shape[0], device=scores.device)
        cols = torch.as_tensor([self.ids[c] for c in choice], device=scores.device)
        forced[rows, cols] = 0.0
        if self.refusal_prefixes is not None:
            # a refusal row starts the opener instead of its token; [respond] rows answer as the model would
            self._forced = [
                self.refusal_prefixes.get(self.tokens[c], []) if c != len(self.ids) - 1 else [] for c in choice
            ]
            free = scores.clone()
            free[:, self.ids] = float("-inf")
            forced = free
            self._force_prefix(0, forced)
        elif self.end_id is not None:
            # [respond] rows end here: their answer is written by another model (PolicyModel.answer_model)
            respond_rows = torch.as_tensor(choice == len(self.ids) - 1, device=scores.device)
            end = torch.full_like(scores, float("-inf"))
            end[:, self.end_id] = 0.0
            forced = torch.where(respond_rows[:, None], end, forced)
        elif not self.emit_respond:
            # answer without writing [respond]: the model's own first token, control tokens masked
            respond_rows = torch.as_tensor(choice == len(self.ids) - 1, device=scores.device)
            free = scores.clone()
            free[:, self.ids] = float("-inf")
            forced = torch.where(respond_rows[:, None], free, forced)
        for i, c in enumerate(choice):
            tok = self.tokens[c]
            self.records.append(
                {
                    "token": tok,
                    "category": self.policy.scheme.token_category(tok),
                    "refused": tok != RESPOND,
                    "probs": {t: float(q[i, j]) for j, t in enumerate(self.tokens)},
                }
            )
        return forced

    def _force_prefix(self, step: int, scores: Any) -> None:
        """Force, in place, each refusal row's opener token number ``step`` (rows past their opener are free)."""
        for i, ids in enumerate(self._forced):
            if step < len(ids):
                scores[i, :] = float("-inf")
                scores[i, ids[step]] = 0.0


def load_profile(path: str | os.PathLike, adapter_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Return a calibration profile's JSON: a path, or the name of a profile shipped in ``adapter_dir/profiles``
    (default: the bundled model's adapter; a trained adapter folder without that name falls back to it, a
    shipped adapter does not: its profiles are its own).

    Raises RefusalkitError for a missing or malformed profile.
    """
    from refusalkit.artifacts import verify
    from refusalkit.tokens.model import adapters_root, bundled_adapter_dir

    p = Path(path)
    if not p.is_file():
        homes = [Path(adapter_dir)] if adapter_dir is not None else []
        shipped = bool(homes) and homes[0].resolve().parent == adapters_root().resolve()
        if not shipped and not any((h / "profiles" / f"{path}.json").is_file() for h in homes):
            homes.append(bundled_adapter_dir())
        home = next((h for h in homes if (h / "profiles" / f"{path}.json").is_file()), None)
        if home is not None:
            verify(home)  # a shipped profile is part of the adapter's manifest
            p = home / "profiles" / f"{path}.json"
        else:
            names = sorted({x.stem for h in homes for x in (h / "profiles").glob("*.json")} - {"curves"})
            raise RefusalkitError(
                f"no profile {str(path)!r}: neither a file nor a shipped profile ({', '.join(names) or 'none shipped'})"
            )
    try:
        prof = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RefusalkitError(f"{p}: not a JSON calibration profile ({e})") from None
    if not isinstance(prof, dict) or "policy" not in prof or "scheme" not in prof:
        raise RefusalkitError(f"{p}: not a calibration profile (needs 'scheme' and 'policy')")
    prof["__path__"] = str(p)
    return prof


def policy_from_profile(prof: dict[str, Any]) -> Policy:
    """Return the policy of a loaded profile."""
    return Policy.from_dict(prof["policy"], TokenScheme.from_dict(prof["scheme"]))


__all__ = ["Policy", "RefusalTokenProcessor", "control_probs", "load_profile", "policy_from_profile", "asdict"]
