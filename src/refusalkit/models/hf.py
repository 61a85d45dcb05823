"""``HFModel``: any local transformers folder or Hugging Face id, with batched chat generation and the
white-box access (next-token log-probabilities, hidden states) that latent analysis and refusal tokens need.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from refusalkit.errors import ModelSpecError, RefusalkitError
from refusalkit.models.base import Generation, GenerationConfig, PromptLike
from refusalkit.models.context import ContextBudget, context_size, render_chat


def _truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class HFModel:
    """A transformers causal LM behind the ``LanguageModel`` protocol.

    ``path_or_id`` is a local folder or a hub id (offline, an uncached id fails fast with a clear message).
    Prompts are chat-templated, batched ``batch_size`` at a time with left padding, and sorted by length so
    that a batch wastes little on padding; results come back in input order.
    """

    def __init__(
        self,
        path_or_id: str | os.PathLike,
        *,
        name: str | None = None,
        batch_size: int = 16,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        model: Any = None,
        tokenizer: Any = None,
        trust_remote_code: bool = False,
    ):
        self.path = str(path_or_id)
        self.name = name or self.path
        self.batch_size = batch_size
        if model is None or tokenizer is None:
            model, tokenizer = _load(self.path, dtype=dtype, trust_remote_code=trust_remote_code)
        self.model = model
        self.tokenizer = tokenizer
        if device:
            self.model.to(device)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # every call checks its prompts against the context before allocating anything for them
        self.context = ContextBudget(self.tokenizer, context_size(self.model.config, self.tokenizer))

    @property
    def device(self) -> torch.device:
        """Return the device of the model's parameters."""
        return next(self.model.parameters()).device

    def render(self, prompt: PromptLike, system_prompt: str | None = None) -> str:
        """Return the chat-templated text of one prompt, ending with the assistant header."""
        return render_chat(self.tokenizer, prompt, system_prompt)

    def encode(self, prompts: list[PromptLike], system_prompt: str | None = None) -> dict[str, torch.Tensor]:
        """Return left-padded input tensors for a batch of chat prompts (on the model's device)."""
        texts = [self.render(p, system_prompt) for p in prompts]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _order(self, prompts: list[PromptLike], system_prompt: str | None) -> list[int]:
        lengths = [len(self.render(p, system_prompt)) for p in prompts]
        return sorted(range(len(prompts)), key=lambda i: lengths[i])

    @torch.inference_mode()
    def generate(
        self,
        prompts: list[PromptLike],
        config: GenerationConfig | None = None,
        *,
        logits_processor: Any = None,
        batch_size: int | None = None,
        logprobs: int | None = None,
    ) -> list[Generation]:
        """Return one Generation per prompt, in input order.

        ``logits_processor`` (a transformers ``LogitsProcessorList`` or processor) is passed to
        ``model.generate``; refusal-token policies plug in here. With ``logprobs=K`` each Generation's
        ``meta["logprobs"]`` holds, in the OpenAI format, every new token's log-probability and its top K
        alternatives (from the model's raw logits). Raises PromptTooLongError (before generating anything)
        when a prompt plus ``max_new_tokens`` does not fit the model's context.
        """
        cfg = config or GenerationConfig()
        bs = batch_size or self.batch_size
        self.context.check(prompts, max_new_tokens=cfg.max_new_tokens, system_prompt=cfg.system_prompt)
        out: dict[int, Generation] = {}  # prompt index -> generation; `order` is a permutation, so all get one
        order = self._order(prompts, cfg.system_prompt)
        if cfg.seed is not None:
            torch.manual_seed(cfg.seed)
        eos = self.tokenizer.eos_token_id
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            enc = self.encode([prompts[i] for i in idx], cfg.system_prompt)
            kw: dict[str, Any] = dict(
                max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample, pad_token_id=self.tokenizer.pad_token_id
            )
            if cfg.do_sample:
                kw.update(temperature=cfg.temperature, top_p=cfg.top_p)
            else:
                kw.update(temperature=None, top_p=None, top_k=None)
            if logits_processor is not None:
                from transformers import LogitsProcessorList

                kw["logits_processor"] = (
                    logits_processor
                    if isinstance(logits_processor, LogitsProcessorList)
                    else LogitsProcessorList([logits_processor])
                )
            kw.update(cfg.extra)
            if logprobs is not None:
                kw.update(output_logits=True, return_dict_in_generate=True)
            res = self.model.generate(**enc, **kw)
            seqs = res.sequences if logprobs is not None else res
            new = seqs[:, enc["input_ids"].shape[1] :]
            for b, (row, i) in enumerate(zip(new, idx)):
                ids = row.tolist()
                n = len(ids)
                hit_eos = False
                if eos is not None and eos in ids:
                    n, hit_eos = ids.index(eos), True
                while n > 0 and ids[n - 1] == self.tokenizer.pad_token_id and not hit_eos:
                    n -= 1
                text = self.tokenizer.decode(ids[:n], skip_special_tokens=True)
                text, stopped = _truncate_at_stop(text, cfg.stop)
                reason = "stop" if (hit_eos or stopped or n < cfg.max_new_tokens) else "length"
                g = Generation(text=text.strip(), n_tokens=n, finish_reason=reason)
                if logprobs is not None:
                    g.meta["logprobs"] = self._logprob_entries([lg[b] for lg in res.logits[:n]], ids[:n], logprobs)
                out[i] = g
        return [out[i] for i in range(len(prompts))]

    def _logprob_entries(self, logits: list[torch.Tensor], ids: list[int], k: int) -> dict[str, Any]:
        content = []
        for lg, tid in zip(logits, ids):
            lp = torch.log_softmax(lg.float(), dim=-1)
            top = torch.topk(lp, k) if k > 0 else None
            content.append(
                {
                    "token": self.tokenizer.decode([tid]),
                    "logprob": float(lp[tid]),
                    "top_logprobs": []
                    if top is None
                    else [
                        {"token": self.tokenizer.decode([int(j)]), "logprob": float(v)}
                        for v, j in zip(top.values, top.indices)
                    ],
                }
            )
        return {"content": content}

    @torch.inference_mode()
    def next_token_logits(
        self, prompts: list[PromptLike], *, system_prompt: str | None = None, batch_size: int | None = None
    ) -> torch.Tensor:
        """Return the logits of the first response token for each prompt, shape ``[n, vocab]`` (float32, CPU).

        One forward pass per prompt, no generation: the basis of refusal-token scoring and calibration.
        Raises PromptTooLongError when a prompt does not fit the model's context.
        """
        from refusalkit.models.prefix import prefix_forward

        bs = batch_size or self.batch_size
        self.context.check(prompts, system_prompt=system_prompt)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        rows = []
        for start in range(0, len(prompts), bs):
            texts = [self.render(p, system_prompt) for p in prompts[start : start + bs]]
            ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            # the chat template's shared prefix (system prompt) runs once per batch: ~2x fewer tokens
            rows.append(prefix_forward(self.model, ids, pad_id=pad))
        return torch.cat(rows) if rows else torch.empty(0, self.model.config.vocab_size)

    def next_token_logprobs(self, prompts: list[PromptLike], **kw: Any) -> torch.Tensor:
        """Return log-probabilities of the first response token, shape ``[n, vocab]``."""
        return torch.log_softmax(self.next_token_logits(prompts, **kw), dim=-1)

    @torch.inference_mode()
    def hidden_states(
        self,
        prompts: list[PromptLike],
        *,
        positions: tuple[int, ...] = (-1,),
        system_prompt: str | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Return residual-stream states, shape ``[n, n_layers + 1, len(positions), d_model]`` (CPU float32).

        ``positions`` index the chat-templated prompt from the end (-1 is the last template token).
        """
        bs = batch_size or self.batch_size
        self.context.check(prompts, system_prompt=system_prompt)
        rows = []
        for start in range(0, len(prompts), bs):
            enc = self.encode(prompts[start : start + bs], system_prompt)
            hs = self.model(**enc, output_hidden_states=True).hidden_states
            stacked = torch.stack([h[:, list(positions), :] for h in hs], dim=1)
            rows.append(stacked.float().cpu())
        return torch.cat(rows)


DTYPES = ("auto", "float32", "bfloat16", "float16", "model")


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str | None = "auto") -> str | None:
    """Return the torch dtype name to load with (None: the checkpoint's own).

    ``auto`` (and None) picks float32 on a CPU without native bfloat16 arithmetic (there, bf16 matrix
    products ran 4-5x slower than float32: the bundled subject model is stored in bf16), else the
    checkpoint's dtype; ``model`` always keeps the checkpoint's.
    """
    dtype = dtype or "auto"
    if dtype not in DTYPES:
        raise RefusalkitError(f"unknown --dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if dtype == "model":
        return None
    if dtype == "auto":
        return None if torch.cuda.is_available() or _cpu_has_bf16() else "float32"
    return dtype


def _load(path_or_id: str, *, dtype: Any = None, trust_remote_code: bool = False) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(path_or_id).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise ModelSpecError(f"{local} is not a transformers model folder (no config.json)")
    src = str(local) if local.exists() else path_or_id
    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if not local.exists():
        kw["local_files_only"] = _hub_cache_only(path_or_id)
    dt = resolve_dtype(dtype) if dtype is None or isinstance(dtype, str) else dtype
    if dt is not None:
        kw["dtype"] = getattr(torch, dt) if isinstance(dt, str) else dt
    dm = device_map()
    if dm is not None:
        kw["device_map"] = dm
    try:
        tok = AutoTokenizer.from_pretrained(
            src, trust_remote_code=trust_remote_code, local_files_only=kw.get("local_files_only", False)
        )
        model = AutoModelForCausalLM.from_pretrained(src, **kw)
    except OSError as e:
        raise ModelSpecError(
            f"could not load model {path_or_id!r}: {str(e).splitlines()[0][:300]}. Offline, only a local "
            "folder or a hub id already in the Hugging Face cache can be loaded; use --model default for the "
            "bundled model or --model /path/to/folder"
        ) from None
    return model, tok


def device_map() -> str | None:
    """Return the ``device_map`` to load models with: ``REFUSALKIT_DEVICE_MAP`` when set (``auto``, ``cpu``,
    ``cuda``, ``balanced``...; ``none`` for a plain load), else ``auto`` when CUDA is available (a 7B+ model is
    spread over the GPUs by accelerate, layer by layer) and None on a CPU-only machine."""
    import os

    v = os.environ.get("REFUSALKIT_DEVICE_MAP", "").strip()
    if v:
        return None if v.lower() == "none" else v
    return "auto" if torch.cuda.is_available() else None


def _hub_cache_only(repo_id: str, timeout: float = 3.0) -> bool:
    """Return True when a hub id must load from the local cache alone: it is cached already, the hub is switched
    off (``HF_HUB_OFFLINE``, read now rather than at import), or the hub host does not answer within ``timeout``
    seconds. Without this, an uncached id on a machine without network spent ~55 s in huggingface_hub's retries
    before failing."""
    import os
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import try_to_load_from_cache

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
            return True
    except ValueError:  # not a valid repo id: let from_pretrained say so
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout).close()
    except OSError:
        return True
    return False
