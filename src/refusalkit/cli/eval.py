"""``refusalkit eval``: one command from a model and benchmarks to judged responses, metrics and a report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from refusalkit.cli import validate
from refusalkit.cli.common import console, handle_errors, progress


def _fmt(r: dict | None) -> str:
    if not r or r.get("rate") is None:
        return "-"
    return f"{100 * r['rate']:.1f}% [{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}]"


def summary_table(metrics: dict) -> Table:
    """Return a console table of a run's safety and over-refusal rates per benchmark and overall."""
    t = Table(
        title=f"{metrics['run']['model']} judged by {metrics['detector']['name']} "
        f"({int(100 * metrics['settings']['confidence'])}% bootstrap CI)"
    )
    for col in ("scope", "role", "n", "refusal (any)", "full", "partial", "redirection", "corrected", "constructive"):
        t.add_column(col, justify="right" if col not in ("scope", "role") else "left")
    scopes = [("overall", metrics["overall"])] + list(metrics["per_benchmark"].items())
    for name, groups in scopes:
        for role in ("safety", "over_refusal", "unlabelled"):
            g = groups.get(role)
            if not g:
                continue
            t.add_row(
                name,
                role,
                str(g["n"]),
                _fmt(g["refusal"]),
                _fmt(g["full_refusal"]),
                _fmt(g["partial_refusal"]),
                _fmt(g["redirection"]),
                _fmt(g.get("corrected_refusal")),
                _fmt(g.get("constructive_rate")),
            )
    return t


def register(app: typer.Typer) -> None:
    """Add the ``eval`` command to ``app``."""

    @app.command("eval")
    @handle_errors
    def eval_cmd(
        model: str = typer.Option(
            "default",
            "--model",
            "-m",
            help="default | subject | PATH | org/name | openai:MODEL@URL | t2i:MODEL@URL (image API)",
        ),
        bench: list[str] = typer.Option(
            ...,
            "--bench",
            "-b",
            help="Benchmark name (xstest, coconot-all, ...), local .jsonl/.csv file, "
            "or a comma-separated list; repeatable.",
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Run directory: run store, metrics.json, responses.jsonl, report.html."
        ),
        limit: int | None = typer.Option(None, help="At most N prompts per --bench (see --limit-mode)."),
        limit_mode: str = typer.Option(
            "stratified", help="stratified: seeded round-robin over (benchmark, expected, category); head: the first N."
        ),
        seed: int = typer.Option(0, help="Seed of the --limit sample and of the bootstrap."),
        detector: str | None = typer.Option(
            None, help="Detector (default: the shipped 'default' one; 't2i' for image models)."
        ),
        sens: float | None = typer.Option(None, help="Detector sensitivity, to correct rates (with --spec)."),
        spec: float | None = typer.Option(None, help="Detector specificity, to correct rates (with --sens)."),
        data_dir: str | None = typer.Option(
            None, help="Directory of local benchmark copies (default: $REFUSALKIT_DATA or ../shared/data)."
        ),
        batch_size: int = typer.Option(16, help="Prompts per generation batch (each batch is committed)."),
        max_new_tokens: int = typer.Option(256, help="New tokens per response."),
        temperature: float = typer.Option(0.0, help="0 = greedy decoding."),
        system_prompt: str | None = typer.Option(None, help="System message for every prompt."),
        n_boot: int = typer.Option(2000, help="Bootstrap replicates."),
        confidence: float = typer.Option(0.95, help="Interval level."),
        fresh: bool = typer.Option(False, help="Discard what --out already holds and start over."),
        rejudge: bool = typer.Option(
            False, help="Keep the stored responses but judge them all again (e.g. after retraining the detector)."
        ),
        constructive: str = typer.Option(
            "default",
            "--constructive",
            help="Judge of constructive_rate (share of non-compliant answers that give safe help): default, "
            "cues, a saved judge folder, or none.",
        ),
    ) -> None:
        """Generate, judge and score a model on refusal benchmarks; rerunning resumes a killed run."""
        validate.generation(
            max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size, limit=limit, seed=seed
        )
        validate.positive("--n-boot", n_boot)
        validate.confidence("--confidence", confidence)
        validate.probability("--sens", sens)
        validate.probability("--spec", spec)
        if limit_mode not in ("stratified", "head"):
            from refusalkit.errors import RefusalkitError

            raise RefusalkitError(f"--limit-mode must be stratified or head, got {limit_mode!r}")
        if constructive not in ("default", "cues", "none") and not Path(constructive).is_dir():
            from refusalkit.errors import RefusalkitError

            raise RefusalkitError(
                f"--constructive: {constructive!r} is not default, cues, none or a saved judge folder"
            )
        validate.output_dir("--out", out)
        from refusalkit.evaluate.runner import run_eval
        from refusalkit.models.base import GenerationConfig

        cfg = GenerationConfig(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed if temperature > 0 else None,
            system_prompt=system_prompt,
        )
        # the bar starts with the first generated batch, so an error found before any work is the only
        # thing printed
        bar = progress("evaluating")
        task = None

        def on_progress(stage: str, done: int, total: int) -> None:
            nonlocal task
            if task is None:
                bar.start()
                task = bar.add_task("eval", total=total, rate="")
            bar.update(task, completed=done, total=total, rate=stage)

        try:
            res = run_eval(
                bench,
                model_spec=model,
                out_dir=out,
                detector=detector,
                limit=limit,
                seed=seed,
                limit_mode=limit_mode,
                data_dir=data_dir,
                config=cfg,
                batch_size=batch_size,
                fresh=fresh,
                rejudge=rejudge,
                sens=sens,
                spec=spec,
                n_boot=n_boot,
                level=confidence,
                on_progress=on_progress,
                constructive=None if constructive == "none" else constructive,
            )
        finally:
            bar.stop()
        console.print(summary_table(res.metrics))
        console.print(
            f"{res.metrics['n']} prompts judged ({res.n_generated} generated and {res.n_judged} "
            f"judged now); wrote {out}/metrics.json, responses.jsonl, report.html, frontier.png"
        )
