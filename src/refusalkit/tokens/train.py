"""Training refusal tokens: tag labelled prompts, then supervised fine-tuning with LoRA (peft) on the
transformers Trainer, the new token rows trainable, resumable from checkpoints.

The same code runs on a CPU, one GPU, or several through ``accelerate launch`` (the Trainer reads the
distributed environment); only the batch sizes change.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from refusalkit.artifacts import MANIFEST, write_manifest
from refusalkit.data.io import write_json_atomic, write_text_atomic
from refusalkit.errors import RefusalkitError
from refusalkit.tokens.data import (
    DEFAULT_SEED,
    LabelledPrompt,
    read_labelled,
    split_manifest,
    stratified_split,
    tag_examples,
)
from refusalkit.tokens.model import OUTPUT_ROWS_FILE, TOKENS_FILE, model_hash
from refusalkit.tokens.scheme import TokenScheme, add_control_tokens

_log = logging.getLogger(__name__)  # progress goes here unless the caller passes its own ``log``

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainConfig:
    """Settings of one refusal-token training run (stored beside the adapter)."""

    data: str
    model: str = "default"
    mode: str = "category"
    categories: list[str] | None = None
    respond_target: str = "self"
    answer_tokens: int = 48
    max_length: int = 160
    epochs: float = 2.0
    learning_rate: float = 2e-4
    batch_size: int = 8
    grad_accum: int = 1
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    seed: int = DEFAULT_SEED
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    save_steps: int = 25
    logging_steps: int = 5
    max_steps: int = -1
    refine_rows: bool = True
    # decision head on the frozen model (tokens/head.py): no LoRA, only the control tokens' output rows
    head_only: bool = False
    head_l2: list[float] | None = None  # L2 values tried (chosen on the val split); None: HEAD_L2_GRID
    refusal_opener: str | None = None  # one opener for every refusal token; None: per-category defaults
    extra: dict[str, Any] = field(default_factory=dict)


def scheme_for(items: list[LabelledPrompt], cfg: TrainConfig) -> TokenScheme:
    """Return the token scheme: ``cfg.categories`` when given, else the categories of the refusals in
    the data (the CoCoNot short names where they match)."""
    names = cfg.categories or sorted({it.category for it in items if it.refuse and it.category})
    return TokenScheme.from_categories(names, mode=cfg.mode)


def base_answers(
    model_spec: str,
    items: list[LabelledPrompt],
    work_dir: Path,
    max_new_tokens: int,
    *,
    batch_size: int = 16,
    log: Callable[[str], None] = _log.info,
    fresh: bool = False,
) -> dict[str, dict[str, Any]]:
    """Return ``{id: {"text", "finish_reason"}}``: the base model's own greedy answers to ``items``,
    generated once into a resumable run store under ``work_dir`` (``fresh``: generated again)."""
    from refusalkit.data.records import Example
    from refusalkit.models.base import GenerationConfig
    from refusalkit.runs import RunProgress, RunStore, run_resumable

    exs = [Example(id=it.id, prompt=it.prompt, category=it.category) for it in items]
    gcfg = GenerationConfig(max_new_tokens=max_new_tokens)
    first: list[RunProgress] = []

    def on_progress(p: RunProgress) -> None:
        if not first:
            first.append(p)
            if p.done < p.total:
                log(f"base answers: {p.done} of {p.total} cached; generating {p.total - p.done}")
        else:
            log(f"  answers {p.new}/{p.total - first[0].done} ({p.seconds:.0f}s)")

    res = run_resumable(
        exs,
        model_spec,
        gcfg,
        work_dir / "base_answers",
        fresh=fresh,
        kind="tokens-answers",
        batch_size=batch_size,
        on_progress=on_progress,
    )
    with RunStore.open_readonly(res.run_dir) as store:
        return {r.id: {"text": r.response, "finish_reason": r.finish_reason} for r in store.responses()}


def encode_examples(
    tagged: list[dict[str, Any]],
    tokenizer: Any,
    render: Callable[[str], str],
    token_ids: dict[str, int],
    max_length: int,
    finished: dict[str, bool] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Return ``(rows, n_dropped)``: input ids and labels per tagged example.

    The loss covers the response only: the control token, its text and the end-of-turn token (left out
    for answers that were cut at the generation limit, so the model does not learn to stop early). Too
    long responses are cut; prompts that leave no room for the response are dropped.
    """
    eos = (
        tokenizer.convert_tokens_to_ids("<|im_end|>")
        if "<|im_end|>" in tokenizer.get_vocab()
        else tokenizer.eos_token_id
    )
    rows, dropped = [], 0
    for ex in tagged:
        p_ids = tokenizer(render(ex["prompt"]), add_special_tokens=False)["input_ids"]
        r_ids = [token_ids[ex["token"]]]
        if not ex["token_only"]:
            r_ids += tokenizer(" " + ex["text"].strip(), add_special_tokens=False)["input_ids"]
            if (finished or {}).get(ex["id"], True):
                r_ids.append(eos)
        if len(p_ids) + 1 > max_length:
            dropped += 1
            continue
        r_ids = r_ids[: max_length - len(p_ids)]
        ids = p_ids + r_ids
        rows.append({"input_ids": ids, "labels": [-100] * len(p_ids) + r_ids, "length": len(ids)})
    return rows, dropped


