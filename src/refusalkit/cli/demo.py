"""``refusalkit demo``: the main job, offline on the bundled model."""

from __future__ import annotations

from collections import defaultdict
from importlib import resources

import typer
from rich.markup import escape
from rich.table import Table

from refusalkit.cli.common import console, handle_errors
from refusalkit.data.io import read_examples
from refusalkit.detect import get_detector, is_refusal
from refusalkit.models.base import GenerationConfig
from refusalkit.runs import RunStore


def demo_prompts_path():
    """Return the path of the bundled demo prompt set (written for refusalkit, 5 categories + look-alikes)."""
    return resources.files("refusalkit") / "resources" / "demo_prompts.jsonl"


def refusal_table(rows: list[dict], title: str) -> Table:
    """Return a table of refusal rates per category on prompts to refuse and to answer."""
    agg: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"refuse": [0, 0], "comply": [0, 0]})
    for r in rows:
        a = agg[r.get("category") or "(none)"][r.get("expected") or "refuse"]
        a[0] += int(r["refused"])
        a[1] += 1
    t = Table(title=title)
    t.add_column("category")
    t.add_column("refused | should refuse", justify="right")
    t.add_column("refused | should answer", justify="right")
    for cat in sorted(agg):
        cells = []
        for exp in ("refuse", "comply"):
            k, n = agg[cat][exp]
            cells.append(f"{k}/{n} ({k / n:.0%})" if n else "-")
        t.add_row(cat, *cells)
    return t


def policy_rates_table(columns: dict[str, list[dict]], title: str) -> Table:
    """Return a table with one row per category and one column per refusal-token policy; cells read
    'refused/n should refuse | refused/n should answer'."""
    t = Table(title=title)
    t.add_column("category")
    for name in columns:
        t.add_column(f"{name}\nharmful | contrast", justify="right")
    cats = sorted({r["category"] or "(none)" for rows in columns.values() for r in rows})
    for c in cats:
        cells = []
        for rows in columns.values():
            agg: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for r in rows:
                if (r["category"] or "(none)") == c:
                    agg[r["expected"]][0] += int(r["refused"])
                    agg[r["expected"]][1] += 1
            cells.append(" | ".join(f"{agg[k][0]}/{agg[k][1]}" if agg[k][1] else "-" for k in ("refuse", "comply")))
        t.add_row(c, *cells)
    return t


def show_refusal_tokens(exs, out_dir) -> None:
    """Print the bundled model after the refusal-token adapter, under its shipped profiles (the figures come
    from ``refusalkit.tokens.demo``)."""
    from refusalkit.tokens.demo import run_tokens_demo

    console.print(
        "\n[bold]Refusal tokens[/]: the same model with the shipped adapter; each policy sets how often "
        "each category is refused, without retraining"
    )
    res = run_tokens_demo(exs, out_dir=out_dir)
    if res is None:
        console.print("[yellow]refusal tokens: no bundled adapter in this install; skipped[/]")
        return
    console.print(
        policy_rates_table(
            res.columns,
            "Refusal tokens on the demo prompts: prompts refused by each policy (one forward pass each, no generation)",
        )
    )
    for fig in res.test_figures:  # CoCoNot held-out figures, measured when the profiles were made
        rates = ", ".join(f"{c} {r:.0%}" for c, r in fig["rates"].items())
        console.print(f"  CoCoNot test split, profile [bold]{fig['name']}[/]: F1 {fig['f1']:.3f}; refused: {rates}")
    for e, g in res.examples:
        console.print(
            f"[dim]{escape(str(e.category))} ({e.expected})[/] {escape(e.prompt)}\n"
            f"  -> {escape(g.meta['control_token'])} {escape(repr(g.text[:160]))}"
        )
    if res.pngs:
        console.print(f"calibration curves written to {', '.join(res.pngs)}")


def show_prompt_prediction(resps, det, model_name: str) -> None:
    """Print the bootstrapped prompt-refusal predictor for the demo model: its answers, labelled by ``det``,
    train a prompt classifier (Reuter & Schulze's pipeline); shows its CV accuracy and top n-grams."""
    from refusalkit.predict.bootstrap import train_from_responses

    console.print(
        "\n[bold]Prompt-refusal prediction[/]: the answers above, labelled by the detector, train a "
        f"classifier that predicts from the prompt alone whether {escape(model_name)} will refuse"
    )
    _, rep = train_from_responses(
        [r.prompt for r in resps], [r.response for r in resps], det, target_model=model_name, features="tfidf", folds=3
    )
    console.print(f"refused {rep['n_refused']}/{rep['n_prompts']} prompts ({rep['refusal_rate']:.0%})")
    if "note" in rep:
        console.print(f"{escape(rep['note'])}: every prompt gets p_refusal = {rep['refusal_rate']:.2f}")
        return
    cv = rep.get("cv_accuracy")
    console.print(f"3-fold CV accuracy {'-' if cv is None else f'{cv:.2f}'} (majority {rep['majority_baseline']:.2f})")
    console.print("n-grams towards refusal: " + escape(", ".join(n for n, _ in rep["top_ngrams"]["refusal"][:8])))


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to ``app``."""

    @app.command()
    @handle_errors
    def demo(
        model: str = typer.Option("default", "--model", "-m", help="Model spec (see docs/models.md)."),
        max_new_tokens: int = typer.Option(64, help="New tokens per answer."),
        detector: str = typer.Option("default", help="Detector that judges the answers."),
        examples: int = typer.Option(3, help="Example answers to print."),
        run_dir: str | None = typer.Option(None, help="Run directory (default: under the runs root)."),
        tokens: bool = typer.Option(
            True, "--tokens/--no-tokens", help="Also show the refusal-token adapter and its shipped profiles."
        ),
    ) -> None:
        """Generate answers to the demo prompts and show how often the model refuses, per category."""
        from pathlib import Path

        from refusalkit.cli import validate
        from refusalkit.cli.generate import run_generation

        validate.generation(max_new_tokens=max_new_tokens)
        validate.positive("--examples", examples)
        validate.output_dir("--run-dir", run_dir)

        with resources.as_file(demo_prompts_path()) as path:
            exs = read_examples(path)
        cfg = GenerationConfig(max_new_tokens=max_new_tokens)
        console.print(f"[bold]refusalkit demo[/]: {len(exs)} prompts ({model}), judged by the {detector} detector")
        rdir, name, _, secs = run_generation(
            exs, model, cfg, run_dir=Path(run_dir) if run_dir else None, batch_size=16, fresh=False, kind="demo"
        )
        with RunStore.open_readonly(rdir) as st:
            resps = st.responses()
        det = get_detector(detector)
        verdicts = det.predict([r.response for r in resps], prompts=[r.prompt for r in resps])
        rows = [
            {"category": r.category, "expected": r.expected, "refused": is_refusal(v)} for r, v in zip(resps, verdicts)
        ]
        console.print(refusal_table(rows, f"Refusals of {name}"))
        for r, v in list(zip(resps, verdicts))[:: max(1, len(resps) // max(examples, 1))][:examples]:
            console.print(
                f"[dim]{escape(str(r.category))} ({r.expected})[/] {escape(r.prompt)}\n"
                f"  -> {escape('[' + v + ']')} {escape(repr(r.response[:200]))}"
            )
        console.print(f"responses stored in {rdir}")
        show_prompt_prediction(resps, det, name)
        if tokens and model == "default":
            show_refusal_tokens(exs, Path(rdir) / "token-curves")
