"""Refusal tokens as a decision head on a frozen model: no LoRA, no Trainer.

The control tokens are added to the tokenizer and only their *output* rows are fitted: one forward pass per
training prompt gives the last prompt position's final hidden state ``h``, and the rows ``E`` are fitted as
a multinomial logistic head over the whole vocabulary (``tokens.train.fit_output_rows``: the rest of the
vocabulary's logsumexp fixed), from the mean output row with an L2 pull towards it, the L2 chosen on the
``val`` split's decision loss when the data has one. The frozen model has never seen a control token as an
input, so generation does not feed the token back: a refusal starts from a short opener stored in the card
(``refusal_openers``) and the model continues it (``tokens.generate.PolicyModel``).

The hidden states are cached in the work folder as safetensors chunks, keyed by the base model's weights
hash and each prompt's id and rendered text, so a rerun, or a second fit with other settings, does no forward
pass again, and a killed capture resumes from its last finished chunk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from refusalkit.artifacts import write_manifest
from refusalkit.data.io import write_bytes_atomic, write_json_atomic
from refusalkit.errors import RefusalkitError
from refusalkit.tokens.data import LabelledPrompt, split_manifest
from refusalkit.tokens.model import (
    ADAPTER_WEIGHTS,
    HEAD_KIND,
    OUTPUT_ROWS_FILE,
    TOKENS_FILE,
    model_hash,
    read_adapter_info,
)
from refusalkit.tokens.scheme import RESPOND, TokenScheme, add_control_tokens
from refusalkit.tokens.train import (
    TrainConfig,
    decision_loss,
    fit_output_rows,
    other_logsumexp,
    prepare_run,
)

_log = logging.getLogger(__name__)

#: L2 values tried when the data has a ``val`` split (the one with the lowest val decision loss is kept)
HEAD_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: the L2 used when there is no ``val`` split to choose one on
DEFAULT_HEAD_L2 = 1e-2
STATES_DIR = "hidden_states"
#: prompts per cache chunk: a killed capture loses at most one chunk's forward passes
CHUNK = 64

#: refusal openers per CoCoNot short name (the model continues them); others use ``"*"``
DEFAULT_OPENERS = {
    "*": "I'm sorry, but I can't help with that",
    "safety": "I'm sorry, but I can't help with that",
    "incomplete": "I'm sorry, but your request seems to be missing some information",
    "unsupported": "I'm sorry, but I can't do that",
    "indeterminate": "There isn't a single answer to that",
    "humanizing": "As an AI, I don't have personal experiences or feelings",
}


def openers_for(scheme: TokenScheme, opener: str | None = None) -> dict[str, str]:
    """Return ``{refusal token: opener}`` plus ``"*"``: ``opener`` for every token when given, else the
    defaults of :data:`DEFAULT_OPENERS` by the token's short name."""
    if opener is not None:
        if not opener.strip():
            raise RefusalkitError("--refusal-opener must not be empty")
        return {"*": opener, **{t: opener for t in scheme.refusal_tokens}}
    out = {"*": DEFAULT_OPENERS["*"]}
    for cat, short in scheme.categories.items() if scheme.mode == "category" else []:
        out[scheme.refusal_token(cat)] = DEFAULT_OPENERS.get(short, DEFAULT_OPENERS["*"])
    return out


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class StateCache:
    """Final hidden states of prompts under one base model, stored as safetensors chunks in ``folder``.

    Each chunk holds a tensor ``h`` ``[n, d]`` (float32) and, in its metadata, the model's weights hash, the
    prompts' ids and a hash of each rendered prompt; a row is found again only under the same model, id and
    rendered text. Chunks are written atomically, so a killed capture leaves only whole chunks.
    """

    def __init__(self, folder: Path, model_sha256: str):
        self.folder = folder
        self.model_sha256 = model_sha256

    def load(self) -> dict[tuple[str, str], Any]:
        """Return ``{(id, text hash): state}`` from every chunk of this model (chunks of others are skipped)."""
        from safetensors import safe_open

        found: dict[tuple[str, str], Any] = {}
        for f in sorted(self.folder.glob("chunk-*.safetensors")):
            try:
                with safe_open(str(f), framework="pt") as fh:
                    meta = fh.metadata() or {}
                    if meta.get("model_sha256") != self.model_sha256:
                        continue
                    h = fh.get_tensor("h")
                ids, hashes = json.loads(meta["ids"]), json.loads(meta["text_sha256"])
            except Exception as e:  # a damaged chunk (not written by this code): recompute its rows
                _log.warning("ignoring hidden-state chunk %s: %s", f, e)
                continue
            if len(ids) != len(hashes) or len(ids) != h.shape[0]:
                continue
            for i, (rid, th) in enumerate(zip(ids, hashes)):
                found[(rid, th)] = h[i]
        return found

    def write(self, ids: list[str], hashes: list[str], h: Any) -> Path:
        """Write one chunk atomically; return its path."""
        from safetensors.torch import save

        self.folder.mkdir(parents=True, exist_ok=True)
        n = len(list(self.folder.glob("chunk-*.safetensors")))
        path = self.folder / f"chunk-{n:05d}-{_text_hash(''.join(ids))[:8]}.safetensors"
        meta = {"model_sha256": self.model_sha256, "ids": json.dumps(ids), "text_sha256": json.dumps(hashes)}
        write_bytes_atomic(path, save({"h": h.float().contiguous()}, metadata=meta))
        return path


