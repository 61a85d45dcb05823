"""``refusalkit generate``: resumable generation over a prompt file or benchmark."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from refusalkit.cli import validate
from refusalkit.cli.common import console, err_console, handle_errors, progress
from refusalkit.data.io import write_jsonl_atomic
from refusalkit.data.registry import resolve_prompts
from refusalkit.evaluate.generation import default_run_dir, generate_into_store, run_key
from refusalkit.evaluate.store import RunStore
from refusalkit.models.base import GenerationConfig
from refusalkit.models.spec import load_model, parse_model_spec


def run_generation(examples, model_spec: str, cfg: GenerationConfig, *, run_dir: Optional[Path],
                   batch_size: int, fresh: bool, kind: str = "gen", extra_meta: dict | None = None):
    """Generate (or resume) a run; return ``(store_dir, model_name, n_new, seconds)``."""
    parse_model_spec(model_spec)  # validate before any work
    from refusalkit.models.context import check_examples
    check_examples(model_spec, examples, max_new_tokens=cfg.max_new_tokens, system_prompt=cfg.system_prompt)
    key = run_key(model_spec, examples, cfg)
    rdir = run_dir or default_run_dir(kind, key)
    if fresh and (rdir / "run.sqlite").exists():
        import shutil
        shutil.rmtree(rdir)
    with RunStore(rdir) as store:
        store.init_run(key, examples, kind=kind, model=model_spec, config=cfg.to_dict(), **(extra_meta or {}))
        pending = len(store.pending())
        total = len(examples)
        if pending == 0:
            err_console.print(f"all {total} responses already in {rdir}")
            return rdir, model_spec, 0, 0.0
        if pending < total:
            err_console.print(f"resuming {rdir}: {total - pending} of {total} already done")
        model = load_model(model_spec, batch_size=batch_size) if not model_spec.startswith("openai:") \
            else load_model(model_spec)
        t0 = time.perf_counter()
        tokens = 0
        with progress() as bar:
            task = bar.add_task("gen", total=total, completed=total - pending, rate="")

            def on_batch(n: int, ntok: int) -> None:
                nonlocal tokens
                tokens += ntok
                dt = max(time.perf_counter() - t0, 1e-9)
                bar.update(task, advance=n, rate=f"{tokens / dt:.1f} tok/s")

            n_new = generate_into_store(store, model, cfg, batch_size=batch_size, on_batch=on_batch)
        return rdir, model.name, n_new, time.perf_counter() - t0


def register(app: typer.Typer) -> None:
    """Add the ``generate`` command to ``app``."""

    @app.command()
    @handle_errors
    def generate(
        input: str = typer.Argument(..., help="Prompt file (.jsonl/.csv with a 'prompt' field) or benchmark name."),
        output: Path = typer.Option(..., "-o", "--output", help="Where to write the responses (JSONL)."),
        model: str = typer.Option("default", "--model", "-m", help="default | PATH | org/name | openai:MODEL@URL"),
        limit: Optional[int] = typer.Option(None, help="Only the first N prompts."),
        batch_size: int = typer.Option(16, help="Prompts per batch (and per committed chunk)."),
        max_new_tokens: int = typer.Option(256, help="New tokens per response."),
        temperature: float = typer.Option(0.0, help="0 = greedy decoding."),
        top_p: float = typer.Option(1.0),
        seed: Optional[int] = typer.Option(None),
        system_prompt: Optional[str] = typer.Option(None, help="System message for every prompt."),
        run_dir: Optional[Path] = typer.Option(None, help="Run directory (default: derived from the run's settings)."),
        fresh: bool = typer.Option(False, help="Discard an existing run with the same settings."),
    ) -> None:
        """Run a model over prompts; every finished batch is saved, and rerunning resumes."""
        validate.generation(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            batch_size=batch_size, limit=limit, seed=seed)
        validate.output_file("--output", output, inputs=[validate.input_path(input)])
        validate.output_dir("--run-dir", run_dir)
        examples = resolve_prompts(input, limit=limit)
        cfg = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                               system_prompt=system_prompt)
        rdir, _, n_new, secs = run_generation(examples, model, cfg, run_dir=run_dir, batch_size=batch_size,
                                              fresh=fresh, extra_meta={"input": input})
        with RunStore(rdir) as store:
            n = write_jsonl_atomic(output, store.iter_response_dicts())
        console.print(f"wrote {n} responses to {output} (run: {rdir}; {n_new} new in {secs:.1f}s)")
