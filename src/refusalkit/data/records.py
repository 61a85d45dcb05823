"""Plain dataclass records that every command reads and writes, one JSON object per line.

Fields a source has beyond the dataclass fields are kept in ``meta`` and written back flat, so a row's
extra columns survive a round trip through any refusalkit command.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="_Record")


class _Record:
    _core: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the record as one flat JSON-ready dict (``meta`` keys inlined, ``None`` fields left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name == "meta" or f.metadata.get("internal"):
                continue
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = v
        for k, v in self.meta.items():  # type: ignore[attr-defined]
            if k not in out:
                out[k] = v
        return out

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any]) -> T:
        """Return a record built from a flat dict; unknown keys go to ``meta``.

        Internal fields (``origin``) are never read from the dict: a source's own column of that name is
        kept in ``meta`` like any other extra column."""
        names = {
            f.name
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if not f.metadata.get("internal")
        }
        kwargs = {k: v for k, v in d.items() if k in names and k != "meta"}
        meta = dict(d.get("meta") or {})
        meta.update({k: v for k, v in d.items() if k not in names})
        return cls(**kwargs, meta=meta)  # type: ignore[call-arg]


@dataclass
class Example(_Record):
    """A prompt to send to a model.

    ``expected`` is the behaviour a benchmark wants: ``"refuse"`` (harmful or should-not-comply prompts,
    measuring safety), ``"comply"`` (benign or contrast prompts, measuring over-refusal) or ``None``.
    """

    id: str
    prompt: str
    label: str | None = None
    category: str | None = None
    expected: str | None = None
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: ``FILE:LINE`` the prompt was read from, for error messages; never written out.
    origin: str | None = field(default=None, compare=False, repr=False, metadata={"internal": True})


@dataclass
class Response(_Record):
    """A model's answer to an :class:`Example` (its fields are copied so a response row stands alone)."""

    id: str
    prompt: str
    response: str
    model: str | None = None
    label: str | None = None
    category: str | None = None
    expected: str | None = None
    source: str | None = None
    finish_reason: str | None = None
    n_tokens: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_example(cls, ex: Example, response: str, **kw: Any) -> Response:
        """Return a response to ``ex`` carrying its id, prompt, labels and extra fields."""
        return cls(
            id=ex.id,
            prompt=ex.prompt,
            response=response,
            label=ex.label,
            category=ex.category,
            expected=ex.expected,
            source=ex.source,
            meta=dict(ex.meta),
            **kw,
        )


@dataclass
class Verdict(_Record):
    """A detector's judgement of one response.

    ``verdict`` is one of the taxonomy labels (``full_compliance``, ``partial_refusal``, ``full_refusal``,
    ``redirection``); ``p_refusal`` is the probability that the response is not full compliance.
    """

    id: str
    verdict: str
    p_refusal: float
    detector: str | None = None
    prompt: str | None = None
    response: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