class PadCollator:
    """Right-pads a batch of ``input_ids``/``labels`` rows (labels padded with -100)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Return the padded tensors of a batch."""
        import torch

        n = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), n), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            k = len(r["input_ids"])
            ids[i, :k] = torch.tensor(r["input_ids"])
            labels[i, :k] = torch.tensor(r["labels"])
            mask[i, :k] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def balanced_loss(control_ids: list[int]) -> Callable[..., Any]:
    """Return a Trainer ``compute_loss_func``: mean cross-entropy over control-token targets plus mean
    cross-entropy over text targets.

    A plain token mean lets the ~25 text tokens of each refusal outweigh the single decision token,
    and a batch that happens to hold only ``[respond]`` targets then yields huge, rare gradients (two
    runs diverged that way); averaging the two kinds separately keeps the decision's weight fixed.
    """
    import torch
    import torch.nn.functional as F

    ctrl_ids = torch.tensor(sorted(control_ids))

    def loss_fn(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        logits = outputs.logits[:, :-1, :].float()
        lab = labels[:, 1:].to(logits.device)
        ce = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), lab.reshape(-1), ignore_index=-100, reduction="none"
        ).view(lab.shape)
        ctrl = torch.isin(lab, ctrl_ids.to(lab.device))
        text = (lab != -100) & ~ctrl
        parts = [ce[m].mean() for m in (ctrl, text) if m.any()]
        return sum(parts) if parts else logits.sum() * 0.0

    return loss_fn


