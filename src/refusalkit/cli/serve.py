"""``refusalkit serve``: an OpenAI-compatible endpoint over a local model."""

from __future__ import annotations

import os
from typing import Optional

import typer

from refusalkit.cli.common import err_console, handle_errors


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""

    @app.command()
    @handle_errors
    def serve(model: str = typer.Option("default", "--model", "-m", help="default | PATH | org/name"),
              host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
              port: int = typer.Option(8000),
              api_key: Optional[str] = typer.Option(None, help="Required bearer key "
                                                    "(default: $REFUSALKIT_API_KEY; none = open)."),
              max_tokens: int = typer.Option(256, help="Default max_tokens when a request gives none.")) -> None:
        """Serve a local model at /v1/chat/completions (OpenAI-compatible)."""
        import uvicorn

        from refusalkit.models.spec import load_model, parse_model_spec
        from refusalkit.serve.app import create_app

        if parse_model_spec(model)[0] == "openai":
            from refusalkit.errors import ModelSpecError
            raise ModelSpecError("serve needs a local model, not an endpoint")
        key = api_key or os.environ.get("REFUSALKIT_API_KEY")
        if host not in ("127.0.0.1", "localhost", "::1") and not key:
            err_console.print("[yellow]warning:[/] serving on a non-loopback address without an API key")
        app = create_app(load_model(model), api_key=key, max_tokens_default=max_tokens)
        err_console.print(f"serving {model} on http://{host}:{port}/v1 "
                          f"({'API key required' if key else 'no API key'})")
        uvicorn.run(app, host=host, port=port, log_level="warning")
