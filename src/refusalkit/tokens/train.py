"""Training refusal tokens: tag labelled prompts, then supervised fine-tuning with LoRA (peft) on the
transformers Trainer, the new token rows trainable, resumable from checkpoints.

The same code runs on a CPU, one GPU, or several through ``accelerate launch`` (the Trainer reads the
distributed environment); only the batch sizes change.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from refusalkit.data.io import write_text_atomic
from refusalkit.errors import RefusalkitError
from refusalkit.tokens.data import (DEFAULT_SEED, LabelledPrompt, read_labelled, split_manifest, stratified_split,
                                    tag_examples)
from refusalkit.tokens.model import TOKENS_FILE, model_hash
from refusalkit.tokens.scheme import TokenScheme, add_control_tokens

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
    learning_rate: float = 1e-3
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
    extra: dict[str, Any] = field(default_factory=dict)


def scheme_for(items: list[LabelledPrompt], cfg: TrainConfig) -> TokenScheme:
    """Return the token scheme: ``cfg.categories`` when given, else the categories of the refusals in
    the data (the CoCoNot short names where they match)."""
    names = cfg.categories or sorted({it.category for it in items if it.refuse and it.category})
    return TokenScheme.from_categories(names, mode=cfg.mode)


def base_answers(model_spec: str, items: list[LabelledPrompt], work_dir: Path, max_new_tokens: int,
                 *, batch_size: int = 16, log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Return ``{id: {"text", "finish_reason"}}``: the base model's own greedy answers to ``items``,
    generated once into a resumable run store under ``work_dir``."""
    from refusalkit.data.records import Example
    from refusalkit.evaluate.generation import generate_into_store, run_key
    from refusalkit.evaluate.store import RunStore
    from refusalkit.models.base import GenerationConfig
    from refusalkit.models.spec import load_model

    exs = [Example(id=it.id, prompt=it.prompt, category=it.category) for it in items]
    gcfg = GenerationConfig(max_new_tokens=max_new_tokens)
    with RunStore(work_dir / "base_answers") as store:
        store.init_run(run_key(model_spec, exs, gcfg), exs, kind="tokens-answers", model=model_spec,
                       config=gcfg.to_dict())
        pending = store.pending()
        if pending:
            log(f"base answers: {len(exs) - len(pending)} of {len(exs)} cached; generating {len(pending)}")
            model = load_model(model_spec, batch_size=batch_size)
            t0 = time.perf_counter()
            done = [0]

            def on_batch(n: int, ntok: int) -> None:
                done[0] += n
                log(f"  answers {done[0]}/{len(pending)} ({time.perf_counter() - t0:.0f}s)")

            generate_into_store(store, model, gcfg, batch_size=batch_size, on_batch=on_batch)
            del model
        return {r.id: {"text": r.response, "finish_reason": r.finish_reason} for r in store.responses()}


def encode_examples(tagged: list[dict[str, Any]], tokenizer: Any, render: Callable[[str], str],
                    token_ids: dict[str, int], max_length: int,
                    finished: dict[str, bool] | None = None) -> tuple[list[dict[str, Any]], int]:
    """Return ``(rows, n_dropped)``: input ids and labels per tagged example.

    The loss covers the response only: the control token, its text and the end-of-turn token (left out
    for answers that were cut at the generation limit, so the model does not learn to stop early). Too
    long responses are cut; prompts that leave no room for the response are dropped.
    """
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() \
        else tokenizer.eos_token_id
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
        r_ids = r_ids[:max_length - len(p_ids)]
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


