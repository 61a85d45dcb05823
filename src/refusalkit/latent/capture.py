"""Residual-stream activations of a chat model at chosen prompt positions, at the input of every decoder layer.

Positions (``parse_positions``):
- ``inst``: the last token of the user's instruction (Zhao et al.'s ``t_inst``);
- ``post``: every template token after the instruction (the assistant header; ``t_post_inst`` is the last);
- ``last``: the last prompt token only; ``-1,-3``: explicit offsets from the end of the prompt;
- ``all``: every real (non-padding) token, returned per prompt.

Prompts are chat-templated and left-padded by ``HFModel.encode``, so offsets from the end address the same
template tokens in every row. Activations are gathered inside forward pre-hooks, so only the chosen positions
are ever kept; ``capture_to_disk`` writes one safetensors shard per chunk for sets that do not fit in memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from refusalkit.errors import RefusalkitError
from refusalkit.latent.layers import layer_input, layer_stack

log = logging.getLogger(__name__)
MARKER = "QZXQZX"


def template_suffix_ids(hf: Any, system_prompt: str | None = None) -> list[int]:
    """Return the token ids the chat template puts after the user's instruction (the post-instruction tokens)."""
    text = hf.render(MARKER, system_prompt)
    i = text.rfind(MARKER)
    if i < 0:
        raise RefusalkitError("the chat template does not contain the user's message verbatim")
    suffix = text[i + len(MARKER) :]
    return hf.tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []


@dataclass(frozen=True)
class Positions:
    """Which prompt positions to keep: ``offsets`` from the end (-1 = last token), or every token (``all``).

    ``names`` label each offset for reports and artifacts (``inst``, ``post-5`` ... ``post-1``).
    """

    offsets: tuple[int, ...]
    names: tuple[str, ...]
    all: bool = False


def parse_positions(spec: str, n_post: int) -> Positions:
    """Return the Positions for a spec such as ``inst``, ``post``, ``inst,post``, ``last``, ``-1,-2`` or ``all``.

    ``n_post`` is the number of template tokens after the instruction (``len(template_suffix_ids(...))``).
    """
    if spec.strip() == "all":
        return Positions((), (), all=True)
    offs: list[int] = []
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == "inst":
            new = [(-(n_post + 1), "inst")]
        elif part == "post":
            if n_post == 0:
                raise RefusalkitError("this chat template puts no tokens after the instruction: no 'post' positions")
            new = [(-k, f"post-{k}") for k in range(n_post, 0, -1)]
        elif part == "last":
            new = [(-1, "post-1" if n_post else "inst")]
        else:
            try:
                k = int(part)
            except ValueError:
                raise RefusalkitError(
                    f"bad position {part!r}: use inst, post, last, all or negative offsets like -1,-2"
                ) from None
            if k >= 0:
                raise RefusalkitError(f"bad position {part!r}: offsets count from the end and are negative")
            new = [(k, "inst" if k == -(n_post + 1) else (f"post{k}" if -k <= n_post else f"pos{k}"))]
        for o, n in new:
            if o not in offs:
                offs.append(o)
                names.append(n)
    if not offs:
        raise RefusalkitError(f"no positions in {spec!r}")
    return Positions(tuple(offs), tuple(names))


def check_suffix(input_ids: torch.Tensor, suffix: list[int]) -> None:
    """Raise RefusalkitError unless every row ends with the template suffix (so offsets address template tokens)."""
    if not suffix:
        return
    tail = input_ids[:, -len(suffix) :].tolist()
    bad = [i for i, row in enumerate(tail) if row != suffix]
    if bad:
        raise RefusalkitError(
            f"{len(bad)} prompt(s) do not end with the chat template's post-instruction tokens "
            "(the tokenizer merged them with the text); use --positions with explicit offsets"
        )


class _Enough(Exception):
    """Raised inside the forward pass once the last wanted layer has been captured."""