def final_hidden_states(model: Any, enc: dict[str, Any]) -> Any:
    """Return ``[batch, d]`` float32: the final hidden state (after the last norm, what the output layer
    reads) at the last position of a left-padded batch ``enc``; ``model`` may be wrapped by peft."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = base.model(**enc) if hasattr(base, "model") else base(**enc)
    return out.last_hidden_state[:, -1, :].float()


def other_logsumexp(H: Any, W: Any, control_ids: list[int], *, chunk: int = 256) -> Any:
    """Return, per row of ``H``, the logsumexp of the logits ``H @ W.T`` over every vocabulary row except
    ``control_ids``: the part of the first-position softmax that a decision-row fit keeps fixed. Computed
    ``chunk`` rows at a time, so a 150k-token vocabulary never needs an ``[n, vocab]`` matrix."""
    import torch

    other = torch.ones(W.shape[0], dtype=torch.bool)
    other[torch.tensor(control_ids)] = False
    Wo = W[other].float()
    with torch.no_grad():
        return torch.cat([torch.logsumexp(H[s : s + chunk] @ Wo.T, dim=1) for s in range(0, len(H), chunk)])


def decision_loss(H: Any, fixed_lse: Any, y: Any, E: Any) -> float:
    """Return the mean cross-entropy of the decisions ``y`` (indices into the rows ``E``) when the rows ``E``
    join the rest of the vocabulary (``fixed_lse``) at the first position."""
    import torch

    with torch.no_grad():
        return float(_decision_ce(H, fixed_lse, y, E))


def _decision_ce(H: Any, fixed_lse: Any, y: Any, E: Any) -> Any:
    import torch

    z = H @ E.T
    lse = torch.logsumexp(torch.cat([z, fixed_lse[:, None]], 1), dim=1)
    return (lse - z[torch.arange(len(y)), y]).mean()


def fit_output_rows(H: Any, fixed_lse: Any, y: Any, E0: Any, *, l2: float, steps: int = 300) -> dict[str, Any]:
    """Fit the control tokens' output rows as the decision's output layer; return ``{"rows": E, figures}``.

    The first-position logits of the control tokens are ``H @ E.T`` (H: the last prompt position's final
    hidden states) and the rest of the vocabulary enters through ``fixed_lse`` (:func:`other_logsumexp`), so
    fitting ``E`` to the decisions ``y`` is a convex multinomial logistic regression over the whole
    vocabulary, solved with L-BFGS from ``E0`` with an L2 pull ``l2 * |E - E0|^2`` (per row, averaged) towards it.
    """
    import torch

    E = E0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([E], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = _decision_ce(H, fixed_lse, y, E) + l2 * ((E - E0) ** 2).sum(1).mean()
        loss.backward()
        return loss

    opt.step(closure)
    Ef = E.detach()
    return {
        "decision_loss_before": decision_loss(H, fixed_lse, y, E0),
        "decision_loss_after": decision_loss(H, fixed_lse, y, Ef),
        "train_accuracy": float(((H @ Ef.T).argmax(1) == y).float().mean()),
        "relative_row_change": float((Ef - E0).norm(dim=1).mean() / E0.norm(dim=1).mean().clamp_min(1e-12)),
        "l2": l2,
        "rows": Ef,
    }


def refine_decision_rows(
    model: Any,
    tokenizer: Any,
    render: Callable[[str], str],
    tagged: list[dict[str, Any]],
    token_ids: dict[str, int],
    *,
    l2: float = 1e-2,
    steps: int = 300,
    batch_size: int = 16,
    log: Callable[[str], None] = _log.info,
) -> dict[str, Any]:
    """Refit the control-token rows as the decision's output layer after SFT; return the fit's figures and
    the fitted output rows (``"rows"``: token id -> tensor).

    With the trained weights fixed this is :func:`fit_output_rows`, started from the trained rows with the
    L2 pull towards them (the same rows are the tokens' input embeddings, which the text after the token was
    trained with). Short SFT runs learn refuse-vs-respond well but separate the categories slowly, because
    their rows start equal; this step separates them at the cost of one forward pass per training prompt.
    The fitted rows are *output* rows only: written into the tied matrix they also moved the input
    embeddings (by 2x their norm) and the model then wrote nothing after a refusal token, so the loader
    unties the output layer instead (:mod:`tokens.model`).
    """
    import torch

    model.eval()
    order = sorted(token_ids.values())
    rows_idx = torch.tensor(order)
    target_map = {tid: j for j, tid in enumerate(order)}
    hs: list[torch.Tensor] = []
    prompts = [ex["prompt"] for ex in tagged]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    with torch.no_grad():
        tokenizer.padding_side = "left"
        for s in range(0, len(prompts), batch_size):
            enc = tokenizer(
                [render(p) for p in prompts[s : s + batch_size]],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            )
            hs.append(final_hidden_states(model, enc))
        H = torch.cat(hs)
        W = base.get_output_embeddings().weight.detach().float()
        fixed_lse = other_logsumexp(H, W, order)  # the rest of the vocabulary, constant in the fit
    y = torch.tensor([target_map[token_ids[ex["token"]]] for ex in tagged])
    emb = base.get_input_embeddings()
    layer = getattr(emb, "token_adapter", None)
    if layer is not None:  # peft trainable tokens: the trained rows live in the adapter's delta
        name = next(iter(layer.trainable_tokens_delta))
        idx = list(layer.token_indices[name])
        E0 = torch.stack([layer.trainable_tokens_delta[name][idx.index(t)].detach().float() for t in order])
    else:
        E0 = W[rows_idx].clone()
    fit = fit_output_rows(H, fixed_lse, y, E0, l2=l2, steps=steps)
    E = fit.pop("rows")
    log(
        f"refined the control-token rows on {len(y)} prompts: decision loss {fit['decision_loss_before']:.3f} -> "
        f"{fit['decision_loss_after']:.3f}, train accuracy {fit['train_accuracy']:.3f}, "
        f"mean relative row change {fit['relative_row_change']:.3f}"
    )
    return {**fit, "rows": {tid: E[j].clone() for j, tid in enumerate(order)}}


def _loss_curve(log_file: Path, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the logged losses of the whole run (earlier sessions included when it was resumed)."""
    rows = []
    if log_file.is_file():
        rows = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows or history
    last: dict[int, dict[str, Any]] = {}
    for r in rows:
        if "loss" in r:
            last[int(r["step"])] = r  # a resumed run logs some steps again: keep the latest
    return [last[k] for k in sorted(last)]


