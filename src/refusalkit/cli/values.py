"""``refusalkit values``: the CIVICS experiments (agreement log-probabilities, long-form refusals per
language and topic)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from refusalkit.cli import validate
from refusalkit.cli.common import console, handle_errors


def register(app: typer.Typer) -> None:
    """Add the ``values`` command to ``app``."""

    @app.command("values")
    @handle_errors
    def values_cmd(
        out: Path = typer.Option(..., "--out", "-o", help="Output directory (values.json, report.html, ...)."),
        model: str = typer.Option(
            "default", "--model", "-m", help="Model spec (the log-prob experiment needs a local model)."
        ),
        statements: Path | None = typer.Option(
            None, help="Statements file: refusalkit's format or the CIVICS release (default: the bundled 5x5 mini set)."
        ),
        languages: str | None = typer.Option(None, help="Comma-separated ISO codes, e.g. en,de (default all)."),
        experiments: str = typer.Option("logprob,longform", help="logprob, longform or both."),
        detector: str | None = typer.Option(None, help="Refusal detector for long-form answers."),
        max_new_tokens: int = typer.Option(160, help="New tokens per long-form answer."),
        batch_size: int = typer.Option(16),
        n_boot: int = typer.Option(2000, help="Bootstrap replicates."),
        fresh: bool = typer.Option(False, help="Discard stored long-form answers and start over."),
    ) -> None:
        """Run the CIVICS experiments on value-laden statements in several languages."""
        from refusalkit.models.base import GenerationConfig
        from refusalkit.values.run import run_values
        from refusalkit.values.statements import load_statements

        validate.generation(max_new_tokens=max_new_tokens, batch_size=batch_size)
        validate.positive("--n-boot", n_boot)
        validate.output_dir("--out", out)

        langs = [x.strip() for x in languages.split(",") if x.strip()] if languages else None
        sts = load_statements(statements, languages=langs)
        exps = tuple(x.strip() for x in experiments.split(",") if x.strip())
        doc = run_values(
            sts,
            model_spec=model,
            out_dir=out,
            experiments=exps,
            detector=detector,
            config=GenerationConfig(max_new_tokens=max_new_tokens),
            batch_size=batch_size,
            n_boot=n_boot,
            fresh=fresh,
        )
        if "longform" in doc:
            lf = doc["longform"]
            t = Table(title=f"long-form refusals ({lf['detector']} detector), 95% CI")
            for c in ("language", "refused", "rate", "check-set accuracy (detector alone)"):
                t.add_column(c)
            for lang, r in lf["refusals"]["language"].items():
                chk = lf["detector_check"].get(lang, {})
                acc = chk.get("accuracy")
                t.add_row(
                    lang,
                    f"{r['k']}/{r['n']}",
                    f"{100 * r['rate']:.0f}% [{100 * r['ci'][0]:.0f}, {100 * r['ci'][1]:.0f}]",
                    "-" if acc is None else f"{acc:.2f} ({chk['detector']:.2f})",
                )
            console.print(t)
        if "logprob" in doc:
            console.print(
                f"agreement-option probability mass (format following): {doc['logprob']['mean_option_mass']:.3f}"
            )
        console.print(f"wrote {out}/values.json, report.html")