def _latest_checkpoint(ckpt_dir: Path) -> str | None:
    cks = sorted(ckpt_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(cks[-1]) if cks else None


def train_tokens(cfg: TrainConfig, out_dir: str | Path, *, work_dir: str | Path | None = None,
                 log: Callable[[str], None] = print, fresh: bool = False) -> dict[str, Any]:
    """Train a refusal-token adapter and write it to ``out_dir``; return the adapter's info dict.

    ``out_dir`` receives ``adapter_model.safetensors`` (LoRA weights and the control-token rows, fp16),
    ``adapter_config.json``, ``refusal_tokens.json`` (scheme, token ids, base model hash, split manifest,
    config, loss curve) and ``splits.json`` (the ids of each split). Intermediate state (base answers,
    Trainer checkpoints) lives in ``work_dir`` (default ``out_dir/_work``); rerunning resumes from it.
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from refusalkit.models.spec import load_model

    out = Path(out_dir)
    work = Path(work_dir) if work_dir else out / "_work"
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    items = read_labelled(cfg.data)
    scheme = scheme_for(items, cfg)
    for it in items:
        if it.refuse:
            scheme.refusal_token(it.category)  # fail early on a category the scheme lacks
    splits = stratified_split(items, seed=cfg.seed, fractions=tuple(cfg.split_fractions))  # type: ignore[arg-type]
    train_items = splits["train"]
    if not any(it.refuse for it in train_items):
        raise RefusalkitError(f"{cfg.data}: the training split has no prompts to refuse")
    write_text_atomic(out / "splits.json", json.dumps(
        {"seed": cfg.seed, "fractions": list(cfg.split_fractions), "data": str(cfg.data),
         **{k: sorted(it.id for it in v) for k, v in splits.items()}}, indent=0))

    answers: dict[str, dict[str, Any]] = {}
    need = [it for it in train_items if not it.refuse and not it.response]
    if cfg.respond_target == "self" and need:
        answers = base_answers(cfg.model, need, work, cfg.answer_tokens, log=log)
    tagged = tag_examples(train_items, scheme, {k: v["text"] for k, v in answers.items()},
                          respond_target=cfg.respond_target)

    hf = load_model(cfg.model, batch_size=cfg.batch_size)
    base_dir = hf.path
    tok, model = hf.tokenizer, hf.model
    token_ids = add_control_tokens(tok, model, scheme)
    rows, dropped = encode_examples(tagged, tok, hf.render, token_ids, cfg.max_length,
                                    finished={k: v["finish_reason"] != "length" for k, v in answers.items()})
    if dropped:
        log(f"dropped {dropped} prompts longer than max_length={cfg.max_length}")
    ds = Dataset.from_list(rows)
    model.train()
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=LORA_TARGETS, task_type="CAUSAL_LM",
                      trainable_token_indices={"embed_tokens": sorted(token_ids.values())})
    pm = get_peft_model(model, lcfg)
    n_train = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    log(f"{len(rows)} training sequences ({sum(r['length'] for r in rows)} tokens); "
        f"{n_train:,} trainable parameters; tokens {token_ids}")

    history: list[dict[str, Any]] = []

    class _Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):  # noqa: D401
            if logs and state.is_world_process_zero:
                rec = {"step": state.global_step, "epoch": round(state.epoch or 0, 3), **logs}
                history.append(rec)
                with open(work / "train_log.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(rec) + "\n")
                log(f"step {state.global_step}/{state.max_steps} " +
                    " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items()))

    args = TrainingArguments(
        output_dir=str(work / "checkpoints"), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate, lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.0,
        logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2,
        report_to="none", seed=cfg.seed, data_seed=cfg.seed, train_sampling_strategy="group_by_length",
        remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=False)
    trainer = Trainer(model=pm, args=args, train_dataset=ds, data_collator=PadCollator(tok.pad_token_id),
                      callbacks=[_Log()])
    resume = _latest_checkpoint(work / "checkpoints")
    if resume:
        log(f"resuming from {resume}")
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    secs = time.perf_counter() - t0
    if not trainer.is_world_process_zero():
        return {}
    info = save_adapter(pm, out, scheme=scheme, token_ids=token_ids, base_dir=base_dir, cfg=cfg,
                        extra={"split": split_manifest(splits), "n_sequences": len(rows), "dropped": dropped,
                               "train_seconds": round(secs, 1), "train_loss": result.training_loss,
                               "global_step": result.global_step, "trainable_parameters": n_train,
                               "loss_curve": [h for h in history if "loss" in h],
                               "device": str(next(pm.parameters()).device),
                               "torch_threads": torch.get_num_threads()})
    return info


def save_adapter(peft_model: Any, out: Path, *, scheme: TokenScheme, token_ids: dict[str, int], base_dir: str,
                 cfg: TrainConfig, extra: dict[str, Any]) -> dict[str, Any]:
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
        save_file({k: v.to(torch.float16).contiguous() for k, v in sd.items()},
                  str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
        conf = json.loads((Path(tmp) / "adapter_config.json").read_text())
        conf["base_model_name_or_path"] = cfg.model
        write_text_atomic(out / "adapter_config.json", json.dumps(conf, indent=2, sort_keys=True))
    info = {"format": "refusalkit-tokens/1", "scheme": scheme.to_dict(), "token_ids": token_ids,
            "base_model": cfg.model, "base_model_sha256": model_hash(base_dir),
            "config": asdict(cfg), **extra}
    write_text_atomic(out / TOKENS_FILE, json.dumps(info, indent=2))
    return info
