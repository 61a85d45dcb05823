"""``refusalkit generate``: resumable generation over a prompt file or benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from refusalkit.cli import validate
from refusalkit.cli.common import (
    BatchSize,
    Limit,
    RunBar,
    Seed,
    SystemPrompt,
    Temperature,
    TopP,
    console,
    handle_errors,
)
from refusalkit.data.io import write_jsonl_atomic
from refusalkit.data.registry import resolve_prompts
from refusalkit.models.base import GenerationConfig
from refusalkit.models.spec import ModelSpec
from refusalkit.runs import RunStore, run_resumable


def run_generation(
    examples,
    model_spec: str,
    cfg: GenerationConfig,
    *,
    run_dir: Path | None,
    batch_size: int,
    fresh: bool,
    kind: str = "gen",
    extra_meta: dict | None = None,
    adapter: str | None = None,
):
    """Generate (or resume) a run through :func:`run_resumable`, drawing the progress bar; return
    ``(store_dir, model_name, n_new, seconds)``. ``adapter``: a LoRA adapter folder merged into the local
    model (``refusalkit train derta``); the run is keyed by the model and the adapter's weights."""
    ms = ModelSpec.parse(model_spec)  # validate before any work
    model: Any = ms
    model_id = None
    if adapter:
        from refusalkit.errors import RefusalkitError
        from refusalkit.training.adapter import adapter_id, check_adapter, load_adapted

        if ms.is_endpoint:
            raise RefusalkitError(f"--adapter needs a local --model; {ms.display} is an endpoint")
        check_adapter(adapter)
        model_id = f"{ms.display}+adapter:{adapter_id(adapter)}"
        extra_meta = {**(extra_meta or {}), "adapter": str(adapter)}

        def model() -> Any:
            return load_adapted(model_spec, adapter, batch_size=batch_size)

    from refusalkit.models.context import check_examples

    check_examples(ms, examples, max_new_tokens=cfg.max_new_tokens, system_prompt=cfg.system_prompt)
    with RunBar() as bar:
        res = run_resumable(
            examples,
            model,
            cfg,
            run_dir,
            fresh=fresh,
            kind=kind,
            batch_size=batch_size,
            meta=extra_meta,
            on_progress=bar,
            model_id=model_id,
        )
    return res.run_dir, res.model_name, res.n_new, bar.seconds


def register(app: typer.Typer) -> None:
    """Add the ``generate`` command to ``app``."""

    @app.command()
    @handle_errors
    def generate(
        input: str = typer.Argument(..., help="Prompt file (.jsonl/.csv with a 'prompt' field) or benchmark name."),
        output: Path = typer.Option(..., "-o", "--output", help="Where to write the responses (JSONL)."),
        model: str = typer.Option(
            "default", "--model", "-m", help="default | subject | PATH | org/name | openai:MODEL@URL"
        ),
        limit: Limit = None,
        batch_size: BatchSize = 16,
        max_new_tokens: int = typer.Option(256, help="New tokens per response."),
        temperature: Temperature = 0.0,
        top_p: TopP = 1.0,
        seed: Seed = None,
        system_prompt: SystemPrompt = None,
        run_dir: Path | None = typer.Option(None, help="Run directory (default: derived from the run's settings)."),
        adapter: str | None = typer.Option(
            None, help="LoRA adapter folder merged into the local --model (from `refusalkit train derta`)."
        ),
        fresh: bool = typer.Option(
            False,
            help="Start the run over: remove its run store (run.sqlite and its "
            "journals) from the run directory; other files stay.",
        ),
    ) -> None:
        """Run a model over prompts; every finished batch is saved, and rerunning resumes."""
        cfg = validate.generation_config(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            system_prompt=system_prompt,
            batch_size=batch_size,
            limit=limit,
        )
        validate.output_file("--output", output, inputs=[validate.input_path(input)])
        validate.output_dir("--run-dir", run_dir)
        examples = resolve_prompts(input, limit=limit)
        rdir, _, n_new, secs = run_generation(
            examples,
            model,
            cfg,
            run_dir=run_dir,
            batch_size=batch_size,
            fresh=fresh,
            extra_meta={"input": input},
            adapter=adapter,
        )
        with RunStore.open_readonly(rdir) as store:
            n = write_jsonl_atomic(output, store.iter_response_dicts())
        console.print(f"wrote {n} responses to {output} (run: {rdir}; {n_new} new in {secs:.1f}s)")
