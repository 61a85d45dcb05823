"""``refusalkit train``: safety training beyond refusal tokens: DeRTa data and DeRTa / vanilla safety SFT."""

from __future__ import annotations

from pathlib import Path

import typer

from refusalkit.cli import validate
from refusalkit.cli.common import console, err_console, handle_errors

train_app = typer.Typer(
    no_args_is_help=True,
    help="Safety training: DeRTa (decoupled refusal training) and vanilla safety SFT (see docs/derta.md).",
)


def _log(msg: str) -> None:
    err_console.print(msg, highlight=False, markup=False)


def _default(name: str) -> str:
    from refusalkit.data.registry import data_root

    return str(data_root() / name)


@train_app.command("derta-data")
@handle_errors
def derta_data_cmd(
    harmful: str | None = typer.Argument(
        None,
        help="Harmful answers: JailbreakBench artifacts (jailbroken rows; q = goal) or prompt/response rows "
        "(default: jbb_artifacts.jsonl in the data root).",
    ),
    output: Path = typer.Option(
        ..., "-o", "--output", help="DeRTa data (JSONL) to write; its card goes to OUTPUT.card.json."
    ),
    harmless: str | None = typer.Option(
        None, help="Harmless instructions (default: harmless_instructions.jsonl in the data root)."
    ),
    harmless_split: str = typer.Option("train", help="Rows of this split only (when the file has 'split'; '' = all)."),
    harmless_answers: str | None = typer.Option(
        None, help="Answers to the harmless prompts (a `refusalkit generate` output), unless the file has 'response'."
    ),
    model_answers: str | None = typer.Option(
        None,
        help="A `generate` output of the target model on harmful requests: compliant answers join rhat, "
        "refusals become r for their prompt (judged by --detector).",
    ),
    detector: str = typer.Option("default", help="Refusal detector that judges --model-answers."),
    model: str = typer.Option("default", "--model", "-m", help="Model whose tokenizer measures k (the one you train)."),
    n_harmful: int = typer.Option(400, help="Harmful examples (tense examples included)."),
    n_harmless: int = typer.Option(200, help="Harmless examples."),
    k0_share: float = typer.Option(1 / 3, help="Share of harmful examples with k = 0 (no harmful prefix)."),
    max_response_tokens: int = typer.Option(96, help="rhat is cut to this many tokens; k is uniform up to it."),
    tense: str | None = typer.Option(None, help="Tense augmentation: past, future or past,future (needs --attacker)."),
    attacker: str | None = typer.Option(None, help="Model that rewrites requests for --tense."),
    tense_file: str | None = typer.Option(None, help="Ready tense rewrites (prompt, optional original/transform)."),
    tense_requests: str | None = typer.Option(
        None, help="Requests to rewrite for --tense (prompt rows; default: the mix's harmful queries)."
    ),
    tense_split: str = typer.Option("train", help="Rows of this split of --tense-requests only ('' = all)."),
    tense_share: float = typer.Option(
        0.05, help="Share of the mix that is tense refusals (with --tense/--tense-file)."
    ),
    seed: int = typer.Option(1234),
    batch_size: int = typer.Option(16, help="Attacker batch size."),
) -> None:
    """Build DeRTa training data: (q, rhat, r) triples with harmful prefix lengths k, harmless instructions
    with their answers, and optional past/future-tense refusals (the past-tense defence)."""
    import json

    from refusalkit.data.io import read_records, require_str, write_jsonl_atomic, write_text_atomic
    from refusalkit.errors import RefusalkitError

    harmful = harmful or _default("jbb_artifacts.jsonl")
    harmless = harmless or _default("harmless_instructions.jsonl")
    for opt, v in (
        ("--n-harmful", n_harmful),
        ("--max-response-tokens", max_response_tokens),
        ("--batch-size", batch_size),
    ):
        validate.positive(opt, v)
    if n_harmless < 0:
        raise RefusalkitError(f"--n-harmless: expected 0 or more, got {n_harmless}")
    validate.probability("--k0-share", k0_share, zero_ok=True)
    validate.probability("--tense-share", tense_share, zero_ok=True)
    if tense and not attacker:
        raise RefusalkitError("--tense needs --attacker (the model that rewrites the requests), or use --tense-file")
    if tense and tense_file:
        raise RefusalkitError("--tense and --tense-file: give one of them")
    inputs = [harmful, harmless, harmless_answers, model_answers, tense_file, tense_requests]
    validate.output_file("--output", output, inputs=[validate.input_path(p) for p in inputs if p])
    card_path = output.with_name(output.name.removesuffix(".jsonl") + ".card.json")
    validate.output_file("card (OUTPUT.card.json)", card_path)

    from refusalkit.models.spec import ModelSpec
    from refusalkit.training.derta_data import (
        BuildConfig,
        build_derta_data,
        read_harmful_pairs,
        read_harmless,
        read_tense_file,
        split_model_answers,
    )

    pairs = read_harmful_pairs(harmful)
    refusals: dict[str, str] = {}
    if model_answers:
        from refusalkit.detect.registry import get_detector

        det = get_detector(detector)

        def complied(responses: list[str], prompts: list[str]) -> list[bool]:
            from refusalkit.data.records import Response

            rs = [Response(id=str(i), prompt=p, response=r) for i, (p, r) in enumerate(zip(prompts, responses))]
            return [v.verdict == "full_compliance" for v in det.judge(rs)]

        own, refusals = split_model_answers(model_answers, complied)
        _log(f"{model_answers}: {len(own)} compliant answers join rhat, {len(refusals)} refusals used as r")
        pairs += own
    hl = read_harmless(harmless, harmless_answers, split=harmless_split or None) if n_harmless else []
    tense_rows = None
    if tense_file:
        tense_rows = read_tense_file(tense_file)
    elif tense:
        import random

        names = [t.strip() for t in tense.split(",") if t.strip()]
        n_need = round(tense_share * (n_harmful + n_harmless))
        if tense_requests:
            rows = [
                r
                for r in read_records(tense_requests)
                if not (tense_split and r.get("split", tense_split) != tense_split)
            ]
            reqs = [
                {"prompt": require_str(r, "prompt", file=tense_requests), "category": r.get("category")} for r in rows
            ]
        else:
            seen: dict[str, dict] = {}
            for p in pairs:
                seen.setdefault(p["prompt"], {"prompt": p["prompt"], "category": p.get("category")})
            reqs = list(seen.values())
        reqs = random.Random(seed).sample(reqs, min(n_need, len(reqs)))
        _log(f"rewriting {len(reqs)} requests ({', '.join(names)}) with {ModelSpec.parse(attacker or '').display}")
        from refusalkit.training.derta_data import rewrite_with_attacker

        tense_rows = rewrite_with_attacker(reqs, attacker or "", names, seed=seed, batch_size=batch_size, log=_log)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ModelSpec.parse(model).weights_source())
    cfg = BuildConfig(
        n_harmful=n_harmful,
        n_harmless=n_harmless,
        k0_share=k0_share,
        max_response_tokens=max_response_tokens,
        tense_share=tense_share if tense_rows else 0.0,
        seed=seed,
    )
    rows, card = build_derta_data(pairs, hl, tok, cfg, refusals=refusals, tense=tense_rows)
    card["inputs"] = {
        "harmful": harmful,
        "harmless": harmless,
        "harmless_answers": harmless_answers,
        "model_answers": model_answers,
        "tense": tense,
        "attacker": ModelSpec.parse(attacker).display if attacker else None,
        "tense_file": tense_file,
        "tokenizer_of": ModelSpec.parse(model).display,
    }
    n = write_jsonl_atomic(output, rows)
    write_text_atomic(card_path, json.dumps(card, indent=2) + "\n")
    k = card["k"]
    console.print(
        f"wrote {n} rows to {output} ({', '.join(f'{v} {kk}' for kk, v in card['by_kind'].items())}; "
        f"k = 0 for {100 * (k['zero_share'] or 0):.0f}% of harmful rows, median k {k['median']}); card: {card_path}",
        markup=False,
    )


