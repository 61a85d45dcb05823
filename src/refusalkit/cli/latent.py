"""``refusalkit latent``: extract refusal/harmfulness directions, generate with them ablated or added, score
prompts with the Latent Guard, and export an abliterated model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from refusalkit.cli import validate
from refusalkit.cli.common import (
    BatchSize,
    Limit,
    Seed,
    SystemPrompt,
    Temperature,
    TopP,
    console,
    err_console,
    handle_errors,
)
from refusalkit.errors import RefusalkitError

if TYPE_CHECKING:
    from refusalkit.models.base import GenerationConfig

_GUARD_POSITIONS = typer.Option(
    None,
    help="Positions the Latent Guard may read, comma-separated (inst, post-5 ... post-1); default: every captured "
    "position, the one that separates the validation prompts best is chosen. 'inst' keeps Zhao et al.'s position.",
)
_DTYPE = typer.Option(
    "auto",
    help="auto (float32 on a CPU without native bfloat16, else the checkpoint's) | "
    "float32 | bfloat16 | float16 | model",
)
latent_app = typer.Typer(
    no_args_is_help=True,
    help="Refusal and harmfulness directions: extract, ablate, steer, "
    "guard, export (Arditi et al. 2024; Zhao et al. 2025).",
)


def _int_list(option: str, s: str | None) -> list[int] | None:
    """Parse '8,10,12' or '8-20' (inclusive) or a mix."""
    if not s:
        return None
    out: list[int] = []
    for part in (p.strip() for p in s.split(",") if p.strip()):
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise RefusalkitError(f"{option}: bad layer list {s!r}; use e.g. 8,10,12 or 8-20") from None
    return out


def _default_data(name: str) -> str:
    from refusalkit.data.registry import data_root

    d = data_root()
    if not (d / name).is_file():
        raise RefusalkitError(
            f"no default {name}: pass the file explicitly or set REFUSALKIT_DATA to the folder holding it"
        )
    return str(d / name)


@latent_app.command("extract")
@handle_errors
def extract_cmd(
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the direction artifact and its report."),
    model: str = typer.Option("default", "--model", "-m", help="default | subject | PATH | org/name"),
    harmful: str | None = typer.Option(
        None,
        help="Harmful prompts with a 'split' field (train/val); default: "
        "harmful_instructions.jsonl in the data folder.",
    ),
    harmless: str | None = typer.Option(
        None, help="Harmless prompts with a 'split' field; default: harmless_instructions.jsonl in the data folder."
    ),
    harmful_val: str | None = typer.Option(None, help="Harmful validation prompts as a separate file."),
    harmless_val: str | None = typer.Option(None, help="Harmless validation prompts as a separate file."),
    n_train: int = typer.Option(260, help="Training prompts per class (a seeded sample)."),
    n_val_harmful: int = typer.Option(39),
    n_val_harmless: int = typer.Option(64),
    positions: str = typer.Option("inst,post", help="Positions to capture: inst, post, last, or offsets like -1,-2."),
    layers: str | None = typer.Option(
        None, help="Candidate layers, e.g. '8-20' or '10,12,14' (default: all below --max-layer-frac of the depth)."
    ),
    candidate_positions: str | None = typer.Option(
        None, help="Candidate positions, e.g. 'post-1,post-5' (default: every post-instruction position)."
    ),
    max_candidates: int = typer.Option(
        16, help="Score at most this many (layer, position) candidates (evenly thinned grid)."
    ),
    max_layer_frac: float = typer.Option(0.8, help="Skip candidates in the last (1 - this) of the layers."),
    kl_max: float = typer.Option(0.1, help="Largest harmless first-token KL a selected ablation may cause."),
    coefs: str = typer.Option("0,0.5,1,1.5,2", help="Addition coefficients for the refusal-vs-coefficient sweep."),
    judge_n: int = typer.Option(32, help="Harmless prompts in the harmfulness-vs-refusal steering check."),
    guard_method: str = typer.Option(
        "projection",
        help="Latent Guard score per layer: 'projection' on the harmfulness direction (from the midpoint of the "
        "class means) or 'cosine' (Zhao et al.: cosine to the harmful mean minus cosine to the harmless mean).",
    ),
    guard_positions: str | None = _GUARD_POSITIONS,
    batch_size: int = typer.Option(8),
    seed: int = typer.Option(0),
    dtype: str = _DTYPE,
) -> None:
    """Extract the refusal direction (selected as Arditi et al.) and the harmfulness direction (Zhao et al.),
    fit the Latent Guard, and write the artifact with a report (report.html, PNG plots)."""
    from refusalkit.cli import validate
    from refusalkit.latent.artifact import save_artifact
    from refusalkit.latent.extract import ExtractConfig, extract
    from refusalkit.latent.guard import GUARD_METHODS
    from refusalkit.latent.report import report_files
    from refusalkit.latent.use import load_hf

    for opt, v in (
        ("--n-train", n_train),
        ("--n-val-harmful", n_val_harmful),
        ("--n-val-harmless", n_val_harmless),
        ("--max-candidates", max_candidates),
        ("--batch-size", batch_size),
    ):
        validate.positive(opt, v)
    validate.probability("--max-layer-frac", max_layer_frac)
    validate.above("--kl-max", kl_max, 0.0)
    validate.output_dir("--output", output)
    validate.positive("--judge-n", judge_n)
    if guard_method not in GUARD_METHODS:
        raise RefusalkitError(f"--guard-method: choose from {', '.join(GUARD_METHODS)}, got {guard_method!r}")
    try:
        coef_list = [float(c) for c in coefs.split(",") if c.strip()]
    except ValueError:
        raise RefusalkitError(f"--coefs: expected numbers like 0,0.5,1, got {coefs!r}") from None
    cfg = ExtractConfig(
        harmful=harmful or _default_data("harmful_instructions.jsonl"),
        harmless=harmless or _default_data("harmless_instructions.jsonl"),
        harmful_val=harmful_val,
        harmless_val=harmless_val,
        n_train=n_train,
        n_val_harmful=n_val_harmful,
        n_val_harmless=n_val_harmless,
        positions=positions,
        layers=_int_list("--layers", layers),
        candidate_positions=[p.strip() for p in candidate_positions.split(",")] if candidate_positions else None,
        max_candidates=max_candidates,
        max_layer_frac=max_layer_frac,
        kl_max=kl_max,
        batch_size=batch_size,
        seed=seed,
        coefs=coef_list,
        judge_n=judge_n,
        guard_method=guard_method,
        guard_positions=_names("--guard-positions", guard_positions),
    )
    hf = load_hf(model, batch_size=batch_size, dtype=dtype)
    tensors, card = extract(hf, model, cfg, status=lambda m: err_console.print(m, markup=False, highlight=False))
    files = report_files(card)
    save_artifact(output, tensors, card, extra_files=files)
    r = card["refusal"]
    console.print(
        f"direction written to {output}: refusal layer {r['layer']} {r['position']} (harmful val refusal "
        f"p {r['baseline']['harmful_p']:.3f} -> {r['selected']['bypass_p']:.3f} ablated, KL "
        f"{r['selected']['kl']:.4f}); guard {_guard_where(card['guard'])}; report "
        f"{output / 'report.html'}",
        markup=False,
        highlight=False,
    )


def _names(opt: str, value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise RefusalkitError(f"{opt}: give position names such as inst or inst,post-1")
    return names


def _guard_where(g: dict) -> str:
    pos = g.get("positions") or ["inst"]
    return f"at {pos[0]}, layers {g['layers']}"


def _generate_with(
    input: str,
    output: Path,
    direction: str,
    model: str | None,
    op: dict,
    cfg: GenerationConfig,
    *,
    limit: int | None,
    batch_size: int,
    run_dir: Path | None,
    fresh: bool,
) -> None:
    """Generate like ``refusalkit generate`` (same run store, resuming, output rows) with an intervention."""
    from refusalkit.cli import validate
    from refusalkit.cli.common import RunBar
    from refusalkit.data.io import write_jsonl_atomic
    from refusalkit.data.registry import resolve_prompts
    from refusalkit.latent.artifact import load_artifact
    from refusalkit.latent.intervene import InterventionModel
    from refusalkit.latent.use import ablation_spec, load_for, steer_spec
    from refusalkit.runs import RunStore, run_resumable

    validate.output_file("--output", output, inputs=[validate.input_path(input)])
    validate.output_dir("--run-dir", run_dir)
    art = load_artifact(direction)  # fail fast on a bad artifact, before reading prompts or loading anything
    spec_model = model or art.card["model"]["id"]
    examples = resolve_prompts(input, limit=limit)
    from refusalkit.models.context import check_examples

    check_examples(spec_model, examples, max_new_tokens=cfg.max_new_tokens, system_prompt=cfg.system_prompt)
    fp = art.card["model"]["fingerprint"]

    def loader():
        a, hf = load_for(direction, model, batch_size=batch_size)
        spec = (
            ablation_spec(a)
            if op["op"] == "ablate"
            else steer_spec(a, op["coef"], layer=op.get("layer"), vector=op["vector"], ablate_first=op["ablate_first"])
        )
        return InterventionModel(hf, spec, name=f"{hf.name}+latent-{op['op']}")

    import hashlib

    dir_hash = hashlib.sha256((Path(direction) / "directions.safetensors").read_bytes()).hexdigest()[:16]
    with RunBar() as bar:
        res = run_resumable(
            examples,
            loader,
            cfg,
            run_dir,
            fresh=fresh,
            kind="latent",
            model_id=f"{spec_model}|latent",
            key_extra={"latent": {**op, "direction": dir_hash}},
            meta={"input": input, "latent": {**op, "direction": str(direction), "weights": fp}},
            batch_size=batch_size,
            on_progress=bar,
        )
    with RunStore.open_readonly(res.run_dir) as store:
        n = write_jsonl_atomic(output, store.iter_response_dicts())
    console.print(
        f"wrote {n} responses to {output} (run: {res.run_dir}; {res.n_new} new in {bar.seconds:.1f}s)",
        markup=False,
        highlight=False,
    )


_INPUT = typer.Argument(..., help="Prompt file (.jsonl/.csv with a 'prompt' field) or benchmark name.")
_OUTPUT = typer.Option(..., "-o", "--output", help="Where to write the responses (JSONL).")
_DIRECTION = typer.Option(..., "--direction", "-d", help="Direction artifact folder (from `latent extract`).")
_MODEL = typer.Option(None, "--model", "-m", help="Model (default: the one the direction was extracted from).")


@latent_app.command("ablate")
@handle_errors
def ablate_cmd(
    input: str = _INPUT,
    output: Path = _OUTPUT,
    direction: str = _DIRECTION,
    model: str | None = _MODEL,
    limit: Limit = None,
    batch_size: BatchSize = 16,
    max_new_tokens: int = typer.Option(256, help="New tokens per response."),
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    seed: Seed = None,
    system_prompt: SystemPrompt = None,
    run_dir: Path | None = typer.Option(None, help="Run directory (default: derived from the run's settings)."),
    fresh: bool = typer.Option(False, help="Start the run over (remove its run store)."),
) -> None:
    """Generate with the refusal direction projected out of the residual stream at every layer and position.
    Same options, resuming and output rows as `refusalkit generate`."""
    _generate_with(
        input,
        output,
        direction,
        model,
        {"op": "ablate"},
        validate.generation_config(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            system_prompt=system_prompt,
            batch_size=batch_size,
            limit=limit,
        ),
        limit=limit,
        batch_size=batch_size,
        run_dir=run_dir,
        fresh=fresh,
    )


@latent_app.command("steer")
@handle_errors
def steer_cmd(
    input: str = _INPUT,
    output: Path = _OUTPUT,
    direction: str = _DIRECTION,
    model: str | None = _MODEL,
    coef: float = typer.Option(
        ..., "--coef", help="Multiple of the direction (its difference of means) to add; negative values steer away."
    ),
    layer: int | None = typer.Option(None, help="Layer to add at (default: the selected refusal layer)."),
    vector: str = typer.Option("refusal", help="refusal | harmfulness"),
    ablate_first: bool = typer.Option(False, help="Ablate the refusal direction everywhere first (ablate-then-add)."),
    limit: Limit = None,
    batch_size: BatchSize = 16,
    max_new_tokens: int = typer.Option(256, help="New tokens per response."),
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    seed: Seed = None,
    system_prompt: SystemPrompt = None,
    run_dir: Path | None = typer.Option(None, help="Run directory (default: derived from the run's settings)."),
    fresh: bool = typer.Option(False, help="Start the run over (remove its run store)."),
) -> None:
    """Generate with COEF times a direction added to the residual stream at one layer (activation addition).
    Same options, resuming and output rows as `refusalkit generate`."""
    import math

    if not math.isfinite(coef):
        raise RefusalkitError(f"--coef must be a finite number, got {coef}")
    if vector not in ("refusal", "harmfulness"):
        raise RefusalkitError(f"unknown --vector {vector!r}; use refusal or harmfulness")
    _generate_with(
        input,
        output,
        direction,
        model,
        {"op": "steer", "coef": coef, "layer": layer, "vector": vector, "ablate_first": ablate_first},
        validate.generation_config(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            system_prompt=system_prompt,
            batch_size=batch_size,
            limit=limit,
        ),
        limit=limit,
        batch_size=batch_size,
        run_dir=run_dir,
        fresh=fresh,
    )


@latent_app.command("guard")
@handle_errors
def guard_cmd(
    input: str = typer.Argument(..., help="Prompt file or benchmark name."),
    output: Path = typer.Option(..., "-o", "--output", help="JSONL: the input rows with p_harmful added."),
    direction: str = _DIRECTION,
    model: str | None = _MODEL,
    limit: int | None = typer.Option(None),
    batch_size: int = typer.Option(8),
    system_prompt: str | None = typer.Option(None),
) -> None:
    """Add the Latent Guard's p_harmful (0..1) to every prompt: one forward pass each, no generation."""
    from refusalkit.cli import validate
    from refusalkit.data.io import write_jsonl_atomic
    from refusalkit.data.registry import resolve_prompts
    from refusalkit.latent.artifact import load_artifact
    from refusalkit.latent.use import guard_of, load_for, p_harmful

    validate.positive("--batch-size", batch_size)
    validate.positive("--limit", limit)
    validate.output_file("--output", output, inputs=[validate.input_path(input)])
    art = load_artifact(direction)
    guard_of(art)
    examples = resolve_prompts(input, limit=limit)
    from refusalkit.models.context import check_examples

    check_examples(model or art.card["model"]["id"], examples, system_prompt=system_prompt)
    art, hf = load_for(direction, model, batch_size=batch_size)
    p = p_harmful(hf, art, [e.prompt for e in examples], batch_size=batch_size, system_prompt=system_prompt)
    rows = []
    for e, v in zip(examples, p):
        d = e.to_dict()
        d["p_harmful"] = round(float(v), 6)
        rows.append(d)
    n = write_jsonl_atomic(output, rows)
    console.print(
        f"wrote {n} rows with p_harmful to {output} ({int((p >= 0.5).sum())} at or above 0.5)",
        markup=False,
        highlight=False,
    )


