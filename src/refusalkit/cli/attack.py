"""``refusalkit attack``: reformulation attacks with attack success at k, resumable, with metrics and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from refusalkit.cli import validate
from refusalkit.cli.common import RunBar, TopP, console, err_console, handle_errors
from refusalkit.errors import RefusalkitError


def _fmt(r: dict[str, Any]) -> str:
    if r.get("rate") is None:
        return "-"
    return f"{100 * r['rate']:.1f}% [{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}]"


def summary_table(metrics: dict[str, Any]) -> Table:
    """Return a console table of attack success: the direct request and each k, per success criterion."""
    crits = list(metrics["by_criterion"])
    t = Table(
        title=f"{metrics['transform']} on {metrics['run']['model']}: {metrics['n']} behaviours "
        f"(95% bootstrap CI; attempts stop on {metrics['criterion']})"
    )
    t.add_column("attempts")
    for c in crits:
        t.add_column(c + ("" if metrics["by_criterion"][c]["exact"] else " (k: lower bound)"), justify="right")
    t.add_row("direct", *[_fmt(metrics["by_criterion"][c]["asr_direct"]) for c in crits])
    for j in range(metrics["k"]):
        t.add_row(str(j + 1), *[_fmt(metrics["by_criterion"][c]["asr_at_k"][j]) for c in crits])
    return t


class StageBars:
    """One progress bar per attack stage (direct, each attempt's attacker/target/judge), fed by
    ``run_attack``'s ``on_progress(stage, RunProgress)``."""

    def __init__(self) -> None:
        self.label: str | None = None
        self.bar: RunBar | None = None

    def __call__(self, label: str, p: Any) -> None:
        if label != self.label:
            self.close()
            self.label, self.bar = label, RunBar(label)
        assert self.bar is not None
        self.bar(p)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.bar.stop()
        self.bar = None


def register(app: typer.Typer) -> None:
    """Add the ``attack`` command to ``app``."""

    @app.command()
    @handle_errors
    def attack(
        model: str = typer.Option(
            "default", "--model", "-m", help="Target: default | subject | PATH | org/name | openai:MODEL@URL"
        ),
        attacker: str | None = typer.Option(None, help="Model that rewrites requests (past/future need one)."),
        transform: str = typer.Option(
            "past",
            "--transform",
            "-t",
            help="none | past | future | prefix-injection | base64 | leetspeak | caesar "
            "| refusal-suppression | one from --transform-file.",
        ),
        transform_file: Path | None = typer.Option(
            None, help="Python file that registers more transforms (@register_transform); run only when given."
        ),
        bench: str = typer.Option(
            "jbb", "--bench", "-b", help="Benchmark name or local .jsonl/.csv file of harmful requests."
        ),
        k: int = typer.Option(5, "--k", help="Attempts per behaviour; stops at the first success."),
        out: Path = typer.Option(
            ...,
            "--out",
            "-o",
            help="Attack directory: run stores, metrics.json, attempts.jsonl, report.html, asr_at_k.png.",
        ),
        judge: str | None = typer.Option(
            None, help="Harmfulness judge model (any model spec, e.g. openai:gpt-4o@URL); rating 10 of 10 = success."
        ),
        success: str | None = typer.Option(
            None, help="What stops the attempts: detector | judge | both (default: judge with --judge, else detector)."
        ),
        detector: str | None = typer.Option(None, help="Refusal detector (default: the shipped 'default')."),
        limit: int | None = typer.Option(None, help="At most N behaviours (see --limit-mode)."),
        limit_mode: str = typer.Option(
            "stratified", help="stratified: seeded round-robin over categories; head: the first N."
        ),
        seed: int = typer.Option(0, help="Seed of --limit, of sampling (per attempt) and of the bootstrap."),
        data_dir: str | None = typer.Option(None, help="Directory of local benchmark copies."),
        batch_size: int = typer.Option(16, help="Prompts per generation batch (each batch is committed)."),
        max_new_tokens: int = typer.Option(256, help="New tokens per target answer."),
        temperature: float = typer.Option(
            0.0, help="Target sampling temperature; 0 = greedy (the paper samples the target at 1)."
        ),
        top_p: TopP = 1.0,
        system_prompt: str | None = typer.Option(None, help="System message for the target."),
        attacker_max_new_tokens: int = typer.Option(150, help="New tokens per attacker rewrite (paper: 150)."),
        attacker_temperature: float = typer.Option(1.0, help="Attacker sampling temperature (paper: 1)."),
        judge_max_new_tokens: int = typer.Option(10, help="New tokens per judge rating (paper: 10)."),
        n_boot: int = typer.Option(2000, help="Bootstrap replicates."),
        confidence: float = typer.Option(0.95, help="Interval level."),
        fresh: bool = typer.Option(False, help="Start over: remove the stages' run stores (other files stay)."),
    ) -> None:
        """Attack a model with a request transform, up to k attempts per behaviour; rerunning resumes."""
        cfg = validate.generation_config(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            system_prompt=system_prompt,
            batch_size=batch_size,
            limit=limit,
        )
        validate.generation(seed=seed)
        validate.positive("--k", k)
        validate.positive("--attacker-max-new-tokens", attacker_max_new_tokens)
        validate.at_least("--attacker-temperature", attacker_temperature, 0)
        validate.positive("--judge-max-new-tokens", judge_max_new_tokens)
        validate.positive("--n-boot", n_boot)
        validate.confidence("--confidence", confidence)
        if limit_mode not in ("stratified", "head"):
            raise RefusalkitError(f"--limit-mode must be stratified or head, got {limit_mode!r}")
        from refusalkit.attacks import CRITERIA, get_transform, load_transform_file

        if success is not None and success not in CRITERIA:
            raise RefusalkitError(f"--success must be one of {', '.join(CRITERIA)}, got {success!r}")
        if success in ("judge", "both") and judge is None:
            raise RefusalkitError(f"--success {success} needs --judge MODEL")
        if transform_file is not None:
            load_transform_file(transform_file)
        tf = get_transform(transform)
        if tf.needs_attacker and attacker is None:
            raise RefusalkitError(
                f"--transform {transform} needs --attacker MODEL (the model that rewrites "
                "the requests; e.g. --attacker subject)"
            )
        if not tf.needs_attacker and attacker is not None:
            err_console.print(f"note: --transform {transform} uses no attacker; --attacker is ignored")
            attacker = None
        from refusalkit.models.spec import ModelSpec

        specs = {
            opt: ModelSpec.parse(v)
            for opt, v in (("--model", model), ("--attacker", attacker), ("--judge", judge))
            if v is not None
        }
        validate.output_dir("--out", out)
        from refusalkit.evaluate.attack_report import check_attack_dir

        check_attack_dir(out)
        from refusalkit.evaluate.benchsets import load_eval_examples
        from refusalkit.evaluate.judge import resolve_detector
        from refusalkit.models.base import GenerationConfig
        from refusalkit.models.context import check_examples

        examples = load_eval_examples([bench], limit=limit, seed=seed, limit_mode=limit_mode, data_dir=data_dir)
        check_examples(specs["--model"], examples, max_new_tokens=max_new_tokens, system_prompt=system_prompt)
        det = resolve_detector(detector)
        acfg = GenerationConfig(max_new_tokens=attacker_max_new_tokens, temperature=attacker_temperature)
        jcfg = GenerationConfig(max_new_tokens=judge_max_new_tokens, temperature=0.0)
        from refusalkit.attacks import run_attack
        from refusalkit.evaluate.attack_report import write_attack_outputs

        bars = StageBars()
        try:
            res = run_attack(
                examples,
                target=specs["--model"],
                transform=tf,
                k=k,
                out_dir=out,
                detector=det,
                attacker=specs.get("--attacker"),
                judge=specs.get("--judge"),
                criterion=success,
                config=cfg,
                attacker_config=acfg,
                judge_config=jcfg,
                seed=seed,
                batch_size=batch_size,
                fresh=fresh,
                on_progress=bars,
            )
        finally:
            bars.close()
        run = {
            "dir": str(out),
            "model": specs["--model"].display,
            "attacker": attacker and specs["--attacker"].display,
            "judge": judge and specs["--judge"].display,
            "bench": bench,
            "limit": limit,
            "limit_mode": limit_mode,
            "seed": seed,
            "transform": tf.name,
            "k": k,
            "generation": cfg.to_dict(),
            "attacker_generation": acfg.to_dict() if tf.needs_attacker else None,
            "judge_generation": jcfg.to_dict() if judge else None,
            "stage_keys": res.keys,
            "refusalkit_version": _version(),
        }
        metrics = write_attack_outputs(out, res, run=run, level=confidence, n_boot=n_boot, seed=seed)
        console.print(summary_table(metrics))
        n_new = res.n_new
        console.print(
            f"{metrics['n']} behaviours, {res.attempts_run} of {k} attempts run; generated now: "
            f"{n_new['target']} target, {n_new['attacker']} attacker, {n_new['judge']} judge answers; "
            f"wrote {out}/metrics.json, attempts.jsonl, report.html, asr_at_k.png"
        )


def _version() -> str:
    from refusalkit import __version__

    return __version__
