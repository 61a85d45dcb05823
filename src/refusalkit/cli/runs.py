"""``refusalkit runs list|show|export``: inspect and re-export stored runs."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from refusalkit.cli.common import console, handle_errors
from refusalkit.data.io import write_jsonl_atomic
from refusalkit.runs import RunStore, list_runs, resolve_run

runs_app = typer.Typer(help="Inspect and export stored runs.", no_args_is_help=True)


@runs_app.command("list")
@handle_errors
def list_cmd(root: Path | None = typer.Option(None, help="Runs directory (default: the user data dir).")) -> None:
    """List runs with their model and progress."""
    rows = list_runs(root)
    table = Table("name", "kind", "model", "done", "created")
    for r in rows:
        if "error" in r:
            table.add_row(escape(r["name"]), "unreadable", escape(r["error"]), "", "")
            continue
        created = dt.datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M") if r.get("created") else ""
        table.add_row(r["name"], str(r.get("kind")), str(r.get("model")), f"{r['responses']}/{r['inputs']}", created)
    console.print(table if rows else "no runs")


@runs_app.command("show")
@handle_errors
def show_cmd(run: str = typer.Argument(..., help="Run directory or name.")) -> None:
    """Show a run's metadata and progress as JSON (the store is opened read-only)."""
    with RunStore.open_readonly(resolve_run(run)) as st:
        console.print_json(json.dumps({"dir": str(st.dir), **st.counts(), "meta": st.get_meta()}))


@runs_app.command("export")
@handle_errors
def export_cmd(
    run: str = typer.Argument(..., help="Run directory or name."),
    output: Path = typer.Option(..., "-o", "--output", help="JSONL file to write."),
) -> None:
    """Write a run's responses (in input order) to a JSONL file, atomically."""
    from refusalkit.cli import validate

    validate.output_file("--output", output)
    with RunStore.open_readonly(resolve_run(run)) as st:
        n = write_jsonl_atomic(output, st.iter_response_dicts())
    console.print(f"wrote {n} responses to {output}")


def register(app: typer.Typer) -> None:
    """Add the ``runs`` command group to ``app``."""
    app.add_typer(runs_app, name="runs")
