"""Shared CLI plumbing: error handling (exit code 2 with one clear line), consoles and progress bars."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from refusalkit.errors import RefusalkitError

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` to stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Wrap a command so user errors exit 2 with one line and Ctrl-C exits 130 with a resume hint."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RefusalkitError as e:
            fail(str(e))
        except KeyboardInterrupt:
            err_console.print("interrupted: finished items are saved; rerun the same command to resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def progress(label: str = "generating") -> Progress:
    """Return a rich progress bar (on stderr) showing done/total, items/s, tokens/s and the ETA."""
    return Progress(
        TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=err_console, transient=False)


def resolve_run(run: str) -> Path:
    """Return the run directory for a path or a run name under the runs root."""
    from refusalkit.evaluate.store import DB_NAME, runs_root

    p = Path(run)
    if (p / DB_NAME).is_file():
        return p
    q = runs_root() / run
    if (q / DB_NAME).is_file():
        return q
    raise RefusalkitError(f"no run {run!r} (neither a run directory nor a name under {runs_root()})")