def _remove_training_state(work: Path) -> None:
    """Remove what training wrote into ``work`` (the Trainer's ``checkpoint-N`` folders and the loss log);
    the base answers' run store is removed by :func:`base_answers` with ``fresh``. Other files stay."""
    for ck in (work / "checkpoints").glob("checkpoint-*"):
        if ck.is_dir() and ck.name.split("-")[-1].isdigit():
            shutil.rmtree(ck)
    (work / "train_log.jsonl").unlink(missing_ok=True)


def _latest_checkpoint(ckpt_dir: Path) -> str | None:
    cks = sorted(ckpt_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(cks[-1]) if cks else None


def prepare_run(cfg: TrainConfig, out: Path) -> tuple[TokenScheme, dict[str, list[LabelledPrompt]]]:
    """Read ``cfg.data``, derive the token scheme and the splits, and start the adapter folder ``out``
    (its old manifest removed, ``splits.json`` written); return ``(scheme, splits)``.

    Raises InputError/RefusalkitError (before anything is written) for bad rows, a refusal category the
    scheme lacks, or a training split without prompts to refuse.
    """
    items = read_labelled(cfg.data)
    scheme = scheme_for(items, cfg)
    for it in items:
        if it.refuse:
            scheme.refusal_token(it.category)  # fail early on a category the scheme lacks
    splits = stratified_split(items, seed=cfg.seed, fractions=tuple(cfg.split_fractions))  # type: ignore[arg-type]
    if not any(it.refuse for it in splits["train"]):
        raise RefusalkitError(f"{cfg.data}: the training split has no prompts to refuse")
    out.mkdir(parents=True, exist_ok=True)
    # The adapter folder is rewritten below: drop its manifest first, so an interrupted run never leaves a
    # folder whose manifest vouches for a mix of old and new files.
    (out / MANIFEST).unlink(missing_ok=True)
    write_text_atomic(
        out / "splits.json",
        json.dumps(
            {
                "seed": cfg.seed,
                "fractions": list(cfg.split_fractions),
                "data": str(cfg.data),
                **{k: sorted(it.id for it in v) for k, v in splits.items()},
            },
            indent=0,
        ),
    )
    return scheme, splits


def train_tokens(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    work_dir: str | Path | None = None,
    log: Callable[[str], None] = _log.info,
    fresh: bool = False,
) -> dict[str, Any]:
    """Train a refusal-token adapter and write it to ``out_dir``; return the adapter's info dict.

    ``out_dir`` receives ``adapter_model.safetensors`` (LoRA weights and the control-token rows, fp16),
    ``adapter_config.json``, ``refusal_tokens.json`` (scheme, token ids, base model hash, split manifest,
    config, loss curve) and ``splits.json`` (the ids of each split). Intermediate state (base answers,
    Trainer checkpoints) lives in ``work_dir`` (default ``out_dir/_work``); rerunning resumes from it.
    """
    import torch

    from refusalkit.models.spec import load_local_model

    out = Path(out_dir)
    work = Path(work_dir) if work_dir else out / "_work"
    if fresh:
        _remove_training_state(work)
    work.mkdir(parents=True, exist_ok=True)
    scheme, splits = prepare_run(cfg, out)
    train_items = splits["train"]

    answers: dict[str, dict[str, Any]] = {}
    need = [it for it in train_items if not it.refuse and not it.response]
    if cfg.respond_target == "self" and need:
        answers = base_answers(cfg.model, need, work, cfg.answer_tokens, log=log, fresh=fresh)
    tagged = tag_examples(
        train_items, scheme, {k: v["text"] for k, v in answers.items()}, respond_target=cfg.respond_target
    )

    hf = load_local_model(cfg.model, batch_size=cfg.batch_size)  # training needs the weights: no endpoint
    base_dir = hf.path
    tok, model = hf.tokenizer, hf.model
    token_ids = add_control_tokens(tok, model, scheme)
    rows, dropped = encode_examples(
        tagged,
        tok,
        hf.render,
        token_ids,
        cfg.max_length,
        finished={k: v["finish_reason"] != "length" for k, v in answers.items()},
    )
    if dropped:
        log(f"dropped {dropped} prompts longer than max_length={cfg.max_length}")
    fit = fit_lora(
        model,
        rows,
        cfg,
        work,
        loss_fn=balanced_loss(list(token_ids.values())),
        pad_id=tok.pad_token_id,
        trainable_token_indices=sorted(token_ids.values()),
        describe=f"tokens {token_ids}",
        log=log,
    )
    if not fit.is_main:
        return {}
    pm, result, secs, history, n_train = fit.peft_model, fit.result, fit.seconds, fit.history, fit.n_trainable
    refine = refine_decision_rows(pm, tok, hf.render, tagged, token_ids, log=log) if cfg.refine_rows else None
    out_rows = refine.pop("rows") if refine else None
    info = save_adapter(
        pm,
        out,
        scheme=scheme,
        token_ids=token_ids,
        base_dir=base_dir,
        cfg=cfg,
        output_rows=out_rows,
        extra={
            "split": split_manifest(splits),
            "n_sequences": len(rows),
            "dropped": dropped,
            "train_seconds": round(secs, 1),
            "train_loss": result.training_loss,
            "global_step": result.global_step,
            "trainable_parameters": n_train,
            "loss_curve": _loss_curve(work / "train_log.jsonl", history),
            "device": str(next(pm.parameters()).device),
            "refine_rows": refine,
            "torch_threads": torch.get_num_threads(),
        },
    )
    return info


@dataclass
class FitResult:
    """What :func:`fit_lora` trained: the peft model, the Trainer's result, the training seconds, the logged
    records, the number of trainable parameters and whether this process is the main one (distributed)."""

    peft_model: Any
    result: Any
    seconds: float
    history: list[dict[str, Any]]
    n_trainable: int
    is_main: bool


def fit_lora(
    model: Any,
    rows: list[dict[str, Any]],
    cfg: Any,
    work: Path,
    *,
    loss_fn: Callable[..., Any],
    pad_id: int,
    trainable_token_indices: list[int] | None = None,
    describe: str = "",
    log: Callable[[str], None] = _log.info,
) -> FitResult:
    """Wrap ``model`` in a LoRA adapter (peft) and fit it on ``rows`` (``input_ids``/``labels``) with the
    transformers Trainer and ``loss_fn`` as its ``compute_loss_func``; return a :class:`FitResult`.

    This is the one training path of refusalkit: refusal tokens (:func:`train_tokens`) and DeRTa/safety SFT
    (:mod:`refusalkit.training.derta`) differ only in their rows and loss. ``cfg`` gives the LoRA and
    optimiser settings (``lora_r``, ``lora_alpha``, ``lora_dropout``, ``batch_size``, ``grad_accum``,
    ``epochs``, ``max_steps``, ``learning_rate``, ``logging_steps``, ``save_steps``, ``seed``). Checkpoints go
    to ``work/checkpoints`` and the latest one is resumed; the loss log to ``work/train_log.jsonl``. Under
    ``accelerate launch`` the Trainer runs distributed unchanged.
    """
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model.train()
    lcfg = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=LORA_TARGETS,
        task_type="CAUSAL_LM",
        trainable_token_indices={"embed_tokens": trainable_token_indices} if trainable_token_indices else None,
    )
    pm = get_peft_model(model, lcfg)
    n_train = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    log(
        f"{len(rows)} training sequences ({sum(r['length'] for r in rows)} tokens); "
        f"{n_train:,} trainable parameters" + (f"; {describe}" if describe else "")
    )

    history: list[dict[str, Any]] = []

    class _Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):  # noqa: D401
            if logs and state.is_world_process_zero:
                rec = {"step": state.global_step, "epoch": round(state.epoch or 0, 3), **logs}
                history.append(rec)
                with open(work / "train_log.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(rec) + "\n")
                log(
                    f"step {state.global_step}/{state.max_steps} "
                    + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items())
                )

    args = TrainingArguments(
        output_dir=str(work / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        weight_decay=0.0,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=2,
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
        max_grad_norm=1.0,
    )
    trainer = Trainer(
        model=pm,
        args=args,
        train_dataset=Dataset.from_list(rows),
        data_collator=PadCollator(pad_id),
        callbacks=[_Log()],
        compute_loss_func=loss_fn,
    )
    resume = _latest_checkpoint(work / "checkpoints")
    if resume:
        log(f"resuming from {resume}")
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    secs = time.perf_counter() - t0
    return FitResult(pm, result, secs, history, n_train, trainer.is_world_process_zero())


def save_adapter(
    peft_model: Any,
    out: Path,
    *,
    scheme: TokenScheme,
    token_ids: dict[str, int],
    base_dir: str,
    cfg: TrainConfig,
    extra: dict[str, Any],
    output_rows: dict[int, Any] | None = None,
) -> dict[str, Any]:
    """Write the adapter (weights as fp16 safetensors) and its ``refusal_tokens.json``; return the info."""
    import tempfile

    import torch
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        # save_embedding_layers=False: only the control-token rows (trainable_token_indices) are stored,
        # not the whole resized embedding matrix.
        peft_model.save_pretrained(tmp, save_embedding_layers=False)
        sd = load_file(str(Path(tmp) / "adapter_model.safetensors"))
        # fp16 halves the file; the values are small LoRA factors and embedding rows, well within range.
        save_file(
            {k: v.to(torch.float16).contiguous() for k, v in sd.items()},
            str(out / "adapter_model.safetensors"),
            metadata={"format": "pt"},
        )
        conf = json.loads((Path(tmp) / "adapter_config.json").read_text())
        conf["base_model_name_or_path"] = cfg.model
        write_text_atomic(out / "adapter_config.json", json.dumps(conf, indent=2, sort_keys=True))
    rows_file = out / OUTPUT_ROWS_FILE
    if output_rows:
        save_file(
            {str(k): v.float().contiguous() for k, v in output_rows.items()}, str(rows_file), metadata={"format": "pt"}
        )
    elif rows_file.exists():
        rows_file.unlink()
    info = {
        "format": "refusalkit-tokens/1",
        "output_rows": bool(output_rows),
        "scheme": scheme.to_dict(),
        "token_ids": token_ids,
        "base_model": cfg.model,
        "base_model_sha256": model_hash(base_dir),
        "config": asdict(cfg),
        **extra,
    }
    write_json_atomic(out / TOKENS_FILE, info)  # a diverged loss (NaN) is written as null, not as NaN
    write_manifest(
        out,
        [
            f
            for f in ("adapter_model.safetensors", "adapter_config.json", OUTPUT_ROWS_FILE, TOKENS_FILE, "splits.json")
            if (out / f).is_file()
        ],
    )
    return info
