"""``refusalkit serve``: an OpenAI-compatible endpoint over a local model."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import typer

from refusalkit.cli.common import err_console, handle_errors
from refusalkit.errors import RefusalkitError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
KEY_ENV = "REFUSALKIT_API_KEY"


def _key_from_file(path: Path, what: str) -> str:
    try:
        lines = [ln.strip() for ln in path.expanduser().read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise RefusalkitError(f"{what} {path}: cannot read it ({e.__class__.__name__})") from None
    if len(lines) != 1:
        raise RefusalkitError(f"{what} {path}: must hold the key alone on one line")
    return lines[0]


def read_api_key(flag_value: str | None, key_file: Path | None) -> str | None:
    """Return the server's API key from ``--api-key-file``, ``--api-key`` (with a warning),
    ``$REFUSALKIT_API_KEY`` or the file named by ``$REFUSALKIT_API_KEY_FILE``, in that order (None: no key).

    A key file must be readable and hold the key alone on one line; errors name the option, never the key.
    """
    if key_file is not None and flag_value is not None:
        raise RefusalkitError("give --api-key-file or --api-key, not both")
    if key_file is not None:
        return _key_from_file(key_file, "--api-key-file")
    if flag_value is not None:
        if not flag_value.strip():
            raise RefusalkitError("--api-key is empty")
        err_console.print(
            f"[yellow]warning:[/] --api-key is visible to every user in the process list; "
            f"use ${KEY_ENV} or --api-key-file PATH instead",
            highlight=False,
        )
        return flag_value.strip()
    if key := os.environ.get(KEY_ENV, "").strip():
        return key
    if path := os.environ.get(KEY_ENV + "_FILE", "").strip():
        return _key_from_file(Path(path), f"${KEY_ENV}_FILE")
    return None


def bind_socket(host: str, port: int) -> socket.socket:
    """Return a listening socket on ``host:port`` (done before the model loads, so a busy port fails fast)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise RefusalkitError(f"--host {host!r}: cannot resolve it ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise RefusalkitError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""

    @app.command()
    @handle_errors
    def serve(
        model: str = typer.Option("default", "--model", "-m", help="default | subject | PATH | org/name"),
        host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
        port: int = typer.Option(8000, min=1, max=65535),
        api_key_file: Path | None = typer.Option(
            None, "--api-key-file", help="File holding the required bearer key (one line)."
        ),
        api_key: str | None = typer.Option(
            None,
            "--api-key",
            help=f"Required bearer key. Visible in the process list: prefer ${KEY_ENV}, "
            f"${KEY_ENV}_FILE or --api-key-file. None of them: no key needed.",
        ),
        max_tokens: int = typer.Option(256, min=1, help="Default max_tokens when a request gives none."),
        max_tokens_limit: int = typer.Option(2048, min=1, help="Largest max_tokens a request may ask."),
        max_body_bytes: int = typer.Option(1 << 20, min=1, help="Largest request body (bytes)."),
        max_messages: int = typer.Option(128, min=1, help="Most messages in one request."),
        max_prompt_tokens: int | None = typer.Option(
            None, min=1, help="Most prompt tokens in one request (default: the model's context)."
        ),
        max_n: int = typer.Option(8, min=1, help="Most choices (n) in one request."),
        max_queue: int = typer.Option(256, min=1, help="Requests admitted at once; more get 503."),
        max_batch: int = typer.Option(
            16,
            min=1,
            max=256,
            help="Concurrent compatible requests generated as one batch, at most (1: one at a time).",
        ),
        max_batch_tokens: int = typer.Option(
            8192, min=1, help="Padded tokens (sequences x longest prompt+answer) in one generate call, at most."
        ),
        batch_wait_ms: float = typer.Option(
            5.0, min=0.0, max=1000.0, help="How long a request waits for others to share its batch."
        ),
        adapter: str | None = typer.Option(
            None,
            "--adapter",
            help="Refusal-token adapter folder, or 'bundled' (the model's shipped adapter): every answer "
            "then starts with a control token chosen by a policy, per request via the 'refusal' body field.",
        ),
        profile: str | None = typer.Option(
            None,
            "--profile",
            help="Default refusal profile for requests without a 'refusal' field: a shipped name "
            "(argmax, balanced, strict, lenient for the bundled adapter) or one from --profile-file "
            "(default: argmax, the model's own choice). Needs --adapter.",
        ),
        profile_file: list[Path] = typer.Option(
            [],
            "--profile-file",
            help="A calibration profile (JSON, from `tokens calibrate`) requests may name; repeatable. "
            "Named by its 'name' field.",
        ),
        guard: Path | None = typer.Option(
            None,
            "--guard",
            help="Guard pre-filter: a Latent Guard artifact (from `latent extract` / `latent guard-fit`) or a "
            "prompt predictor (from `predict train` / `predict bootstrap`) made for the served model.",
        ),
        guard_action: str = typer.Option(
            "refuse",
            "--guard-action",
            help="What a flagged prompt gets: 'refuse' (a fixed refusal, nothing generated) or 'flag' "
            "(generated as usual); the response carries a 'guard' object either way.",
        ),
        guard_threshold: float = typer.Option(
            0.5, "--guard-threshold", help="A prompt is flagged when the guard's score (0..1) reaches this."
        ),
    ) -> None:
        """Serve a local model at /v1/chat/completions (OpenAI-compatible), with /health and /metrics."""
        from refusalkit.models.spec import ModelSpec
        from refusalkit.serve.limits import ServerLimits

        if ModelSpec.parse(model).is_endpoint:
            raise RefusalkitError("serve needs a local model, not an endpoint")
        if adapter is None and (profile is not None or profile_file):
            raise RefusalkitError("--profile and --profile-file need --adapter (a refusal-token adapter)")
        if guard is None and (guard_action != "refuse" or guard_threshold != 0.5):
            raise RefusalkitError("--guard-action and --guard-threshold need --guard DIR")
        prefilter = None
        if guard is not None:
            from refusalkit.serve.prefilter import open_guard

            # the artifact's manifest and card are checked before the model loads: a bad folder fails fast
            prefilter = open_guard(guard, action=guard_action, threshold=guard_threshold)
        if max_tokens > max_tokens_limit:
            raise RefusalkitError(f"--max-tokens {max_tokens} is above --max-tokens-limit {max_tokens_limit}")
        limits = ServerLimits(
            max_body_bytes=max_body_bytes,
            max_messages=max_messages,
            max_prompt_tokens=max_prompt_tokens,
            max_tokens=max_tokens_limit,
            max_n=max_n,
            max_queue=max_queue,
        )
        key = read_api_key(api_key, api_key_file)
        sock = bind_socket(host, port)
        if host not in LOOPBACK and not key:
            err_console.print("[yellow]warning:[/] serving on a non-loopback address without an API key")
        try:
            import uvicorn

            from refusalkit.models.hf import HFModel
            from refusalkit.models.spec import load_model
            from refusalkit.serve.app import create_app

            refusal = None
            if adapter is not None:
                from refusalkit.serve.refusal import RefusalControl

                refusal = RefusalControl.load(model, adapter, profile=profile, profile_files=profile_file)
                lm = refusal.hf
            else:
                lm = load_model(model)
            assert isinstance(lm, HFModel)  # endpoints were refused above
            if prefilter is not None:
                # a Latent Guard reads the base model: the answer model beside an adapter, else the served one
                base = (refusal.answer_model or refusal.hf) if refusal is not None else lm
                try:
                    prefilter.bind(base, model)
                except RefusalkitError as e:
                    merged = refusal is not None and refusal.answer_model is None and prefilter.kind == "latent"
                    note = " (with this --adapter the served model has the adapter merged into it)" if merged else ""
                    raise RefusalkitError(f"{e}{note}") from None
                prefilter.check([[{"role": "user", "content": "Hello"}]])  # loads what it needs now, not per request
            fastapi_app = create_app(
                lm,
                api_key=key,
                max_tokens_default=max_tokens,
                limits=limits,
                max_batch=max_batch,
                batch_wait_s=batch_wait_ms / 1000,
                max_batch_tokens=max_batch_tokens,
                refusal=refusal,
                guard=prefilter,
            )
            if refusal is not None:
                err_console.print(
                    f"refusal control: adapter {adapter}, default profile {refusal.default_name}, "
                    f"profiles {', '.join(sorted(refusal.policies))}",
                    highlight=False,
                    markup=False,
                )
            if prefilter is not None:
                err_console.print(
                    f"guard pre-filter: {prefilter.summary()['kind']} {guard}, {prefilter.score_name} >= "
                    f"{prefilter.threshold} -> {prefilter.action}",
                    highlight=False,
                    markup=False,
                )
            err_console.print(
                f"serving {model} on http://{host}:{sock.getsockname()[1]}/v1 "
                f"({'API key required' if key else 'no API key'})",
                highlight=False,
            )
            server = uvicorn.Server(uvicorn.Config(fastapi_app, log_level="warning", timeout_keep_alive=5))
            server.run(sockets=[sock])
        finally:
            sock.close()