@latent_app.command("guard-fit")
@handle_errors
def guard_fit_cmd(
    direction: str = _DIRECTION,
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the artifact with the refitted guard."),
    harmful_val: str | None = typer.Option(
        None, help="Harmful validation prompts (default: the extraction's harmful file, rows with split 'val')."
    ),
    harmless_val: str | None = typer.Option(
        None, help="Harmless validation prompts (default: the extraction's harmless file, rows with split 'val')."
    ),
    n_val_harmful: int = typer.Option(39),
    n_val_harmless: int = typer.Option(64),
    guard_positions: str | None = _GUARD_POSITIONS,
    guard_method: str = typer.Option("projection", help="'projection' or 'cosine' (see latent extract)."),
    model: str | None = _MODEL,
    batch_size: int = typer.Option(8),
    seed: int = typer.Option(0),
) -> None:
    """Refit the Latent Guard of a direction artifact on validation prompts (its positions, layers and threshold),
    keeping the directions: one forward pass per validation prompt, no re-extraction. Writes a new artifact."""
    from refusalkit.latent.artifact import load_artifact, save_artifact
    from refusalkit.latent.extract import load_split
    from refusalkit.latent.guard import GUARD_METHODS
    from refusalkit.latent.use import fit_guard_on, load_for

    validate.positive("--n-val-harmful", n_val_harmful)
    validate.positive("--n-val-harmless", n_val_harmless)
    validate.positive("--batch-size", batch_size)
    validate.output_dir("--output", output)
    if guard_method not in GUARD_METHODS:
        raise RefusalkitError(f"--guard-method: choose from {', '.join(GUARD_METHODS)}, got {guard_method!r}")
    names = _names("--guard-positions", guard_positions)
    art = load_artifact(direction)
    have = list(art.card.get("positions") or [])
    if names and [n for n in names if n not in have]:
        raise RefusalkitError(f"--guard-positions: the artifact has positions {', '.join(have)}, got {guard_positions}")
    data = art.card.get("data") or {}
    for opt, given, key in (("--harmful-val", harmful_val, "harmful"), ("--harmless-val", harmless_val, "harmless")):
        if not given and not data.get(key):
            raise RefusalkitError(f"{direction}: the card names no {key} prompt file; pass {opt}")
    hv = load_split(harmful_val or data.get("harmful") or "", None if harmful_val else "val", n_val_harmful, seed)
    sv = load_split(harmless_val or data.get("harmless") or "", None if harmless_val else "val", n_val_harmless, seed)
    ids = data.get("ids") or {}
    train = set(ids.get("train_harmful", [])) | set(ids.get("train_harmless", []))
    clash = [e.id for e in hv + sv if e.id in train]
    if clash:
        raise RefusalkitError(f"{len(clash)} validation prompt(s) were training prompts of the direction: {clash[:3]}")
    art, hf = load_for(direction, model, batch_size=batch_size)
    guard = fit_guard_on(
        hf,
        art,
        [e.prompt for e in hv],
        [e.prompt for e in sv],
        positions=names,
        method=guard_method,
        batch_size=batch_size,
    )
    card = {k: v for k, v in art.card.items() if k not in ("kind", "format")}
    card["guard"] = guard.to_dict()
    card["guard_fit"] = {
        "from": str(direction),
        "harmful_val": harmful_val or data.get("harmful"),
        "harmless_val": harmless_val or data.get("harmless"),
        "ids": {"val_harmful": [e.id for e in hv], "val_harmless": [e.id for e in sv]},
        "positions_allowed": names or have,
    }
    save_artifact(output, art.tensors, card)
    console.print(
        f"guard refitted on {len(hv)} harmful + {len(sv)} harmless validation prompts: {_guard_where(card['guard'])}"
        f" (validation AUROC {guard.val_auroc_combined:.3f}); artifact written to {output}",
        markup=False,
        highlight=False,
    )


@latent_app.command("export")
@handle_errors
def export_cmd(
    direction: str = _DIRECTION,
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the orthogonalised transformers model."),
    model: str | None = _MODEL,
) -> None:
    """Write the model with the refusal direction orthogonalised out of its weights (an abliterated model that
    plain transformers and vLLM load), with its tokenizer."""
    from refusalkit.cli import validate
    from refusalkit.latent.use import check_export_dest, export_orthogonalized, load_for

    validate.output_dir("--output", output)
    check_export_dest(output)
    art, hf = load_for(direction, model, dtype="model")  # the checkpoint's own dtype: the export keeps it
    export_orthogonalized(hf, art, output)
    console.print(f"orthogonalised model written to {output}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``latent`` command group to ``app``."""
    from refusalkit.cli import latent_cliff  # probe train, cliff, heads, select (the refusal cliff)

    latent_cliff.register(latent_app)
    app.add_typer(latent_app, name="latent")
