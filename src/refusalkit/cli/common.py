"""Shared CLI plumbing: error handling (exit code 2 with one clear line), consoles and progress bars."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from refusalkit.errors import RefusalkitError

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

# The generation options that generate, latent ablate/steer/cliff/heads/select and attack share, declared once
# (each command keeps its own default: ``temperature: Temperature = 0.0``); validate.generation_config checks
# them and builds the GenerationConfig.
Temperature = Annotated[float, typer.Option(help="Sampling temperature; 0 = greedy decoding.")]
TopP = Annotated[
    float, typer.Option(help="Nucleus sampling: keep the smallest set of tokens with this much probability.")
]
Seed = Annotated[int | None, typer.Option(help="Sampling seed (used with --temperature > 0).")]
SystemPrompt = Annotated[str | None, typer.Option(help="System message for every prompt.")]
Limit = Annotated[int | None, typer.Option(help="Only the first N prompts.")]
BatchSize = Annotated[int, typer.Option(help="Prompts per batch (and per committed chunk).")]


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
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


class RunBar:
    """Draws a run's progress from ``run_resumable``'s reports (use as its ``on_progress`` inside a
    ``with`` block): says when the run resumes or is already complete, then a bar with tokens/s.
    ``seconds`` is the generation time of this call so far."""

    def __init__(self, label: str = "generating"):
        self.bar = progress(label)
        self.task: Any = None
        self.seconds = 0.0

    def __call__(self, p: Any) -> None:
        if self.task is None:  # the first report comes before the model is loaded
            if p.done == p.total:
                err_console.print(f"all {p.total} responses already in {p.run_dir}")
                return
            if p.done:
                err_console.print(f"resuming {p.run_dir}: {p.done} of {p.total} already done")
            self.bar.start()
            self.task = self.bar.add_task("gen", total=p.total, completed=p.done, rate="")
            return
        self.seconds = p.seconds
        self.bar.update(self.task, completed=p.done, rate=f"{p.new_tokens / max(p.seconds, 1e-9):.1f} tok/s")

    def __enter__(self) -> RunBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()
