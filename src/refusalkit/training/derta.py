"""DeRTa training and its baseline, vanilla safety SFT, on the one LoRA/Trainer path of refusalkit.

DeRTa's loss (Yuan et al. 2024) for a harmful query ``q``, harmful response ``rhat`` and refusal ``r``::

    L = -log P(r | q, rhat[:k])  -  sum_t log P(r[0] | q, rhat[:t])

The first term (MLE with a harmful prefix) teaches the model to refuse after a harmful start; the second,
Reinforced Transition Optimization (RTO), teaches the transition to a refusal at every position of the
harmful prefix. Both fit in one causal-LM sequence ``q + rhat[:k] + r``: the label of each prefix token is
replaced by ``r[0]`` (with the usual one-position shift, position ``t`` of the prefix then predicts ``r[0]``
from ``q + rhat[:t]``, ``t = 0..k-1``; ``t = k`` is the MLE term's first target). RTO labels are stored as
``r[0] + RTO_OFFSET`` so that the one ``labels`` tensor the Trainer passes to the loss carries both kinds.

The loss is the mean cross-entropy over response targets plus ``rto_weight`` times the mean over RTO targets
(per batch): the paper sums RTO over positions; averaging keeps long harmful prefixes from outweighing the
response, as the refusal-token trainer does for its decision token.

Vanilla safety SFT (the paper's baseline) trains ``r`` after ``q`` alone on the same rows: no prefix, no RTO.
Harmless rows are plain SFT in both objectives.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from refusalkit.artifacts import MANIFEST, write_manifest
from refusalkit.data.io import write_json_atomic, write_text_atomic
from refusalkit.errors import RefusalkitError
from refusalkit.training.derta_data import data_card, read_derta_data

_log = logging.getLogger(__name__)

OBJECTIVES = ("derta", "sft")
RTO_OFFSET = 1 << 24  # larger than any vocabulary: labels >= this are RTO targets (label - RTO_OFFSET)
INFO_FILE = "derta.json"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


@dataclass
class DertaConfig:
    """Settings of one DeRTa / safety-SFT run (stored in the adapter's ``derta.json``). The LoRA and
    optimiser fields mean what they mean for ``tokens train``."""

    data: str
    model: str = "default"
    objective: str = "derta"
    rto_weight: float = 1.0
    max_length: int = 256
    epochs: float = 1.0
    learning_rate: float = 2e-4
    batch_size: int = 8
    grad_accum: int = 1
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    seed: int = 1234
    save_steps: int = 25
    logging_steps: int = 5
    max_steps: int = -1
    extra: dict[str, Any] = field(default_factory=dict)


def _eos(tokenizer: Any) -> int:
    vocab = tokenizer.get_vocab()
    return vocab["<|im_end|>"] if "<|im_end|>" in vocab else tokenizer.eos_token_id


def encode_derta(
    rows: list[dict[str, Any]],
    tokenizer: Any,
    render: Callable[[str], str],
    *,
    objective: str = "derta",
    max_length: int = 256,
) -> tuple[list[dict[str, Any]], int]:
    """Return ``(encoded, n_dropped)``: ``input_ids``/``labels``/``length`` per row for ``objective``.

    ``derta``: ``prompt + rhat[:k] + response (+ end of turn)``; labels -100 on the prompt, ``r[0] +
    RTO_OFFSET`` on each of the k prefix tokens, the response tokens on the response. ``sft``: the prefix is
    left out. A row is cut at ``max_length`` from the end of its response; a row whose prompt and prefix
    leave no room for the response's first token is dropped. Answers cut at generation time
    (``finished`` false) get no end-of-turn token, so the model does not learn to stop early.
    """
    if objective not in OBJECTIVES:
        raise RefusalkitError(f"--objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    eos = _eos(tokenizer)
    out, dropped = [], 0
    for r in rows:
        p_ids = tokenizer(render(r["prompt"]), add_special_tokens=False)["input_ids"]
        h_ids: list[int] = []
        if objective == "derta" and r.get("k", 0) > 0:
            h_ids = tokenizer(r["harmful_response"], add_special_tokens=False)["input_ids"][: int(r["k"])]
        r_ids = tokenizer(r["response"].strip(), add_special_tokens=False)["input_ids"]
        if r.get("finished", True):
            r_ids = r_ids + [eos]
        if len(p_ids) + len(h_ids) + 1 > max_length or not r_ids:
            dropped += 1
            continue
        r_ids = r_ids[: max_length - len(p_ids) - len(h_ids)]
        ids = p_ids + h_ids + r_ids
        labels = [-100] * len(p_ids) + [r_ids[0] + RTO_OFFSET] * len(h_ids) + r_ids
        out.append({"input_ids": ids, "labels": labels, "length": len(ids)})
    return out, dropped


def derta_loss(rto_weight: float = 1.0) -> Callable[..., Any]:
    """Return a Trainer ``compute_loss_func``: mean cross-entropy over response targets plus ``rto_weight``
    times the mean cross-entropy of predicting the refusal's first token at the RTO positions (labels >=
    :data:`RTO_OFFSET`). With no RTO labels (``sft``) it is the plain token-mean SFT loss."""
    import torch.nn.functional as F

    def loss_fn(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        logits = outputs.logits[:, :-1, :].float()
        lab = labels[:, 1:].to(logits.device)
        rto = lab >= RTO_OFFSET
        target = lab.where(~rto, lab - RTO_OFFSET)
        ce = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="none"
        ).view(lab.shape)
        mle = (lab != -100) & ~rto
        loss = ce[mle].mean() if mle.any() else logits.sum() * 0.0
        if rto.any():
            loss = loss + rto_weight * ce[rto].mean()
        return loss

    return loss_fn


def train_derta(
    cfg: DertaConfig,
    out_dir: str | Path,
    *,
    work_dir: str | Path | None = None,
    log: Callable[[str], None] = _log.info,
    fresh: bool = False,
) -> dict[str, Any]:
    """Train a LoRA adapter with ``cfg.objective`` on the DeRTa data ``cfg.data`` and write it to
    ``out_dir``; return the info written to ``derta.json`` (empty on a non-main distributed process).

    ``out_dir`` receives ``adapter_model.safetensors``, ``adapter_config.json`` (a plain peft LoRA adapter:
    ``refusalkit generate --adapter`` or peft's ``PeftModel.from_pretrained`` load it), ``derta.json`` (config,
    data card, loss curve) and a manifest. Checkpoints live in ``work_dir`` (default ``out_dir/_work``);
    rerunning resumes from them, ``fresh`` starts over.
    """
    import torch

    from refusalkit.models.spec import load_local_model
    from refusalkit.tokens.train import _latest_checkpoint, _loss_curve, _remove_training_state, fit_lora

    if cfg.objective not in OBJECTIVES:
        raise RefusalkitError(f"--objective {cfg.objective!r}: use one of {', '.join(OBJECTIVES)}")
    rows = read_derta_data(cfg.data)  # bad data fails before the model loads
    out = Path(out_dir)
    work = Path(work_dir) if work_dir else out / "_work"
    if fresh:
        _remove_training_state(work)
    work.mkdir(parents=True, exist_ok=True)
    if _latest_checkpoint(work / "checkpoints") is None:
        (work / "train_log.jsonl").unlink(missing_ok=True)
    hf = load_local_model(cfg.model, batch_size=cfg.batch_size)
    tok, model = hf.tokenizer, hf.model
    enc, dropped = encode_derta(rows, tok, hf.render, objective=cfg.objective, max_length=cfg.max_length)
    if not enc:
        raise RefusalkitError(f"{cfg.data}: no row fits --max-length {cfg.max_length}")
    if dropped:
        log(f"dropped {dropped} rows longer than max_length={cfg.max_length}")
    n_rto = sum(sum(1 for x in e["labels"] if x >= RTO_OFFSET) for e in enc)
    fit = fit_lora(
        model,
        enc,
        cfg,
        work,
        loss_fn=derta_loss(cfg.rto_weight),
        pad_id=tok.pad_token_id,
        describe=f"objective {cfg.objective}, {n_rto} RTO targets",
        log=log,
    )
    if not fit.is_main:
        return {}
    info = {
        "format": "refusalkit-derta/1",
        "objective": cfg.objective,
        "base_model": cfg.model,
        "config": asdict(cfg),
        "data_card": data_card(rows),
        "n_sequences": len(enc),
        "n_tokens": sum(e["length"] for e in enc),
        "n_rto_targets": n_rto,
        "dropped": dropped,
        "train_seconds": round(fit.seconds, 1),
        "train_loss": fit.result.training_loss,
        "global_step": fit.result.global_step,
        "trainable_parameters": fit.n_trainable,
        "loss_curve": _loss_curve(work / "train_log.jsonl", fit.history),
        "torch_threads": torch.get_num_threads(),
    }
    save_lora_adapter(fit.peft_model, out, base_model=cfg.model, info=info)
    return info


def save_lora_adapter(peft_model: Any, out: Path, *, base_model: str, info: dict[str, Any]) -> None:
    """Write a plain peft LoRA adapter to ``out``: weights, ``adapter_config.json`` (its base model set to
    the ``--model`` spec), ``derta.json`` and a manifest, written last so a folder with a manifest is whole."""
    import os

    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        peft_model.save_pretrained(tmp)
        os.replace(Path(tmp) / "adapter_model.safetensors", out / "adapter_model.safetensors")
        conf = json.loads((Path(tmp) / "adapter_config.json").read_text())
        conf["base_model_name_or_path"] = base_model
        write_text_atomic(out / "adapter_config.json", json.dumps(conf, indent=2, sort_keys=True))
    write_json_atomic(out / INFO_FILE, info)
    write_manifest(out, [*ADAPTER_FILES, INFO_FILE])
