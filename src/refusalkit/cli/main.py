"""The ``refusalkit`` command: one Typer app, each command group registered from its own module."""

from __future__ import annotations

import typer

from refusalkit.cli import compare, customset, demo, generate, runs, serve, tokens, values
from refusalkit.cli import detect as detect_cmd
from refusalkit.cli import eval as eval_cmd
from refusalkit.cli import predict as predict_cmd

app = typer.Typer(
    name="refusalkit",
    no_args_is_help=True,
    add_completion=False,
    help="Measure, predict and control when language models refuse.",
)

for _module in (demo, generate, runs, serve, detect_cmd, predict_cmd, tokens, eval_cmd, compare, customset, values):
    _module.register(app)

from refusalkit.cli import latent as latent_cmd  # noqa: E402

latent_cmd.register(app)

from refusalkit.cli import attack as attack_cmd  # noqa: E402

attack_cmd.register(app)

from refusalkit.cli import train as train_cmd  # noqa: E402

train_cmd.register(app)


@app.command()
def version() -> None:
    """Print the refusalkit version."""
    from refusalkit import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    app()
