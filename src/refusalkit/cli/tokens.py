"""``refusalkit tokens``: train refusal tokens once, then score, calibrate and generate with a policy."""

from __future__ import annotations

from pathlib import Path

import typer

from refusalkit.cli import validate
from refusalkit.cli.common import console, err_console, handle_errors

tokens_app = typer.Typer(
    no_args_is_help=True,
    help="Refusal tokens: train once, set each category's refusal rate at inference (see docs/refusal-tokens.md).",
)


def _log(msg: str) -> None:
    err_console.print(msg, highlight=False, markup=False)


def _split_list(s: str | None) -> list[str] | None:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


@tokens_app.command("train")
@handle_errors
def train_cmd(
    data: str | None = typer.Argument(
        None,
        help="Labelled prompts (.jsonl/.csv: prompt, category, label, "
        "optional response); default: coconot_prompts.jsonl in the data root "
        "($REFUSALKIT_DATA or ../shared/data).",
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Adapter folder to write."),
    model: str = typer.Option("default", "--model", "-m", help="Base model: default | PATH | org/name."),
    mode: str = typer.Option("category", help="category (one token per category) | single ([refuse])."),
    categories: str | None = typer.Option(None, help="Comma-separated categories (default: those in the data)."),
    respond_target: str = typer.Option(
        "self", help="self: [respond] + the base model's own answer; token: loss on the control token only."
    ),
    answer_tokens: int = typer.Option(48, help="Length of the base model's answers used as targets."),
    max_length: int = typer.Option(160, help="Longest training sequence in tokens."),
    epochs: float = typer.Option(2.0),
    max_steps: int = typer.Option(-1, help="Stop after N optimiser steps (overrides --epochs)."),
    learning_rate: float = typer.Option(2e-4),
    batch_size: int = typer.Option(8, help="Sequences per device per step."),
    grad_accum: int = typer.Option(1),
    lora_r: int = typer.Option(8),
    lora_alpha: int = typer.Option(16),
    seed: int = typer.Option(1234, help="Seed of the split and of training."),
    save_steps: int = typer.Option(25, help="Checkpoint every N steps (rerun the command to resume)."),
    work_dir: Path | None = typer.Option(None, help="Base answers and checkpoints (default OUTPUT/_work)."),
    threads: int | None = typer.Option(None, help="CPU threads for torch."),
    fresh: bool = typer.Option(False, help="Discard checkpoints and cached answers."),
    refine_rows: bool = typer.Option(
        True,
        "--refine-rows/--no-refine-rows",
        help="After SFT, refit the control-token rows on the decision (one forward "
        "pass per prompt; separates the categories).",
    ),
    head_only: bool = typer.Option(
        False,
        "--head-only",
        help="No LoRA: fit only the control tokens' output rows as a decision head on the frozen model "
        "(one cached forward pass per prompt; CPU-friendly for larger models).",
    ),
    head_l2: str | None = typer.Option(
        None,
        help="--head-only: comma-separated L2 values tried, the best on the data's val split kept "
        "(default 1e-4,1e-3,1e-2,0.1,1; without a val split the first, default 0.01).",
    ),
    refusal_opener: str | None = typer.Option(
        None,
        help="--head-only: the text a refusal starts with (the model continues it); default: one per category.",
    ),
) -> None:
    """Train a LoRA adapter that adds refusal tokens (or, with --head-only, a decision head on the frozen
    model); rerunning the same command resumes."""
    from refusalkit.tokens.data import default_coconot_path

    data = data or str(default_coconot_path())
    for opt, v in (
        ("--answer-tokens", answer_tokens),
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
    if max_steps != -1:
        validate.positive("--max-steps (or -1 for --epochs)", max_steps)
    validate.output_dir("--output", output)
    validate.output_dir("--work-dir", work_dir)
    from refusalkit.errors import RefusalkitError
    from refusalkit.models.spec import ModelSpec

    l2_values: list[float] | None = None
    if head_l2 is not None:
        try:
            l2_values = [float(x) for x in head_l2.split(",") if x.strip()]
        except ValueError:
            raise RefusalkitError(f"--head-l2 must be comma-separated numbers, got {head_l2!r}") from None
        if not l2_values or any(not (v >= 0 and v < float("inf")) for v in l2_values):
            raise RefusalkitError(f"--head-l2 values must be finite numbers >= 0, got {head_l2!r}")
    if not head_only and (head_l2 is not None or refusal_opener is not None):
        raise RefusalkitError("--head-l2 and --refusal-opener apply to --head-only training only")
    if refusal_opener is not None and not refusal_opener.strip():
        raise RefusalkitError("--refusal-opener must not be empty")

    spec = ModelSpec.parse(model)
    if spec.is_endpoint:
        raise RefusalkitError(f"--model {spec.display} is an endpoint; tokens train needs a local model")
    from refusalkit.tokens.train import TrainConfig, train_tokens

    if threads:
        import torch

        torch.set_num_threads(threads)
    cfg = TrainConfig(
        data=data,
        model=model,
        mode=mode,
        categories=_split_list(categories),
        respond_target=respond_target,
        answer_tokens=answer_tokens,
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
        refine_rows=refine_rows,
        head_only=head_only,
        head_l2=l2_values,
        refusal_opener=refusal_opener,
    )
    if head_only:
        from refusalkit.tokens.head import train_head

        info = train_head(cfg, output, work_dir=work_dir, log=_log, fresh=fresh)
        h = info["head"]
        val = (
            f", val loss {h['val_loss']:.3f} (accuracy {h['val_accuracy']:.3f})"
            if h.get("val_loss") is not None
            else ""
        )
        console.print(
            f"decision head written to {output} ({info['n_train']} prompts, L2 {h['l2']:g}, decision loss "
            f"{h['decision_loss_after']:.3f}{val}; {info['train_seconds']:.0f}s); tokens: {', '.join(info['token_ids'])}",
            markup=False,
        )
        return
    info = train_tokens(cfg, output, work_dir=work_dir, log=_log, fresh=fresh)
    if info:
        console.print(
            f"adapter written to {output} ({info['global_step']} steps, loss {info['train_loss']:.3f}, "
            f"{info['train_seconds']:.0f}s); tokens: {', '.join(info['token_ids'])}",
            markup=False,
        )


def profile_table(prof: dict):
    """Return a rich table of a profile's thresholds and its calibration/test refusal rates per category."""
    from rich.table import Table

    t = Table(title=f"profile {prof['name']}: {prof['thresholds_from']} (rule {prof['policy']['rule']})")
    for col in ("category", "target", "threshold", "cal. refused", "test refused (95% CI)", "test contrast"):
        t.add_column(col, justify="left" if col == "category" else "right")
    thr = prof["policy"].get("thresholds") or {}
    test = (prof.get("test") or {}).get("per_category", {})
    cal = prof["calibration"]["per_category"]
    for c in sorted(set(cal) | set(test)):
        h = test.get(c, {}).get("harmful")
        k = test.get(c, {}).get("contrast")
        ch = cal.get(c, {}).get("harmful")
        tg = prof.get("targets", {}).get(c)
        t.add_row(
            c,
            f"{tg:.0%}" if tg is not None else "-",
            f"{thr[c]:.3g}" if c in thr else "-",
            f"{ch['rate']:.0%}" if ch else "-",
            f"{h['rate']:.0%} [{h['ci95'][0]:.0%}, {h['ci95'][1]:.0%}] (n={h['n']})" if h else "-",
            f"{k['rate']:.0%} (n={k['n']})" if k else "-",
        )
    if prof.get("test"):
        b = prof["test"]["binary"]
        t.caption = f"test split: binary F1 {b['f1']:.3f} (precision {b['precision']:.3f}, recall {b['recall']:.3f}, n={b['n']})"
    rows = prof.get("test_gap_table") or []
    if rows:
        from refusalkit.tokens.calibrate import gap_summary

        gs = gap_summary(rows)
        grid = ", ".join(f"{x:.0%}" for x in gs["per_target"])
        gap = (
            f"gap table (targets {grid}): mean |gap| "
            f"{100 * gs['mean_abs_gap']:.1f} points, {gs['outside']}/{gs['n']} cells outside the 95% interval"
        )
        # a profile without a test split has no caption yet
        t.caption = f"{t.caption}\n{gap}" if t.caption else gap
        fl = prof.get("test_gap_floor") or {}
        if "oracle_mean_abs_gap" in fl:
            t.caption += (
                f"\nsampling alone at these split sizes: {100 * fl['oracle_mean_abs_gap']:.1f} points with "
                f"exact thresholds, {100 * fl.get('calibrated_mean_abs_gap', float('nan')):.1f} with "
                f"thresholds from this calibration split "
                f"({100 * fl.get('calibrated_outside_share', float('nan')):.0f}% of cells outside)"
            )
    return t


def _load(model: str, adapter: str | None, batch_size: int = 16):
    from refusalkit.tokens.model import load_token_model

    return load_token_model(model, adapter, batch_size=batch_size)


def _check_adapter(model: str, adapter: str) -> None:
    """Raise RefusalkitError (before any model loads) when ``adapter`` is not a usable adapter folder, or
    ``bundled`` names none for a local ``model``; an endpoint's adapter is checked where it is read."""
    if not _is_endpoint(model):
        from refusalkit.tokens.model import resolve_adapter

        resolve_adapter(adapter, model)


def _profile_home(model: str, adapter: str) -> Path:
    """Return the adapter folder whose ``profiles/`` a shipped profile name is looked up in: the adapter
    shipped for ``model`` (``bundled``; for an endpoint, the bundled model's), else the adapter folder."""
    from refusalkit.tokens.model import bundled_adapter_dir

    if adapter != "bundled":
        return Path(adapter)
    return bundled_adapter_dir("default" if _is_endpoint(model) else model)


def _is_endpoint(model: str) -> bool:
    from refusalkit.models.spec import ModelSpec

    return ModelSpec.parse(model).is_endpoint


def _remote(model: str, adapter: str, concurrency: int):
    """Return ``(client, scheme, token_ids)`` for scoring over an OpenAI-compatible endpoint: the adapter's
    scheme from its ``refusal_tokens.json`` (its weights stay unread: the endpoint serves the merged model)."""
    from refusalkit.models.openai_compat import OpenAICompatModel
    from refusalkit.models.spec import load_model
    from refusalkit.tokens.model import read_adapter_info, resolve_adapter
    from refusalkit.tokens.scheme import TokenScheme

    info = read_adapter_info(resolve_adapter(adapter))
    scheme = TokenScheme.from_dict(info["scheme"])
    client = load_model(model, concurrency=concurrency)
    assert isinstance(client, OpenAICompatModel)
    return client, scheme, dict(info.get("token_ids") or {})


def _examples(input: str, limit: int | None):
    from refusalkit.data.registry import resolve_prompts

    return resolve_prompts(input, limit=limit)


@tokens_app.command("score")
@handle_errors
def score_cmd(
    input: str = typer.Argument(..., help="Prompt file (.jsonl/.csv with 'prompt') or benchmark name."),
    output: Path = typer.Option(..., "-o", "--output", help="JSONL: each prompt with its 'probs'."),
    model: str = typer.Option("default", "--model", "-m"),
    adapter: str = typer.Option("bundled", help="Adapter folder, or 'bundled'."),
    temperature: float = typer.Option(1.0, help="Softmax temperature of the scores."),
    batch_size: int = typer.Option(16),
    limit: int | None = typer.Option(None),
    concurrency: int = typer.Option(8, help="Requests in flight at once for --model openai:MODEL@URL."),
) -> None:
    """Write each prompt's control-token probabilities at the first response position (one forward pass).
    With ``--model openai:MODEL@URL`` (an endpoint serving the merged model, see ``tokens merge``) they are
    read from the first token's top_logprobs."""
    import time

    from refusalkit.data.io import write_jsonl_atomic
    from refusalkit.tokens.calibrate import score_prompts

    # a softmax temperature: 0 would divide the logits by zero (NaN probabilities)
    validate.above("--temperature", temperature, 0)
    validate.generation(batch_size=batch_size, limit=limit)
    validate.positive("--concurrency", concurrency)
    validate.output_file("--output", output, inputs=[validate.input_path(input)])
    exs = _examples(input, limit)
    _check_adapter(model, adapter)
    from refusalkit.models.context import check_examples

    check_examples(model, exs)
    extra: list[dict] = [{} for _ in exs]
    if _is_endpoint(model):
        # the scale path: the first token's top_logprobs from the endpoint (serving the merged model)
        from refusalkit.errors import RefusalkitError
        from refusalkit.tokens.remote import score_remote

        if temperature != 1.0:  # log-probabilities of the top tokens cannot be re-tempered
            raise RefusalkitError("--temperature: an endpoint (--model openai:...) can be scored at 1.0 only")
        client, scheme, _ = _remote(model, adapter, concurrency)
        t0 = time.perf_counter()
        scores = score_remote(client, [e.prompt for e in exs], scheme, concurrency=concurrency)
        secs = time.perf_counter() - t0
        import numpy as np

        q = np.stack([sc.q for sc in scores]) if scores else np.zeros((0, len(scheme.tokens)))
        extra = [{"not_in_top_logprobs": sc.missing, "bound": sc.bound} if sc.missing else {} for sc in scores]
    else:
        hf, scheme, ids, info = _load(model, adapter, batch_size)
        t0 = time.perf_counter()
        q = score_prompts(hf, [e.prompt for e in exs], ids, scheme, temperature=temperature, batch_size=batch_size)
        secs = time.perf_counter() - t0
    rows = []
    for e, row, more in zip(exs, q, extra):
        probs = {t: float(v) for t, v in zip(scheme.tokens, row)}
        top = max(probs, key=probs.__getitem__)
        rows.append({**e.to_dict(), "probs": probs, "p_refuse": float(sum(row[:-1])), "top_token": top, **more})
    n = write_jsonl_atomic(output, rows)
    console.print(f"scored {n} prompts in {secs:.1f}s ({n / max(secs, 1e-9):.1f}/s); wrote {output}")


@tokens_app.command("calibrate")
@handle_errors
def calibrate_cmd(
    data: str | None = typer.Argument(
        None,
        help="Labelled prompts; split as the adapter's training data was "
        "(default: coconot_prompts.jsonl in the data root).",
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Calibration profile (JSON) to write."),
    target: str | None = typer.Option(
        None,
        help="Target refusal rates, e.g. 'Requests with safety "
        "concerns=0.9,Incomplete requests=0.2' ('*=0.5' for all). "
        "Without it, thresholds maximise F1.",
    ),
    rule: str = typer.Option("threshold", help="threshold (per category) | argmax (the model's choice)."),
    model: str = typer.Option("default", "--model", "-m"),
    adapter: str = typer.Option("bundled", help="Adapter folder, or 'bundled'."),
    temperature: float = typer.Option(1.0),
    name: str | None = typer.Option(None, help="Profile name (default: the file's stem)."),
    plots: Path | None = typer.Option(None, help="Folder for the curve PNGs (default: beside the profile)."),
    independent: bool = typer.Option(
        False, help="The paper's per-category quantiles only (ignore the other tokens' refusals)."
    ),
    gap_table: bool = typer.Option(False, "--gap-table", help="Also check targets 10/30/50/70/90% on the test split."),
    batch_size: int = typer.Option(16),
) -> None:
    """Score the calibration split once (no generation), derive per-category thresholds, check them on the
    test split, save the profile and plot the curves."""
    import time

    from refusalkit.tokens.data import default_coconot_path

    data = data or str(default_coconot_path())

    from refusalkit.data.io import write_json_atomic
    from refusalkit.tokens.calibrate import TARGET_GRID, curves, plot_curves
    from refusalkit.tokens.profile import (
        build_profile,
        calibration_splits,
        parse_targets,
        score_items,
        split_manifest,
    )

    validate.above("--temperature", temperature, 0)
    validate.positive("--batch-size", batch_size)
    if rule not in ("threshold", "argmax"):
        from refusalkit.errors import RefusalkitError

        raise RefusalkitError(f"--rule must be threshold or argmax, got {rule!r}")
    validate.output_file("--output", output, inputs=[validate.input_path(data)])
    validate.output_dir("--plots", plots or output.with_suffix(""))
    hf, scheme, ids, info = _load(model, adapter, batch_size)
    splits = calibration_splits(data, info)
    from refusalkit.tokens.model import adapter_hash

    # the cache must change whenever the adapter's weights do (a retrained adapter in the same folder)
    key = f"{model}|{adapter_hash(info['adapter']) if info.get('adapter') else None}|{info.get('base_model_sha256')}"
    t0 = time.perf_counter()
    cal = score_items(hf, splits["calibration"], ids, scheme, temperature=temperature, cache_key=key)
    test = score_items(hf, splits["test"], ids, scheme, temperature=temperature, cache_key=key)
    secs = time.perf_counter() - t0
    targets = parse_targets(target, scheme) if target else None
    prof = build_profile(
        name=name or output.stem,
        scheme=scheme,
        token_ids=ids,
        info=info,
        model_spec=model,
        model_dir=hf.path,
        cal=cal,
        test=test,
        targets=targets,
        rule=rule,
        temperature=temperature,
        joint=not independent,
        data=data,
        splits_manifest=split_manifest(splits),
        gap_targets=TARGET_GRID if gap_table else None,
    )
    prof["scoring_seconds"] = round(secs, 2)
    write_json_atomic(output, prof)
    cdir = plots or output.with_suffix("")
    thr = prof["policy"].get("thresholds")
    cdata = curves(cal.q, cal.categories, cal.refuse, scheme, n_points=80)
    pngs = plot_curves(cdata, cdir, thresholds=thr, title=f"{prof['name']} (calibration split)")
    write_json_atomic(Path(cdir) / "curves.json", cdata, indent=None)
    console.print(profile_table(prof))
    console.print(f"profile written to {output}; curves: {', '.join(pngs)}")


@tokens_app.command("generate")
@handle_errors
def generate_cmd(
    input: str = typer.Argument(..., help="Prompt file (.jsonl/.csv with 'prompt') or benchmark name."),
    output: Path = typer.Option(..., "-o", "--output", help="JSONL: responses with the chosen control token."),
    profile: str | None = typer.Option(
        None, "--profile", "-p", help="Profile file or shipped name (strict, balanced, lenient)."
    ),
    rule: str | None = typer.Option(
        None,
        help="Without a profile: argmax | threshold (with --thresholds) | "
        "set (with --controlled, --set-threshold) | free (no control).",
    ),
    thresholds: str | None = typer.Option(None, help="For --rule threshold: 'CATEGORY=T,...' ('*=T' for all)."),
    controlled: str | None = typer.Option(None, help="For --rule set: comma-separated categories in S (default: all)."),
    set_threshold: float = typer.Option(0.5, help="For --rule set: the one threshold of S."),
    temperature: float = typer.Option(1.0, help="Softmax temperature (without a profile)."),
    model: str = typer.Option("default", "--model", "-m"),
    adapter: str = typer.Option("bundled", help="Adapter folder, or 'bundled'."),
    max_new_tokens: int = typer.Option(256),
    batch_size: int = typer.Option(16),
    limit: int | None = typer.Option(None),
    run_dir: Path | None = typer.Option(None, help="Run directory (default: derived from the settings)."),
) -> None:
    """Generate with a refusal policy; every answer carries the control token chosen and its category.
    Each finished batch is saved; rerunning resumes."""
    import time

    from refusalkit.cli.common import RunBar
    from refusalkit.data.io import write_jsonl_atomic
    from refusalkit.models.base import GenerationConfig
    from refusalkit.runs import RunStore, run_resumable
    from refusalkit.tokens.generate import PolicyModel, answer_model_for, emits_respond, refusal_openers
    from refusalkit.tokens.policy import Policy, load_profile, policy_from_profile

    validate.generation(max_new_tokens=max_new_tokens, batch_size=batch_size, limit=limit)
    validate.above("--temperature", temperature, 0)
    validate.probability("--set-threshold", set_threshold, zero_ok=True)
    validate.output_file("--output", output, inputs=[validate.input_path(input)])
    validate.output_dir("--run-dir", run_dir)
    exs = _examples(input, limit)
    prof = load_profile(profile, _profile_home(model, adapter)) if profile else None
    from refusalkit.errors import RefusalkitError

    if prof is None and rule not in (None, "argmax", "free", "threshold", "set"):
        raise RefusalkitError(f"unknown --rule {rule!r}; use argmax, threshold, set or free, or give --profile")
    if prof is None and rule == "threshold" and not thresholds:
        raise RefusalkitError("--rule threshold needs --thresholds 'CATEGORY=T,...'")
    cfg = GenerationConfig(max_new_tokens=max_new_tokens)
    _check_adapter(model, adapter)
    from refusalkit.models.context import check_examples

    check_examples(model, exs, max_new_tokens=max_new_tokens)
    policy_desc = (
        prof["policy"]
        if prof
        else {
            "rule": rule or "argmax",
            "thresholds": thresholds,
            "controlled": controlled,
            "set_threshold": set_threshold,
            "temperature": temperature,
        }
    )

    def make_policy(scheme, ids: dict[str, int]) -> Policy | None:
        """Return the policy the options ask for over ``scheme`` (None for --rule free)."""
        if prof is not None:
            if prof.get("token_ids") and prof["token_ids"] != ids:
                raise RefusalkitError(
                    f"profile {prof['__path__']} was calibrated for token ids {prof['token_ids']}, this model has {ids}"
                )
            return policy_from_profile(prof)
        if rule == "free":
            return None
        if rule == "threshold":
            from refusalkit.tokens.calibrate import parse_targets

            return Policy(scheme, thresholds=parse_targets(thresholds or "", scheme), temperature=temperature)
        if rule == "set":
            return Policy(
                scheme, rule="set", controlled=_split_list(controlled), threshold=set_threshold, temperature=temperature
            )
        return Policy(scheme, rule="argmax", temperature=temperature)

    if _is_endpoint(model):
        _generate_remote(exs, output, model, adapter, make_policy, max_new_tokens)
        return

    def policy_model() -> PolicyModel:
        """Load the model with the adapter and wrap it in the policy (only when something is pending)."""
        hf, scheme, ids, info = _load(model, adapter, batch_size)
        policy = make_policy(scheme, ids)
        return PolicyModel(
            hf,
            policy,
            ids,
            emit_respond=emits_respond(info),
            answer_model=answer_model_for(model, info, batch_size) if policy is not None else None,
            refusal_openers=refusal_openers(info, scheme),
        )

    t0 = time.perf_counter()
    with RunBar() as bar:
        res = run_resumable(
            exs,
            policy_model,
            cfg,
            run_dir,
            kind="tokens",
            model_id=f"{model}|{adapter}",
            key_extra={"policy": policy_desc},
            batch_size=batch_size,
            on_progress=bar,
            meta={"model": model, "adapter": adapter, "policy": policy_desc, "input": input},
        )
    rdir = res.run_dir
    rows = []
    with RunStore.open_readonly(rdir) as store:
        for r in store.iter_response_dicts():
            for k in ("control_token", "control_category", "refused", "probs", "answered_by"):
                if f"gen_{k}" in r:
                    r[k] = r.pop(f"gen_{k}")
            rows.append(r)
    n = write_jsonl_atomic(output, rows)
    refused = sum(1 for r in rows if r.get("refused"))
    console.print(
        f"wrote {n} responses to {output} ({refused} with a refusal token; run: {rdir}; "
        f"{time.perf_counter() - t0:.1f}s)"
    )


def _generate_remote(exs, output: Path, model: str, adapter: str, make_policy, max_new_tokens: int) -> None:
    """``tokens generate --model openai:MODEL@URL``: per prompt, one greedy ``max_tokens=1`` request with the
    first token's top_logprobs, from which the policy decides client-side; then the text, one request with
    every control token banned (``logit_bias`` -100). A plain OpenAI-compatible server cannot be made to
    continue after a control token the client chose, and the merged model's refit control rows would
    otherwise fill the answer with (invisible) control tokens: the text is the endpoint's own answer, not
    one that follows the decision (``endpoint_first_token`` is the token the endpoint itself would emit)."""
    import time

    from refusalkit.data.io import write_jsonl_atomic
    from refusalkit.errors import RefusalkitError
    from refusalkit.models.base import GenerationConfig
    from refusalkit.tokens.remote import decide_remote, score_remote

    client, scheme, ids = _remote(model, adapter, 8)
    policy = make_policy(scheme, ids)
    if policy is None:
        raise RefusalkitError("--rule free decides nothing; over an endpoint use argmax, threshold, set or --profile")
    if not ids:
        raise RefusalkitError(f"adapter {adapter}: refusal_tokens.json has no token_ids (needed to ban them)")
    decide_remote(policy, [])  # a tempered policy is refused before any request
    t0 = time.perf_counter()
    prompts = [e.prompt for e in exs]
    scores = score_remote(client, prompts, scheme)
    choice, certain = decide_remote(policy, scores)
    client.logit_bias = {int(i): -100.0 for i in ids.values()}
    gens = client.generate(prompts, GenerationConfig(max_new_tokens=max_new_tokens))
    rows = []
    for e, sc, c, ok, g in zip(exs, scores, choice, certain, gens):
        tok = scheme.tokens[int(c)]
        rows.append(
            {
                **e.to_dict(),
                "response": g.text,
                "n_tokens": g.n_tokens,
                "finish_reason": g.finish_reason,
                "control_token": tok,
                "control_category": scheme.token_category(tok),
                "refused": tok != scheme.tokens[-1],
                "probs": {t: float(v) for t, v in zip(scheme.tokens, sc.q)},
                "decision_certain": bool(ok),
                "endpoint_first_token": sc.first_token,
            }
        )
    n = write_jsonl_atomic(output, rows)
    refused = sum(1 for r in rows if r["refused"])
    console.print(
        f"wrote {n} responses to {output} ({refused} with a refusal token, decided client-side from "
        f"top_logprobs; {time.perf_counter() - t0:.1f}s)"
    )


@tokens_app.command("logit-bias")
@handle_errors
def logit_bias_cmd(
    profile: str = typer.Argument(..., help="Profile file or shipped name."),
) -> None:
    """Print the OpenAI-compatible ``logit_bias`` closest to a profile's policy, and its limits."""
    import json

    from refusalkit.tokens.policy import load_profile, policy_from_profile

    prof = load_profile(profile)
    bias, notes = policy_from_profile(prof).logit_bias(prof["token_ids"])
    console.print_json(json.dumps({"logit_bias": bias, "notes": notes}))


@tokens_app.command("merge")
@handle_errors
def merge_cmd(
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the merged transformers model."),
    model: str = typer.Option("default", "--model", "-m"),
    adapter: str = typer.Option("bundled"),
) -> None:
    """Write the base model with the adapter merged and the control tokens in its tokenizer (for vLLM or
    any server that takes a transformers folder)."""
    validate.output_dir("--output", output)
    hf, scheme, ids, info = _load(model, adapter)
    hf.model.save_pretrained(output)
    hf.tokenizer.save_pretrained(output)
    console.print(f"merged model written to {output}; control tokens {ids}", markup=False)


def register(app: typer.Typer) -> None:
    """Add the ``tokens`` command group to ``app``."""
    app.add_typer(tokens_app, name="tokens")
