"""The guard pre-filter of ``refusalkit serve --guard DIR``: a prompt-level score read before generation.

``DIR`` is one of two artifacts, told apart by their files:

- a **Latent Guard** (``card.json`` of kind ``refusalkit-latent-directions`` with a fitted ``guard``, from
  ``refusalkit latent extract`` or ``latent guard-fit``): ``p_harmful`` from the served model's own residual
  stream at the guard's positions and layers (one forward pass, stopped after the deepest layer it reads).
  It must have been extracted from the model it reads: the card's weights fingerprint is checked against
  the loaded model's;
- a **prompt predictor** (``meta.json`` of kind ``prompt_classifier``, from ``refusalkit predict train`` or
  ``predict bootstrap``): ``p_refusal`` of the last user message, for the model named by its
  ``target_model``, which must be the served model (the ``--model`` value, or the same folder).

Both artifacts' manifests (SHA-256 of every file) are checked when the folder is opened, before the model
loads. A prompt whose score reaches the threshold is *flagged*; with the action ``refuse`` it is answered
with a fixed refusal without generating, with ``flag`` it is generated as usual; either way the response
carries a ``guard`` object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refusalkit.errors import RefusalkitError
from refusalkit.models.base import Generation

log = logging.getLogger(__name__)

GUARD_ACTIONS = ("refuse", "flag")
#: the answer to a prompt the guard refuses (no generation happens for it)
GUARD_REFUSAL = "I'm sorry, but I can't help with that."
LATENT_KIND = "refusalkit-latent-directions"
PREDICTOR_KIND = "prompt_classifier"


def _last_user_text(messages: list[dict[str, str]]) -> str:
    users = [m.get("content", "") for m in messages if m.get("role") == "user"]
    return users[-1] if users else (messages[-1].get("content", "") if messages else "")


def _same_model(a: str, b: str) -> bool:
    """Return whether two ``--model`` values name the same model (equal strings, or the same folder)."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()


@dataclass
class PromptGuard:
    """An opened guard artifact: what it is, where, its threshold and action; :meth:`bind` attaches the
    served model (checked), :meth:`check` scores prompts."""

    kind: str  # "latent" or "predictor"
    path: Path
    threshold: float
    action: str
    fitted_for: str  # the model the artifact was made for, as its card names it
    artifact: Any = None  # latent.artifact.DirectionArtifact or predict.prompt_model.PromptClassifier
    model: Any = None  # the HFModel a latent guard reads (set by bind)

    @property
    def score_name(self) -> str:
        """Return what the score is: ``p_harmful`` (Latent Guard) or ``p_refusal`` (prompt predictor)."""
        return "p_harmful" if self.kind == "latent" else "p_refusal"

    def bind(self, model: Any, model_spec: str) -> None:
        """Attach the served model (an HFModel; for a Latent Guard, the model it reads); raise RefusalkitError
        unless the guard was made for it (weights fingerprint, or the predictor's ``target_model``)."""
        if self.kind == "latent":
            try:
                self.artifact.check_model(model.model, model_spec)
            except RefusalkitError as e:
                raise RefusalkitError(f"--guard {self.path}: {e}") from None
            self.model = model
            return
        if not _same_model(self.fitted_for, model_spec):
            raise RefusalkitError(
                f"--guard {self.path}: this prompt predictor was trained on the refusals of "
                f"{self.fitted_for!r} (its target_model), not of the served model {model_spec!r}; train one for "
                f"it with `refusalkit predict bootstrap --model {model_spec}`"
            )

    def scores(self, prompts: list[list[dict[str, str]]]) -> np.ndarray:
        """Return each prompt's score in 0..1 (``p_harmful`` or ``p_refusal``). Runs the model for a Latent
        Guard: call it where generation runs (the engine's worker thread, lock held)."""
        if not prompts:
            return np.zeros(0)
        if self.kind == "latent":
            from refusalkit.latent.use import p_harmful

            if self.model is None:
                raise RuntimeError("PromptGuard.bind was not called")
            return np.asarray(p_harmful(self.model, self.artifact, prompts, batch_size=len(prompts)), dtype=float)
        return np.asarray(self.artifact.p_refusal([_last_user_text(m) for m in prompts]), dtype=float)

    def check(self, prompts: list[list[dict[str, str]]]) -> list[dict[str, Any]]:
        """Return the response's ``guard`` object for each prompt (score, threshold, flagged, action)."""
        return [self.describe(float(s)) for s in self.scores(prompts)]

    def describe(self, score: float) -> dict[str, Any]:
        """Return the ``guard`` object for one score."""
        flagged = bool(score >= self.threshold)
        return {
            "kind": "latent_guard" if self.kind == "latent" else "prompt_predictor",
            "score_name": self.score_name,
            "score": round(score, 6),
            "threshold": self.threshold,
            "flagged": flagged,
            "action": self.action,
            "refused": flagged and self.action == "refuse",
        }

    def summary(self) -> dict[str, Any]:
        """Return what ``/v1/models`` tells about the guard."""
        return {
            "kind": "latent_guard" if self.kind == "latent" else "prompt_predictor",
            "artifact": self.path.name,
            "score_name": self.score_name,
            "threshold": self.threshold,
            "action": self.action,
        }


def open_guard(path: str | Path, *, action: str = "refuse", threshold: float = 0.5) -> PromptGuard:
    """Return the guard in ``path`` after checking its manifest and card (no model is loaded here, except a
    prompt predictor's own feature models); raise RefusalkitError naming the folder and what is wrong."""
    if action not in GUARD_ACTIONS:
        raise RefusalkitError(f"--guard-action {action!r}: use one of {', '.join(GUARD_ACTIONS)}")
    if not 0.0 <= threshold <= 1.0 or threshold != threshold:
        raise RefusalkitError(f"--guard-threshold {threshold}: must be in [0, 1]")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise RefusalkitError(f"--guard {p}: no such folder")
    if (p / "card.json").is_file() and not (p / "meta.json").is_file():
        from refusalkit.latent.artifact import load_artifact
        from refusalkit.latent.use import guard_of

        art = load_artifact(p)  # verifies the manifest, kind and format
        try:
            guard_of(art)  # the card holds a guard that parses
        except (KeyError, TypeError, ValueError) as e:
            raise RefusalkitError(f"--guard {p}: damaged guard in card.json ({type(e).__name__}: {e})") from None
        except RefusalkitError as e:
            raise RefusalkitError(
                f"--guard {p}: {e}; fit one with `refusalkit latent guard-fit --direction {p}`"
            ) from None
        fitted = str((art.card.get("model") or {}).get("id") or "unknown")
        return PromptGuard("latent", p, threshold, action, fitted, art)
    if (p / "meta.json").is_file():
        from refusalkit.predict.prompt_model import PromptClassifier

        clf = PromptClassifier.load(p)  # verifies the manifest and kind
        return PromptGuard("predictor", p, threshold, action, clf.target_model, clf)
    raise RefusalkitError(
        f"--guard {p}: neither a Latent Guard (card.json from `refusalkit latent extract`) nor a prompt "
        "predictor (meta.json from `refusalkit predict train`)"
    )


def guard_refusal(tokenizer: Any) -> Generation:
    """Return the answer to a prompt the guard refuses: the fixed refusal, ``finish_reason`` ``stop``."""
    n = len(tokenizer(GUARD_REFUSAL, add_special_tokens=False)["input_ids"])
    return Generation(text=GUARD_REFUSAL, n_tokens=n, finish_reason="stop")
