"""``refusalkit customset``: a custom over-refusal set from a policy file (the OVERT workflow)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from refusalkit.cli import validate
from refusalkit.cli.common import console, err_console, handle_errors


def register(app: typer.Typer) -> None:
    """Add the ``customset`` command to ``app``."""

    @app.command("customset")
    @handle_errors
    def customset_cmd(
        policy: Path = typer.Argument(
            ...,
            help="Policy file (.yaml/.toml/.json): categories with allowed and "
            "disallowed content; see docs/evaluation.md.",
        ),
        output: Path = typer.Option(
            ..., "-o", "--output", help="JSONL file of the balanced set (OUTPUT.stats.json gets the yield per stage)."
        ),
        model: str = typer.Option("default", "--model", "-m", help="The LLM that writes and audits prompts."),
        per_category: int = typer.Option(10, help="At most N benign and N harmful prompts per category."),
        rounds: int = typer.Option(3, help="Sampled writing rounds per category."),
        k_per_round: int = typer.Option(8, help="Requests asked for in each round."),
        temperature: float = typer.Option(0.9, help="Sampling temperature of the writer."),
        max_new_tokens: int = typer.Option(200, help="Tokens per writing answer."),
        audit_threshold: float = typer.Option(
            0.5, help="Keep benign prompts with P(allowed) >= T and harmful ones below it."
        ),
        dedup_threshold: float = typer.Option(
            0.9, help="Drop prompts whose MiniLM cosine similarity to a kept one is >= T (1 = exact repeats only)."
        ),
        no_balance: bool = typer.Option(
            False, "--no-balance", help="Keep up to N per category without equalising categories."
        ),
        seed: int = typer.Option(0),
        batch_size: int = typer.Option(16, help="Prompts per generation batch."),
    ) -> None:
        """Write seemingly-harmful-but-benign prompts and harmful counterparts for a policy, audit, dedup and
        balance them; the output is a prompt file for ``refusalkit eval --bench``."""
        from refusalkit.customsets import build_custom_set, load_policy
        from refusalkit.data.io import write_json_atomic, write_jsonl_atomic
        from refusalkit.evaluate.runner import load_eval_model

        for opt, v in (("--per-category", per_category), ("--rounds", rounds), ("--k-per-round", k_per_round)):
            validate.positive(opt, v)
        validate.generation(max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size, seed=seed)
        validate.probability("--audit-threshold", audit_threshold, zero_ok=True)
        validate.probability("--dedup-threshold", dedup_threshold)
        validate.output_file("--output", output, inputs=[policy])
        validate.output_file(
            "--output (its .stats.json)", output.with_name(output.name + ".stats.json"), inputs=[policy]
        )
        pol = load_policy(policy)
        lm = load_eval_model(model, batch_size=batch_size)
        res = build_custom_set(
            pol,
            lm,
            per_category=per_category,
            rounds=rounds,
            k_per_round=k_per_round,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            audit_threshold=audit_threshold,
            dedup_threshold=dedup_threshold,
            seed=seed,
            balance=not no_balance,
            on_stage=lambda s: err_console.print(f"[dim]{s}[/]"),
        )
        stats_path = output.with_name(output.name + ".stats.json")
        if not res.examples:
            write_json_atomic(stats_path, {"stats": res.stats, "settings": res.settings})
            from refusalkit.errors import RefusalkitError

            raise RefusalkitError(
                f"no prompt survived the audit and balancing (yield per stage in {stats_path}); "
                "try more --rounds, a larger model, or --no-balance"
            )
        write_jsonl_atomic(output, [ex.to_dict() for ex in res.examples])
        write_json_atomic(stats_path, {"stats": res.stats, "yield": res.yield_summary(), "settings": res.settings})
        t = Table(title=f"custom set for policy {pol.name!r} written by {lm.name}")
        stages = ("lines_written", "parsed", "audit_kept", "dedup_kept", "final")
        for col in ("category", "label", *stages):
            t.add_column(col)
        for cat, per in res.stats.items():
            for lab, st in per.items():
                t.add_row(cat, lab, *[str(st.get(s, 0)) for s in stages])
        console.print(t)
        console.print(f"wrote {len(res.examples)} prompts to {output} (yield per stage in {stats_path})")