@train_app.command("derta")
@handle_errors
def derta_cmd(
    data: str = typer.Argument(..., help="DeRTa data from `refusalkit train derta-data`."),
    output: Path = typer.Option(..., "-o", "--output", help="Adapter folder to write (a peft LoRA adapter)."),
    model: str = typer.Option("default", "--model", "-m", help="Base model: default | PATH | org/name."),
    objective: str = typer.Option(
        "derta", help="derta (MLE after a harmful prefix + RTO) | sft (vanilla safety SFT: r after q)."
    ),
    rto_weight: float = typer.Option(1.0, help="Weight of the RTO term (derta)."),
    max_length: int = typer.Option(256, help="Longest training sequence in tokens."),
    epochs: float = typer.Option(1.0),
    max_steps: int = typer.Option(-1, help="Stop after N optimiser steps (overrides --epochs)."),
    learning_rate: float = typer.Option(2e-4),
    batch_size: int = typer.Option(8, help="Sequences per device per step."),
    grad_accum: int = typer.Option(1),
    lora_r: int = typer.Option(8),
    lora_alpha: int = typer.Option(16),
    seed: int = typer.Option(1234, help="Seed of training."),
    save_steps: int = typer.Option(25, help="Checkpoint every N steps (rerun the command to resume)."),
    work_dir: Path | None = typer.Option(None, help="Checkpoints (default OUTPUT/_work)."),
    threads: int | None = typer.Option(None, help="CPU threads for torch."),
    fresh: bool = typer.Option(False, help="Discard checkpoints."),
) -> None:
    """Train a LoRA adapter with DeRTa or vanilla safety SFT; rerunning the same command resumes."""
    from refusalkit.errors import RefusalkitError

    for opt, v in (
        ("--max-length", max_length),
        ("--batch-size", batch_size),
        ("--grad-accum", grad_accum),
        ("--lora-r", lora_r),
        ("--lora-alpha", lora_alpha),
        ("--save-steps", save_steps),
        ("--threads", threads),
    ):
        validate.positive(opt, v)
    validate.above("--epochs", epochs, 0)
    validate.above("--learning-rate", learning_rate, 0)
    validate.at_least("--rto-weight", rto_weight, 0)
    if max_steps != -1:
        validate.positive("--max-steps (or -1 for --epochs)", max_steps)
    from refusalkit.training.derta import OBJECTIVES

    if objective not in OBJECTIVES:
        raise RefusalkitError(f"--objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    validate.output_dir("--output", output)
    validate.output_dir("--work-dir", work_dir)
    from refusalkit.models.spec import ModelSpec

    spec = ModelSpec.parse(model)
    if spec.is_endpoint:
        raise RefusalkitError(f"--model {spec.display} is an endpoint; training needs a local model")
    from refusalkit.training.derta import DertaConfig, train_derta
    from refusalkit.training.derta_data import read_derta_data

    read_derta_data(data)  # bad data: one line, before torch loads
    if threads:
        import torch

        torch.set_num_threads(threads)
    cfg = DertaConfig(
        data=data,
        model=model,
        objective=objective,
        rto_weight=rto_weight,
        max_length=max_length,
        epochs=epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        grad_accum=grad_accum,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        seed=seed,
        save_steps=save_steps,
    )
    info = train_derta(cfg, output, work_dir=work_dir, log=_log, fresh=fresh)
    if info:
        console.print(
            f"adapter written to {output} ({objective}: {info['global_step']} steps, loss {info['train_loss']:.3f}, "
            f"{info['train_seconds']:.0f}s); use it with `refusalkit generate --model {spec.display} --adapter {output}`",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    """Add the ``train`` command group to ``app``."""
    app.add_typer(train_app, name="train")
