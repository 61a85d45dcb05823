"""The ``LanguageModel`` protocol that every backend implements, and its small value types."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]
Messages = list[Message]
PromptLike = str | Messages


@dataclass(frozen=True)
class GenerationConfig:
    """Per-call generation settings; ``temperature == 0`` (or ``do_sample=False``) means greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    system_prompt: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def do_sample(self) -> bool:
        """Return True when this config samples rather than decoding greedily."""
        return self.temperature > 0

    def with_(self, **kw: Any) -> GenerationConfig:
        """Return a copy with the given fields changed."""
        return replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict (used to key resumable runs)."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": list(self.stop),
            "system_prompt": self.system_prompt,
            "extra": self.extra,
        }


@dataclass
class Generation:
    """One generated answer: its text, the number of new tokens and why decoding stopped."""

    text: str
    n_tokens: int = 0
    finish_reason: str = "stop"
    meta: dict[str, Any] = field(default_factory=dict)


def to_messages(prompt: PromptLike, system_prompt: str | None = None) -> Messages:
    """Return a chat message list for a plain prompt or an existing message list."""
    msgs: Messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system_prompt and not any(m.get("role") == "system" for m in msgs):
        msgs = [{"role": "system", "content": system_prompt}] + msgs
    return msgs


@runtime_checkable
class LanguageModel(Protocol):
    """Anything that answers batches of chat prompts.

    ``name`` identifies the model in run stores and reports; ``generate`` returns one Generation per prompt,
    in order. Backends choose their own batching/concurrency inside one call.
    """

    name: str

    def generate(self, prompts: list[PromptLike], config: GenerationConfig | None = None) -> list[Generation]: ...