@torch.inference_mode()
def capture_batches(
    hf: Any,
    prompts: list[Any],
    positions: Positions,
    *,
    batch_size: int = 8,
    system_prompt: str | None = None,
    layers: list[int] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[torch.Tensor | list[torch.Tensor]]:
    """Yield residual-stream activations batch by batch, in input order (float32, CPU).

    Each item is ``[batch, n_layers, n_positions, d_model]`` (the input of each selected layer at each
    position), or for ``positions.all`` a list of ``[n_layers, n_tokens_i, d_model]`` per prompt.
    """
    stack = layer_stack(hf.model)
    sel = list(range(len(stack))) if layers is None else list(layers)
    suffix = template_suffix_ids(hf, system_prompt)
    state: dict[str, Any] = {}

    def hook_for(j: int):
        def pre(_m, args, kwargs):
            h = layer_input(args, kwargs)
            if h.shape[1] != state["T"]:
                return None  # not the prompt pass (a cached decode step)
            if positions.all:
                state["acts"][j] = h.detach().float().cpu()
            else:
                state["acts"][j] = h[:, list(positions.offsets), :].detach().float().cpu()
            return None

        return pre

    last = max(sel) if sel else -1

    def stop(_m, _args, _kwargs):
        if state.get("armed"):
            raise _Enough  # every wanted layer's input is captured: skip the rest of the model

    handles = [stack.layers[li].register_forward_pre_hook(hook_for(j), with_kwargs=True) for j, li in enumerate(sel)]
    if positions.all or last + 1 >= len(stack):
        pass
    else:
        handles.append(stack.layers[last + 1].register_forward_pre_hook(stop, with_kwargs=True))
    try:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            enc = hf.encode(batch, system_prompt)
            if not positions.all:
                check_suffix(enc["input_ids"], suffix)
                if max(-o for o in positions.offsets) > enc["input_ids"].shape[1]:
                    raise RefusalkitError("a position offset reaches before the start of the prompt")
            state["T"] = enc["input_ids"].shape[1]
            state["acts"] = [None] * len(sel)
            state["armed"] = True
            try:
                try:
                    hf.model(**enc, use_cache=False, logits_to_keep=1)  # the output head at one position only
                except TypeError:
                    hf.model(**enc, use_cache=False)
            except _Enough:
                pass
            finally:
                state["armed"] = False
            if positions.all:
                full = torch.stack(state["acts"], dim=1)  # [b, L, T, d]
                mask = enc["attention_mask"].bool().cpu()
                yield [full[b][:, mask[b], :] for b in range(full.shape[0])]
            else:
                yield torch.stack(state["acts"], dim=1)
            if on_batch:
                on_batch(len(batch))
    finally:
        for h in handles:
            h.remove()


def capture(hf: Any, prompts: list[Any], positions: Positions, **kw: Any) -> torch.Tensor:
    """Return activations ``[n, n_layers, n_positions, d_model]`` for all prompts (see ``capture_batches``)."""
    if positions.all:
        raise RefusalkitError("capture() keeps fixed positions; use capture_batches or capture_to_disk for 'all'")
    parts = list(capture_batches(hf, prompts, positions, **kw))
    if not parts:
        raise RefusalkitError("no prompts to capture")
    return torch.cat(parts)  # type: ignore[arg-type]


class MeanAccumulator:
    """Running sum and count of activations, so a mean over any number of prompts needs one batch in memory."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.n = 0

    def add(self, acts: torch.Tensor) -> None:
        """Add a batch ``[b, ...]`` of activations (float64 sums, so long runs do not lose precision)."""
        s = acts.double().sum(0)
        self.total = s if self.total is None else self.total + s
        self.n += acts.shape[0]

    def mean(self) -> torch.Tensor:
        """Return the mean activation (float32); raises RefusalkitError when nothing was added."""
        if self.total is None or self.n == 0:
            raise RefusalkitError("no activations to average")
        return (self.total / self.n).float()


def capture_mean(hf: Any, prompts: list[Any], positions: Positions, **kw: Any) -> tuple[torch.Tensor, int]:
    """Return ``(mean activation [n_layers, n_positions, d_model], n_prompts)`` without keeping every row."""
    acc = MeanAccumulator()
    for acts in capture_batches(hf, prompts, positions, **kw):
        acc.add(acts)  # type: ignore[arg-type]
    return acc.mean(), acc.n


def capture_to_disk(
    hf: Any, prompts: list[Any], positions: Positions, out_dir: str | Path, *, chunk: int = 256, **kw: Any
) -> Path:
    """Stream activations to ``out_dir`` as safetensors shards of ``chunk`` prompts plus an ``index.json``;
    return the folder. For ``all`` positions each prompt is its own tensor ``p{i}`` of ``[L, T_i, d]``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    buf: list[torch.Tensor] = []
    first = 0

    def flush() -> None:
        nonlocal buf, first
        if not buf:
            return
        name = f"shard-{len(shards):05d}.safetensors"
        if positions.all:
            save_file({f"p{first + i}": t.contiguous() for i, t in enumerate(buf)}, str(out / name))
        else:
            save_file({"acts": torch.cat(buf).contiguous()}, str(out / name))
        n = len(buf) if positions.all else sum(t.shape[0] for t in buf)
        shards.append({"file": name, "first": first, "n": n})
        first += n
        buf = []

    for acts in capture_batches(hf, prompts, positions, **kw):
        buf.extend(acts) if isinstance(acts, list) else buf.append(acts)
        if (len(buf) if positions.all else sum(t.shape[0] for t in buf)) >= chunk:
            flush()
    flush()
    (out / "index.json").write_text(
        json.dumps({"positions": list(positions.names), "all": positions.all, "n": first, "shards": shards}, indent=1),
        encoding="utf-8",
    )
    return out


def load_shards(folder: str | Path) -> Iterator[torch.Tensor]:
    """Yield the activation tensors written by ``capture_to_disk``, shard by shard."""
    from safetensors.torch import load_file

    folder = Path(folder)
    idx = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    for sh in idx["shards"]:
        d = load_file(str(folder / sh["file"]))
        if idx["all"]:
            yield from (d[f"p{sh['first'] + i}"] for i in range(sh["n"]))
        else:
            yield d["acts"]
