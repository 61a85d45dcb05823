"""``refusalkit compare``: paired per-category differences between eval runs and the frontier plot."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from refusalkit.cli import validate
from refusalkit.cli.common import console, handle_errors


def register(app: typer.Typer) -> None:
    """Add the ``compare`` command to ``app``."""

    @app.command("compare")
    @handle_errors
    def compare_cmd(
        runs: list[Path] = typer.Argument(..., help="Eval run directories; the first is the baseline."),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Where to write compare.json/.html and frontier.png (default: RUN_A/compare)."
        ),
        label: list[str] | None = typer.Option(None, "--label", help="A name per run, in order."),
        n_boot: int = typer.Option(2000, help="Bootstrap replicates."),
        confidence: float = typer.Option(0.95, help="Interval level."),
        seed: int = typer.Option(0, help="Bootstrap seed."),
        all_rows: bool = typer.Option(
            False, "--all", help="Print every category (default: overall rows and significant categories)."
        ),
    ) -> None:
        """Compare eval runs: refusal-rate differences per category on shared prompts, with paired tests."""
        validate.positive("--n-boot", n_boot)
        validate.confidence("--confidence", confidence)
        validate.output_dir("--out", out or (runs[0] / "compare"))
        from refusalkit.evaluate.compare import compare_runs, write_comparison

        comp = compare_runs(runs, labels=label or None, level=confidence, n_boot=n_boot, seed=seed)
        dest = write_comparison(comp, out or (runs[0] / "compare"))
        t = Table(
            title=f"refusal rate: run - baseline ({comp['settings']['baseline']}), "
            f"{int(100 * confidence)}% paired bootstrap CI, McNemar p"
        )
        for col in ("run", "benchmark", "category", "role", "n", "baseline", "run rate", "diff", "p"):
            t.add_column(col)
        for d in comp["differences"]:
            if not all_rows and d["category"] != "(all)" and d["p_value"] >= 0.05:
                continue
            t.add_row(
                d["run"],
                d["benchmark"],
                d["category"][:40],
                d["role"],
                str(d["n"]),
                f"{100 * d['rate_a']:.1f}%",
                f"{100 * d['rate_b']:.1f}%",
                f"{100 * d['diff']:+.1f} [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]",
                f"{d['p_value']:.3g}",
            )
        console.print(t)
        if comp["settings"]["warning"]:
            console.print(f"[yellow]warning:[/] {comp['settings']['warning']}")
        console.print(f"wrote {dest}/compare.json, compare.html, frontier.png")