def capture_states(
    hf: Any,
    items: list[LabelledPrompt],
    cache: StateCache,
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    log: Callable[[str], None] = _log.info,
) -> tuple[Any, list[LabelledPrompt], dict[str, Any]]:
    """Return ``(H, kept, figures)``: the final hidden state at the last prompt position (``[n, d]`` float32)
    of each prompt in ``kept`` (``items`` without those longer than ``max_length`` tokens, in order).

    States already in ``cache`` are reused; the others are computed in batches (left padding, no gradients)
    sorted by length and written to the cache every :data:`CHUNK` prompts.
    """
    import torch

    from refusalkit.models.prefix import last_hidden_states

    texts = [hf.render(it.prompt) for it in items]
    pad = hf.tokenizer.pad_token_id if hf.tokenizer.pad_token_id is not None else 0
    lengths = [len(ids) for ids in hf.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    keep = [i for i, n in enumerate(lengths) if max_length is None or n <= max_length]
    hashes = [_text_hash(t) for t in texts]
    have = cache.load()
    todo = sorted((i for i in keep if (items[i].id, hashes[i]) not in have), key=lambda i: lengths[i])
    if todo:
        log(f"hidden states: {len(keep) - len(todo)} of {len(keep)} cached; computing {len(todo)}")
    t0 = time.perf_counter()
    hf.tokenizer.padding_side = "left"
    hf.model.eval()
    for c in range(0, len(todo), CHUNK):
        part = todo[c : c + CHUNK]
        ids = hf.tokenizer([texts[i] for i in part], add_special_tokens=False)["input_ids"]
        # the chat template's shared prefix runs once per batch (about half of a short prompt's tokens)
        h = last_hidden_states(hf.model, ids, batch_size=batch_size, pad_id=pad)
        cache.write([items[i].id for i in part], [hashes[i] for i in part], h)
        for i, row in zip(part, h):
            have[(items[i].id, hashes[i])] = row
        done, secs = c + len(part), time.perf_counter() - t0
        log(f"  hidden states {done}/{len(todo)} ({secs:.0f}s, ~{secs / done * (len(todo) - done):.0f}s left)")
    kept = [items[i] for i in keep]
    H = torch.stack([have[(items[i].id, hashes[i])] for i in keep]) if keep else torch.zeros(0, 0)
    figures = {
        "computed": len(todo),
        "cached": len(keep) - len(todo),
        "dropped_too_long": len(items) - len(keep),
        "seconds": round(time.perf_counter() - t0, 1),
        "seconds_per_prompt": round((time.perf_counter() - t0) / len(todo), 4) if todo else None,
    }
    return H, kept, figures


class HeadScorer:
    """Control-token probabilities of prompts under any number of decision heads fitted to one frozen model,
    from one cached forward pass per prompt (the :class:`StateCache` of ``work_dir``, shared with
    ``tokens train --head-only``): comparing heads on the same prompts costs the prompts once.

    ``scheme`` is the heads' token scheme (every head scored must have the same one, hence the same token ids).
    """

    def __init__(
        self,
        model: str,
        work_dir: str | Path,
        scheme: TokenScheme,
        *,
        batch_size: int = 8,
        log: Callable[[str], None] = _log.info,
    ):
        from refusalkit.models.spec import load_local_model

        self.hf = load_local_model(model, batch_size=batch_size)
        self.n_vocab = len(self.hf.tokenizer)  # the original vocabulary, before the control tokens
        self.token_ids = add_control_tokens(self.hf.tokenizer, self.hf.model, scheme)
        self.ids = [self.token_ids[t] for t in scheme.tokens]
        self.W = self.hf.model.get_output_embeddings().weight.detach().float().cpu()
        self.cache = StateCache(Path(work_dir) / STATES_DIR, model_hash(self.hf.path))
        self.batch_size = batch_size
        self.log = log

    def states(self, items: list[LabelledPrompt]) -> tuple[Any, Any]:
        """Return ``(H, lse)``: each prompt's final hidden state at the first response position and the
        logsumexp of the rest of the vocabulary there (every prompt kept, whatever its length)."""
        H, _, _ = capture_states(self.hf, items, self.cache, batch_size=self.batch_size, log=self.log)
        return H, other_logsumexp(H, self.W, self.ids)

    def probs(self, head_dir: str | Path, H: Any, lse: Any) -> Any:
        """Return ``[n, len(scheme.tokens)]`` float64 control-token probabilities under the head in
        ``head_dir``: the softmax over the whole vocabulary, as ``tokens score`` computes it.

        Raises RefusalkitError when the head was fitted to another model or lacks a row of the scheme."""
        import torch
        from safetensors.torch import load_file

        info = read_adapter_info(head_dir)
        if info.get("base_model_sha256") != self.cache.model_sha256:
            raise RefusalkitError(f"{head_dir}: this head was fitted to another base model than {self.hf.path}")
        rows = load_file(str(Path(head_dir) / OUTPUT_ROWS_FILE))
        missing = [i for i in self.ids if str(i) not in rows]
        if missing:
            raise RefusalkitError(f"{head_dir}: no output row for token ids {missing} (another token scheme?)")
        E = torch.stack([rows[str(i)] for i in self.ids]).float()
        logits = H @ E.T
        z = torch.logsumexp(torch.cat([lse[:, None], logits], 1), 1)
        return torch.exp(logits - z[:, None]).double().numpy()


def _targets(items: list[LabelledPrompt], scheme: TokenScheme, order: list[str]) -> Any:
    """Return the index into ``order`` (control tokens) of each item's decision."""
    import torch

    return torch.tensor([order.index(scheme.refusal_token(it.category) if it.refuse else RESPOND) for it in items])


def fit_head(
    H: Any,
    y: Any,
    W: Any,
    control_ids: list[int],
    E0: Any,
    *,
    H_val: Any = None,
    y_val: Any = None,
    l2_grid: list[float] | None = None,
    steps: int = 300,
    log: Callable[[str], None] = _log.info,
) -> dict[str, Any]:
    """Fit the control tokens' output rows (``tokens.train.fit_output_rows``) for each L2 of ``l2_grid``
    (default :data:`HEAD_L2_GRID`) and keep the one with the lowest decision loss on the val states; without
    val states, one fit with the first given L2 (default :data:`DEFAULT_HEAD_L2`). Return the kept fit
    (``rows``, train figures) with ``val_loss``/``val_accuracy`` and ``l2_selection`` (every L2 tried)."""
    lse = other_logsumexp(H, W, control_ids)
    has_val = H_val is not None and len(H_val) > 0
    if not has_val:
        l2 = (l2_grid or [DEFAULT_HEAD_L2])[0]
        log(f"no val split: L2 {l2:g} (not chosen on held-out data)")
        return {**fit_output_rows(H, lse, y, E0, l2=l2, steps=steps), "l2_selection": [], "val_loss": None}
    lse_val = other_logsumexp(H_val, W, control_ids)
    best: dict[str, Any] | None = None
    tried = []
    for l2 in l2_grid or list(HEAD_L2_GRID):
        fit = fit_output_rows(H, lse, y, E0, l2=l2, steps=steps)
        vl = decision_loss(H_val, lse_val, y_val, fit["rows"])
        va = float(((H_val @ fit["rows"].T).argmax(1) == y_val).float().mean())
        tried.append({"l2": l2, "val_loss": vl, "val_accuracy": va, "train_loss": fit["decision_loss_after"]})
        log(f"  L2 {l2:g}: train decision loss {fit['decision_loss_after']:.3f}, val {vl:.3f} (accuracy {va:.3f})")
        if best is None or vl < best["val_loss"]:
            best = {**fit, "val_loss": vl, "val_accuracy": va}
    assert best is not None
    return {**best, "l2_selection": tried}


def train_head(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    work_dir: str | Path | None = None,
    log: Callable[[str], None] = _log.info,
    fresh: bool = False,
) -> dict[str, Any]:
    """Fit a decision head (the control tokens' output rows on the frozen ``cfg.model``) and write it to
    ``out_dir``; return its info (``refusal_tokens.json``).

    ``out_dir`` receives ``output_rows.safetensors`` (one float32 row per control token), ``refusal_tokens.json``
    (``kind: "head"``, scheme, token ids, base model and its weights hash, refusal openers, config, fit
    figures), ``splits.json`` and a manifest; no LoRA weights. The hidden states are cached in ``work_dir``
    (default ``out_dir/_work``; ``fresh`` drops them).
    """
    import shutil

    import torch

    out = Path(out_dir)
    work = Path(work_dir) if work_dir else out / "_work"
    l2_grid = list(cfg.head_l2) if cfg.head_l2 else None
    if l2_grid is not None and any(not (v >= 0) for v in l2_grid):
        raise RefusalkitError(f"--head-l2 values must be >= 0, got {l2_grid}")
    scheme, splits = prepare_run(cfg, out)
    openers = openers_for(scheme, cfg.refusal_opener)
    if fresh:
        shutil.rmtree(work / STATES_DIR, ignore_errors=True)
    t0 = time.perf_counter()
    scorer = HeadScorer(cfg.model, work, scheme, batch_size=cfg.batch_size, log=log)  # local weights only
    hf, token_ids, ids, cache = scorer.hf, scorer.token_ids, scorer.ids, scorer.cache
    sha = cache.model_sha256
    order = list(scheme.tokens)
    train_items, val_items = splits["train"], splits.get("val") or []
    H, kept, cap = capture_states(
        hf, train_items + val_items, cache, batch_size=cfg.batch_size, max_length=cfg.max_length, log=log
    )
    kept_ids = {it.id for it in kept}
    n_train = sum(1 for it in train_items if it.id in kept_ids)
    Ht, Hv = H[:n_train], H[n_train:]
    tr = [it for it in train_items if it.id in kept_ids]
    va = [it for it in val_items if it.id in kept_ids]
    if not any(it.refuse for it in tr):
        raise RefusalkitError(f"{cfg.data}: no training prompt to refuse is left within --max-length {cfg.max_length}")
    if cap["dropped_too_long"]:
        log(f"left out {cap['dropped_too_long']} prompts longer than --max-length {cfg.max_length} tokens")
    # the fit runs on the CPU (K rows x d: small), whichever device the model ran on
    W = scorer.W
    # every control row starts at the mean output row of the original vocabulary: a "typical" token's logit
    E0 = W[: scorer.n_vocab].mean(0, keepdim=True).repeat(len(ids), 1)
    t1 = time.perf_counter()
    fit = fit_head(
        Ht,
        _targets(tr, scheme, order),
        W,
        ids,
        E0,
        H_val=Hv if va else None,
        y_val=_targets(va, scheme, order) if va else None,
        l2_grid=l2_grid,
        log=log,
    )
    fit_secs = time.perf_counter() - t1
    E = fit.pop("rows")
    fit.pop("relative_row_change")  # relative to the mean row, which is near zero: not a meaningful figure
    log(
        f"decision head on {len(tr)} prompts: decision loss {fit['decision_loss_before']:.3f} -> "
        f"{fit['decision_loss_after']:.3f}, train accuracy {fit['train_accuracy']:.3f}"
        + (f"; val loss {fit['val_loss']:.3f}, accuracy {fit['val_accuracy']:.3f} (L2 {fit['l2']:g})" if va else "")
    )
    rows = {token_ids[t]: E[j] for j, t in enumerate(order)}
    return save_head(
        out,
        scheme=scheme,
        token_ids=token_ids,
        rows=rows,
        model_sha256=sha,
        cfg=cfg,
        openers=openers,
        extra={
            "split": split_manifest(splits),
            "n_train": len(tr),
            "n_val": len(va),
            "hidden_states": cap,
            "head": {**fit, "init": "mean output row", "fit_seconds": round(fit_secs, 2)},
            "train_seconds": round(time.perf_counter() - t0, 1),
            "device": str(hf.device),
            "torch_threads": torch.get_num_threads(),
        },
    )


def save_head(
    out: Path,
    *,
    scheme: TokenScheme,
    token_ids: dict[str, int],
    rows: dict[int, Any],
    model_sha256: str,
    cfg: TrainConfig,
    openers: dict[str, str],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Write a decision-head adapter into ``out`` (rows, card, manifest over them and ``splits.json``);
    return the card. A LoRA adapter's weights left in the folder by an earlier run are removed."""
    from safetensors.torch import save

    for f in (ADAPTER_WEIGHTS, "adapter_config.json"):
        (out / f).unlink(missing_ok=True)
    write_bytes_atomic(
        out / OUTPUT_ROWS_FILE,
        save({str(k): v.float().contiguous() for k, v in rows.items()}, metadata={"format": "pt"}),
    )
    info = {
        "format": "refusalkit-tokens/1",
        "kind": HEAD_KIND,
        "output_rows": True,
        "scheme": scheme.to_dict(),
        "token_ids": token_ids,
        "base_model": cfg.model,
        "base_model_sha256": model_sha256,
        "refusal_openers": openers,
        "config": asdict(cfg),
        **extra,
    }
    write_json_atomic(out / TOKENS_FILE, info)
    write_manifest(out, [OUTPUT_ROWS_FILE, TOKENS_FILE, "splits.json"])
    return info
