"""Per-request refusal control for ``refusalkit serve --adapter A``.

The server holds one refusal-token model (the base model with adapter ``A`` merged, control tokens in its
tokenizer), the named profiles it may apply (the adapter's shipped ``profiles/*.json`` and the files given
with ``--profile-file``) and a default policy (``--profile``; without it ``argmax``, as
``refusalkit tokens generate`` without a profile). A request picks its policy with the body field
``"refusal": {"profile": NAME}`` or ``{"thresholds": {CATEGORY: T, ...}}``; the policy is a
``tokens.policy.Policy`` and generation goes through ``tokens.generate.PolicyModel``, the code
``refusalkit tokens generate`` runs, so the server and the CLI make the same decision for the same prompt
and policy.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refusalkit.errors import RefusalkitError
from refusalkit.serve.errors import APIError
from refusalkit.tokens.calibrate import parse_targets
from refusalkit.tokens.generate import PolicyModel
from refusalkit.tokens.policy import Policy, policy_from_profile
from refusalkit.tokens.scheme import RESPOND, TokenScheme

log = logging.getLogger(__name__)

DEFAULT_PROFILE = "argmax"


@dataclass
class RequestPolicy:
    """The policy one request runs under: the ``Policy``, where it came from, and a key that groups the
    requests which may share a batch (the same policy, whatever its name)."""

    policy: Policy
    source: str  # "profile:NAME", "thresholds" or "default:NAME"
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = json.dumps(self.policy.to_dict(), sort_keys=True)


def _read_profile_file(path: Path) -> dict[str, Any]:
    try:
        prof = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RefusalkitError(f"--profile-file {path}: not a readable JSON profile ({type(e).__name__})") from None
    if not isinstance(prof, dict) or not isinstance(prof.get("policy"), dict) or "scheme" not in prof:
        raise RefusalkitError(f"--profile-file {path}: not a calibration profile (needs 'scheme' and 'policy')")
    return prof


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
    ):
        self.hf = hf
        self.scheme = scheme
        self.token_ids = token_ids
        self.info = info
        self.emit_respond = emit_respond
        self.answer_model = answer_model
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
        from refusalkit.tokens.generate import answer_model_for, emits_respond
        from refusalkit.tokens.model import load_token_model, resolve_adapter

        adir = resolve_adapter(adapter)
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
        return cls(
            hf,
            scheme,
            ids,
            info,
            profiles=profiles,
            default=profile,
            emit_respond=emits_respond(info),
            answer_model=answer_model_for(model, info, batch_size),
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
    def generate(self, prompts: list[Any], cfg: Any, policy: Policy, batch_size: int) -> list[Any]:
        """Return one Generation per prompt under ``policy`` (``meta``: control_token, control_category,
        refused, probs), through ``PolicyModel`` as ``tokens generate`` does."""
        pm = PolicyModel(
            self.hf, policy, self.token_ids, emit_respond=self.emit_respond, answer_model=self.answer_model
        )
        return pm.generate(prompts, cfg, batch_size=batch_size)

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
