"""``refusalkit latent probe train | cliff | heads | select``: the refusal-cliff analysis (PAPERS.md section 5):
refusal probes, cliff scans of reasoning traces, refusal-suppression heads and Cliff-as-a-Judge selection.
Registered on the ``latent`` group by ``refusalkit.cli.latent.register``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from refusalkit.cli.common import Seed, SystemPrompt, Temperature, TopP, console, err_console, handle_errors
from refusalkit.errors import RefusalkitError

probe_app = typer.Typer(no_args_is_help=True, help="Refusal probes on the residual stream (refusal-cliff paper).")

_PROBE = typer.Option(..., "--probe", "-p", help="Probe artifact folder (from `latent probe train`).")
_MODEL = typer.Option(None, "--model", "-m", help="Model (default: the one the probe was trained on).")
_DETECTOR = typer.Option(None, "--detector", help="Detector judging answers (default: the shipped default).")
_DTYPE = typer.Option("auto", help="auto | float32 | bfloat16 | float16 | model")


def _say(m: str) -> None:
    err_console.print(m, markup=False, highlight=False)


def _fractions(option: str, s: str) -> list[float]:
    try:
        out = [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise RefusalkitError(f"{option}: expected fractions like 0,0.01,0.03, got {s!r}") from None
    if not out or any(not 0 <= f <= 1 for f in out):
        raise RefusalkitError(f"{option}: every fraction must be in [0, 1], got {s!r}")
    return out


def _detector(name: str | None) -> Any:
    from refusalkit.evaluate.judge import resolve_detector

    return resolve_detector(name)


@probe_app.command("train")
@handle_errors
def probe_train_cmd(
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the probe artifact."),
    model: str = typer.Option("default", "--model", "-m", help="default | subject | PATH | org/name"),
    harmful: str | None = typer.Option(
        None,
        help="Harmful prompts (label 1) with a 'split' field; default: harmful_instructions.jsonl in the data folder.",
    ),
    harmless: str | None = typer.Option(
        None, help="Harmless prompts (label 0) with a 'split' field; default: harmless_instructions.jsonl."
    ),
    harmful_val: str | None = typer.Option(None, help="Harmful validation prompts as a separate file."),
    harmless_val: str | None = typer.Option(None, help="Harmless validation prompts as a separate file."),
    responses: str | None = typer.Option(
        None,
        help="Instead of the splits: the model's own responses (prompt, response; optional split train/val), "
        "labelled refused/answered by --detector.",
    ),
    detector: str | None = _DETECTOR,
    n_train: int = typer.Option(260, help="Training prompts per class (a seeded sample)."),
    n_val_harmful: int = typer.Option(39),
    n_val_harmless: int = typer.Option(39),
    c: float = typer.Option(1.0, "--c", help="Inverse L2 regularisation of the logistic probes (scikit-learn's C)."),
    batch_size: int = typer.Option(8),
    seed: int = typer.Option(0),
    dtype: str = _DTYPE,
) -> None:
    """Train a logistic refusal probe per layer on the last prompt position, calibrate it and choose the best
    layer on validation prompts; write the probe artifact (probe.safetensors, card.json, manifest.json)."""
    from refusalkit.cli import validate
    from refusalkit.cli.latent import _default_data
    from refusalkit.latent.probe import data_from_responses, data_from_splits, save_probe, train_probe
    from refusalkit.latent.use import load_hf

    for opt, v in (("--n-train", n_train), ("--n-val-harmful", n_val_harmful), ("--n-val-harmless", n_val_harmless)):
        validate.positive(opt, v)
    validate.positive("--batch-size", batch_size)
    validate.above("--c", c, 0.0)
    validate.output_dir("--output", output)
    if responses is not None:
        if not Path(responses).is_file():
            raise RefusalkitError(f"--responses {responses}: no such file")
        data = data_from_responses(responses, _detector(detector), seed=seed)
    else:
        data = data_from_splits(
            harmful or _default_data("harmful_instructions.jsonl"),
            harmless or _default_data("harmless_instructions.jsonl"),
            harmful_val=harmful_val,
            harmless_val=harmless_val,
            n_train=n_train,
            n_val_harmful=n_val_harmful,
            n_val_harmless=n_val_harmless,
            seed=seed,
        )
    hf = load_hf(model, batch_size=batch_size, dtype=dtype)
    probe, card = train_probe(hf, model, data, c=c, batch_size=batch_size, seed=seed, status=_say)
    save_probe(output, probe, card)
    console.print(
        f"probe written to {output}: best layer {probe.layer} (validation AUROC "
        f"{card['val_auroc'][probe.layer]:.4f}) of {len(card['val_auroc'])}",
        markup=False,
        highlight=False,
    )


def _load_inputs(input: str, limit: int | None):
    from refusalkit.data.registry import resolve_prompts

    return resolve_prompts(input, limit=limit)


@handle_errors
def cliff_cmd(
    input: str = typer.Argument(..., help="Prompt file (.jsonl/.csv with a 'prompt' field) or benchmark name."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for cliff.jsonl, cliff.png and report.html."),
    probe: str = _PROBE,
    model: str | None = _MODEL,
    window: int = typer.Option(5, help="W: the cliff compares the thinking's peak with the last W positions."),
    think: bool | None = typer.Option(
        None,
        "--think/--cot",
        help="--think: prompts as they are (a reasoning model's template opens <think>); --cot: the "
        "chain-of-thought surrogate prompt. Default: --think when the chat template has <think>.",
    ),
    answer_tokens: int = typer.Option(64, help="Tokens of answer generated after closing an unfinished thinking."),
    limit: int | None = typer.Option(None, help="Only the first N prompts."),
    batch_size: int = typer.Option(8, help="Prompts per batch."),
    max_new_tokens: int = typer.Option(256, help="New tokens per trace (thinking and answer)."),
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    seed: Seed = None,
    system_prompt: SystemPrompt = None,
    detector: str | None = _DETECTOR,
    dtype: str = _DTYPE,
) -> None:
    """Generate a reasoning trace per prompt, score every generated token with the probe, and write per prompt
    tokens, scores, the thinking/answer boundary, the detector's verdict on the answer and the cliff statistic,
    with a summary plot and an HTML report."""
    from refusalkit.artifacts import json_bytes, write_artifact
    from refusalkit.cli import validate
    from refusalkit.data.io import dumps_strict
    from refusalkit.latent.cliff import scan, summarize, uses_think
    from refusalkit.latent.cliff_report import report_html, summary_plot
    from refusalkit.latent.probe import load_probe, load_probe_for

    validate.generation(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        limit=limit,
        seed=seed,
    )
    validate.positive("--window", window)
    validate.at_least("--answer-tokens", answer_tokens, 0)
    validate.output_dir("--output", output)
    load_probe(probe)  # a bad artifact fails before the prompts are read or the model loads
    examples = _load_inputs(input, limit)
    det = _detector(detector)
    pr, hf = load_probe_for(probe, model, batch_size=batch_size, dtype=dtype)
    th = uses_think(hf.tokenizer) if think is None else think
    _say(f"scanning {len(examples)} prompts ({'reasoning template' if th else 'chain-of-thought surrogate'})")
    recs = scan(
        hf,
        pr,
        [e.prompt for e in examples],
        det,
        window=window,
        batch_size=batch_size,
        system_prompt=system_prompt,
        max_new_tokens=max_new_tokens,
        answer_tokens=answer_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        think=th,
    )
    for e, r in zip(examples, recs):
        r["id"] = e.id
    summary = summarize(recs)
    meta = {
        "model": (pr.card or {}).get("model", {}).get("id") if model is None else model,
        "probe": str(probe),
        "probe_layer": pr.layer,
        "prompting": "reasoning template" if th else "chain-of-thought surrogate (COT_TEMPLATE)",
        "window": window,
        "max_new_tokens": max_new_tokens,
        "answer_tokens": answer_tokens,
        "temperature": temperature,
        "detector": getattr(det, "name", str(detector)),
    }
    png = summary_plot(recs, window)
    ordered = [{"id": r["id"], **{k: v for k, v in r.items() if k != "id"}} for r in recs]
    files: dict[str, bytes | str] = {
        "cliff.jsonl": "".join(dumps_strict(r) + "\n" for r in ordered),
        "cliff.png": png,
        "report.html": report_html(ordered, summary, png, meta),
        "summary.json": json_bytes({**meta, **summary}),
    }
    write_artifact(
        output,
        files,
        {
            "kind": "refusalkit-latent-cliff",
            "format": 1,
            **meta,
            "probe_fingerprint": (pr.card or {}).get("model", {}).get("fingerprint"),
            "summary": summary,
        },
    )
    console.print(
        f"wrote {len(recs)} traces to {output / 'cliff.jsonl'}: {summary['n_refused']} refused, "
        f"{summary['n_complied']} complied, mean cliff {summary['mean_cliff']}; report {output / 'report.html'}",
        markup=False,
        highlight=False,
    )


def _is_harmless(e: Any) -> bool:
    return (e.expected == "comply") or (str(e.label or "").lower() in ("safe", "harmless", "should_comply", "0"))


@handle_errors
def heads_cmd(
    input: str = typer.Argument(..., help="Prompts (harmful; rows labelled safe/expected comply count as harmless)."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for ranking.json, curve.json and curve.png."),
    probe: str = _PROBE,
    model: str | None = _MODEL,
    harmless: str | None = typer.Option(None, help="Harmless prompts for the harmless refusal rate beside the curve."),
    factor: float = typer.Option(0.0, help="Scale applied to one head at a time for the attribution (0 = ablate)."),
    fractions: str = typer.Option("0,0.01,0.03,0.05", help="k as fractions of all heads for the refusal curve."),
    mode: str = typer.Option("ablate", help="ablate | amplify: what the curve does to the top-k heads."),
    amplify: float = typer.Option(2.0, help="Factor for --mode amplify (above 1)."),
    no_curve: bool = typer.Option(False, "--no-curve", help="Only the ranking (no generation)."),
    limit: int | None = typer.Option(None, help="Only the first N prompts of INPUT (and of --harmless)."),
    batch_size: int = typer.Option(8, help="Prompts per batch."),
    max_new_tokens: int = typer.Option(64, help="New tokens per answer in the curve."),
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    seed: Seed = None,
    system_prompt: SystemPrompt = None,
    detector: str | None = _DETECTOR,
    dtype: str = _DTYPE,
) -> None:
    """Rank attention heads by how much scaling each one raises the probe's refusal score at the last prompt
    position (refusal-suppression heads first), then measure the refusal rate with the top-k heads ablated or
    amplified during generation."""
    from refusalkit.artifacts import json_bytes, write_artifact
    from refusalkit.cli import validate
    from refusalkit.latent.heads import attention_layout, attribute, k_for, refusal_curve
    from refusalkit.latent.probe import load_probe, load_probe_for

    validate.generation(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        limit=limit,
        seed=seed,
    )
    validate.probability("--factor", factor, zero_ok=True)
    if mode not in ("ablate", "amplify"):
        raise RefusalkitError(f"--mode must be ablate or amplify, got {mode!r}")
    if mode == "amplify":
        validate.above("--amplify", amplify, 1.0)
    fr = _fractions("--fractions", fractions)
    validate.output_dir("--output", output)
    load_probe(probe)
    examples = _load_inputs(input, limit)
    extra = _load_inputs(harmless, limit) if harmless else []
    det = _detector(detector)
    pr, hf = load_probe_for(probe, model, batch_size=batch_size, dtype=dtype)
    if pr.layer == 0:
        raise RefusalkitError(f"--probe {probe}: the probe reads layer 0 (the embeddings); no head comes before it")
    lay = attention_layout(hf.model)
    harmful_p = [e.prompt for e in examples if not _is_harmless(e)]
    harmless_p = [e.prompt for e in examples if _is_harmless(e)] + [e.prompt for e in extra]
    if not harmful_p:
        raise RefusalkitError(f"{input}: no harmful prompts to attribute (every row is labelled safe)")
    _say(
        f"attributing {min(pr.layer, lay.n_layers) * lay.n_heads} heads (layers below the probe's layer {pr.layer}) "
        f"on {len(harmful_p)} prompts"
    )
    base, ranking = attribute(hf, pr, harmful_p, factor=factor, batch_size=batch_size, system_prompt=system_prompt)
    curve: list[dict[str, Any]] = []
    if not no_curve:
        cfg = validate.generation_config(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, system_prompt=system_prompt
        )
        curve = refusal_curve(
            hf,
            ranking,
            {"harmful": harmful_p, "harmless": harmless_p},
            fr,
            det,
            mode=mode,
            factor=amplify,
            config=cfg,
            batch_size=batch_size,
            on_point=lambda p: _say(f"  k={p['k']:>3} ({p['fraction']:.3f}): refusal rate {p['refusal_rate']}"),
        )
    meta = {
        "model": (pr.card or {}).get("model", {}).get("id") if model is None else model,
        "probe": str(probe),
        "probe_layer": pr.layer,
        "n_layers": lay.n_layers,
        "n_heads": lay.n_heads,
        "head_dim": lay.head_dim,
        "out_proj": lay.names[0],
        "factor": factor,
        "base_score": round(base, 6),
        "mode": mode,
        "amplify": amplify if mode == "amplify" else None,
        "k": {str(f): k_for(f, lay.total) for f in fr},
    }
    files: dict[str, bytes | str] = {"ranking.json": json_bytes({**meta, "ranking": ranking})}
    if curve:
        files["curve.json"] = json_bytes({**meta, "curve": curve})
        files["curve.png"] = _curve_png(curve, mode)
    write_artifact(output, files, {"kind": "refusalkit-latent-heads", "format": 1, **meta})
    top = ", ".join(f"L{r['layer']}H{r['head']} {r['delta_logit']:+.3f}" for r in ranking[:5])
    console.print(
        f"wrote {output}: base score {base:.3f}; top heads (logit change) {top}", markup=False, highlight=False
    )


def _curve_png(curve: list[dict[str, Any]], mode: str) -> bytes:
    from refusalkit.latent.report import _plt, _png

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    for name in sorted({g for p in curve for g in p["refusal_rate"]}):
        pts = [(p["fraction"] * 100, p["refusal_rate"][name]) for p in curve if name in p["refusal_rate"]]
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=name)
    ax.set_xlabel(f"% of heads {'ablated' if mode == 'ablate' else 'amplified'} (top of the ranking)")
    ax.set_ylabel("refusal rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend()
    return _png(fig)


@handle_errors
def select_cmd(
    pool: str = typer.Argument(..., help="Pool of (harmful) training prompts: JSONL/CSV with a 'prompt' field."),
    output: Path = typer.Option(..., "-o", "--output", help="Selected rows (JSONL): the input fields plus the score."),
    probe: str | None = typer.Option(None, "--probe", "-p", help="Probe artifact folder (not needed with --random)."),
    fraction: float = typer.Option(..., "--fraction", help="Share of the pool to keep, in (0, 1]."),
    model: str | None = _MODEL,
    random_: bool = typer.Option(False, "--random", help="Baseline: a seeded random sample of the same size."),
    seed: int = typer.Option(0, help="Seed of --random (and of sampling when --temperature > 0)."),
    no_generate: bool = typer.Option(
        False, "--no-generate", help="Score by the probe at the last prompt position instead of the cliff of a trace."
    ),
    window: int = typer.Option(5, help="W of the cliff statistic."),
    think: bool | None = typer.Option(None, "--think/--cot", help="As in `latent cliff`."),
    answer_tokens: int = typer.Option(64, help="As in `latent cliff`."),
    limit: int | None = typer.Option(None, help="Only the first N pool prompts."),
    batch_size: int = typer.Option(8, help="Prompts per batch."),
    max_new_tokens: int = typer.Option(256, help="New tokens per trace."),
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    system_prompt: SystemPrompt = None,
    detector: str | None = _DETECTOR,
    dtype: str = _DTYPE,
) -> None:
    """Cliff-as-a-Judge: score every pool prompt (the cliff of the model's reasoning trace, or the last-position
    probe score with --no-generate) and write the worst FRACTION as training data; --random writes a seeded
    random sample of the same size instead (the baseline)."""
    from refusalkit.cli import validate
    from refusalkit.data.io import write_jsonl_atomic
    from refusalkit.latent.select import n_for, select_random, select_worst, selected_rows

    validate.generation(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        limit=limit,
        seed=seed,
    )
    validate.probability("--fraction", fraction)
    validate.positive("--window", window)
    validate.output_file("--output", output, inputs=[validate.input_path(pool)])
    if not random_ and probe is None:
        raise RefusalkitError("--probe is required unless --random is given")
    if probe is not None and not random_:
        from refusalkit.latent.probe import load_probe

        load_probe(probe)
    examples = _load_inputs(pool, limit)
    if not examples:
        raise RefusalkitError(f"{pool}: the pool has no prompts")
    rows = [e.to_dict() for e in examples]
    if random_:
        idx = select_random(len(rows), fraction, seed)
        out = selected_rows(rows, idx, None, None, "random")
    else:
        from refusalkit.latent.probe import load_probe_for

        assert probe is not None
        pr, hf = load_probe_for(probe, model, batch_size=batch_size, dtype=dtype)
        prompts = [e.prompt for e in examples]
        if no_generate:
            from refusalkit.latent.probe import prompt_scores

            kind = "last_p_refusal"
            scores: list[float | None] = [
                float(v) for v in prompt_scores(hf, pr, prompts, batch_size=batch_size, system_prompt=system_prompt)
            ]
        else:
            from refusalkit.latent.cliff import scan

            kind = "cliff"
            recs = scan(
                hf,
                pr,
                prompts,
                _detector(detector),
                window=window,
                batch_size=batch_size,
                system_prompt=system_prompt,
                max_new_tokens=max_new_tokens,
                answer_tokens=answer_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                think=think,
            )
            scores = [r["cliff"] for r in recs]
            for row, r in zip(rows, recs):
                row["_verdict"] = r["verdict"]
        idx = select_worst(scores, kind, fraction)
        out = selected_rows(rows, idx, scores, kind, "cliff-as-a-judge")
        for r in out:
            if "_verdict" in r:
                r["model_verdict"] = r.pop("_verdict")
    n = write_jsonl_atomic(output, out)
    console.print(
        f"wrote {n} of {len(rows)} pool prompts ({n_for(fraction, len(rows))} = {fraction:g} of the pool, "
        f"{'random' if random_ else 'worst first'}) to {output}",
        markup=False,
        highlight=False,
    )


def register(latent_app: typer.Typer) -> None:
    """Add ``probe train``, ``cliff``, ``heads`` and ``select`` to the ``latent`` command group."""
    latent_app.add_typer(probe_app, name="probe")
    latent_app.command("cliff")(cliff_cmd)
    latent_app.command("heads")(heads_cmd)
    latent_app.command("select")(select_cmd)
