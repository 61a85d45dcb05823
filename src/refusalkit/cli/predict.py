"""``refusalkit predict``: P(refusal) for prompts before generating (``predict INPUT -o OUT``), and
``train``, ``bootstrap`` (any target model) and ``evaluate`` for prompt classifiers."""

from __future__ import annotations

from pathlib import Path

import typer

from refusalkit.cli import validate
from refusalkit.cli.common import console, handle_errors
from refusalkit.cli.detect import _DefaultRun
from refusalkit.errors import RefusalkitError

# One definition for train, bootstrap and evaluate.
_ENCODER_OPTION = typer.Option(
    None,
    "--encoder",
    help="Local sentence-encoder folder (safetensors) for the embedding features; default: the bundled MiniLM.",
)

_FEATURES_HELP = (
    "tfidf, tfidf+embedding, tfidf+lm or tfidf+embedding+lm (lm: a local model's hidden state at "
    "the end of the prompt; slower, see --lm)."
)
_LM_OPTION = typer.Option(
    "default",
    "--lm",
    help="Model spec whose hidden states the lm features read (default: the bundled SmolLM2-135M-Instruct).",
)
_LM_LAYER_OPTION = typer.Option(18, "--lm-layer", help="Layer of the lm features.")


def _clf_kw(features: str, lm: str, lm_layer: int) -> dict:
    from refusalkit.predict.prompt_model import features_use_lm

    return {"lm": lm, "lm_layer": lm_layer} if features_use_lm(features) else {}


predict_app = typer.Typer(
    cls=_DefaultRun,
    no_args_is_help=True,
    help="Predict, before generating, how likely a model is to refuse each prompt.",
)


def _read_prompts(path: Path) -> tuple[list[dict], list[str]]:
    from refusalkit.data.io import read_records, require_str

    rows = read_records(path)
    return rows, [require_str(r, "prompt", file=str(path)) for r in rows]


@predict_app.command("run")
@handle_errors
def run(
    input: Path = typer.Argument(..., help="JSONL/CSV with a 'prompt' per row."),
    output: Path = typer.Option(..., "--output", "-o", help="Output JSONL: each row plus p_refusal."),
    predictor: str = typer.Option(
        "chatgpt",
        "--predictor",
        help="'chatgpt' or 'chatgpt-lm' (shipped; -lm also reads the bundled SmolLM2's hidden state: slower, more accurate) or a folder from `predict train`/`bootstrap`.",
    ),
) -> None:
    """Add ``p_refusal`` (probability that the target model refuses) to every prompt."""
    from refusalkit.data.io import write_jsonl_atomic
    from refusalkit.predict import get_predictor

    validate.output_file("--output", output, inputs=[input])
    rows, prompts = _read_prompts(input)
    clf = get_predictor(predictor)
    p = clf.p_refusal(prompts)
    out = []
    for r, v in zip(rows, p):
        d = {k: x for k, x in r.items() if k != "__line__"}
        d["p_refusal"], d["predicted_for"] = round(float(v), 4), clf.target_model
        out.append(d)
    write_jsonl_atomic(output, out)
    console.print(f"{len(out)} prompts scored for {clf.target_model}: mean p_refusal {p.mean():.3f} -> {output}")


@predict_app.command("train")
@handle_errors
def train(
    data: Path = typer.Option(
        ..., "--data", help="JSONL/CSV with 'prompt' and a label: 'refused' (0/1/bool) or 'label'."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for the classifier."),
    convention: str = typer.Option("binary", help="Convention of 'label' when there is no 'refused' field."),
    label_field: str | None = typer.Option(
        None, help="Field with the label (default: refused, else label/fine_label)."
    ),
    features: str = typer.Option("tfidf", help=_FEATURES_HELP),
    encoder: Path | None = _ENCODER_OPTION,
    lm: str = _LM_OPTION,
    lm_layer: int = _LM_LAYER_OPTION,
    target_model: str = typer.Option("unknown", help="The model whose refusals the labels describe."),
) -> None:
    """Train a prompt classifier from prompts labelled refused / answered."""
    from refusalkit.data.conventions import gold_binary
    from refusalkit.data.io import read_records
    from refusalkit.errors import InputError
    from refusalkit.predict.bootstrap import cv_accuracy
    from refusalkit.predict.prompt_model import PromptClassifier

    validate.output_dir("--out", out)
    rows, prompts, ys = read_records(data), [], []
    for r in rows:
        f = label_field or (
            "refused" if "refused" in r else ("fine_label" if convention == "reuter_schulze" else "label")
        )
        if not isinstance(r.get("prompt"), str) or not r["prompt"].strip():
            raise InputError(
                "missing or not a non-empty string", file=str(data), line=r.get("__line__"), field="prompt"
            )
        if f not in r:
            raise InputError("missing", file=str(data), line=r.get("__line__"), field=f)
        try:
            y = gold_binary(r[f], convention)
        except RefusalkitError as e:
            raise InputError(str(e), file=str(data), line=r.get("__line__"), field=f) from None
        if y is not None:
            prompts.append(r["prompt"])
            ys.append(y)
    kw = _clf_kw(features, lm, lm_layer)
    clf = PromptClassifier(features=features, target_model=target_model, encoder=encoder, **kw).fit(prompts, ys)
    cv = cv_accuracy(prompts, ys, features, encoder=encoder, **kw)
    clf.save(
        out,
        {
            "target_model": target_model,
            "training_data": str(data),
            "n": len(prompts),
            "n_refused": int(sum(ys)),
            "encoder": clf.encoder,
            "settings": kw,
            "cv5_accuracy": cv,
            "top_ngrams": clf.top_ngrams(10),
        },
    )
    console.print(
        f"trained on {len(prompts)} prompts ({sum(ys)} refused); 5-fold CV accuracy "
        f"{'-' if cv is None else f'{cv:.4f}'} -> {out}"
    )


@predict_app.command("bootstrap")
@handle_errors
def bootstrap(
    prompts: Path = typer.Option(..., "--prompts", help="Unlabelled prompts (JSONL/CSV with 'prompt')."),
    model: str = typer.Option("default", "--model", "-m", help="Target model spec (see docs/models.md)."),
    out: Path = typer.Option(..., "--out", help="Folder for the classifier and its report."),
    detector: str = typer.Option("default", "--detector", "-d", help="Detector that labels the answers."),
    max_new_tokens: int = typer.Option(64, help="New tokens per answer (the opening decides refusals)."),
    batch_size: int = typer.Option(16),
    limit: int | None = typer.Option(None, help="Use only the first N prompts."),
    features: str = typer.Option("tfidf", help=_FEATURES_HELP),
    encoder: Path | None = _ENCODER_OPTION,
    lm: str = _LM_OPTION,
    lm_layer: int = _LM_LAYER_OPTION,
) -> None:
    """Generate the target model's answers, label them with a detector, train its prompt classifier.

    Generation is resumable: rerun the same command after an interruption."""
    from refusalkit.cli.generate import run_generation
    from refusalkit.data.io import read_examples, write_json_atomic
    from refusalkit.detect import get_detector
    from refusalkit.models.base import GenerationConfig
    from refusalkit.predict.bootstrap import train_from_responses
    from refusalkit.runs import RunStore

    validate.generation(max_new_tokens=max_new_tokens, batch_size=batch_size, limit=limit)
    validate.output_dir("--out", out)
    exs = read_examples(prompts, limit=limit)
    cfg = GenerationConfig(max_new_tokens=max_new_tokens)
    rdir, name, _, _ = run_generation(
        exs, model, cfg, run_dir=out / "run", batch_size=batch_size, fresh=False, kind="bootstrap"
    )
    with RunStore.open_readonly(rdir) as st:
        resps = st.responses()
    clf, report = train_from_responses(
        [r.prompt for r in resps],
        [r.response for r in resps],
        get_detector(detector),
        target_model=name,
        features=features,
        encoder=encoder,
        clf_kw=_clf_kw(features, lm, lm_layer),
    )
    out.mkdir(parents=True, exist_ok=True)
    if clf is not None:
        clf.save(out, report)
    write_json_atomic(out / "report.json", report, indent=1)
    _print_report(report)


def _print_report(report: dict) -> None:
    console.print(
        f"{report['target_model']}: refused {report['n_refused']}/{report['n_prompts']} "
        f"({report['refusal_rate']:.1%}) by {report['labelled_by']}",
        highlight=False,
    )
    if "note" in report:
        console.print(report["note"])
        return
    cv = report.get("cv_accuracy")
    console.print(
        f"prompt classifier 5-fold CV accuracy {'-' if cv is None else f'{cv:.3f}'} "
        f"(majority {report['majority_baseline']:.3f})"
    )
    for side in ("refusal", "compliance"):
        console.print(
            f"n-grams towards {side}: " + ", ".join(n for n, _ in report["top_ngrams"][side]),
            highlight=False,
            markup=False,
        )


@predict_app.command("evaluate")
@handle_errors
def evaluate(
    data_dir: Path | None = typer.Option(
        None, help="Folder with chatgpt_refusals.jsonl (default: $REFUSALKIT_DATA or ../shared/data)."
    ),
    features: str = typer.Option("tfidf+embedding", help=_FEATURES_HELP),
    encoder: Path | None = _ENCODER_OPTION,
    lm: str = _LM_OPTION,
    lm_layer: int = _LM_LAYER_OPTION,
    json_out: Path | None = typer.Option(None, "--json"),
) -> None:
    """The paper's prompt-classifier figures: 985 Quora prompts, 5-fold CV and trained on other subsets."""
    from refusalkit.detect.datasets import RS_FILE
    from refusalkit.predict.bootstrap import rs_prompt_figures

    if json_out is not None:
        validate.output_file("--json", json_out)
    from refusalkit.data.registry import data_root

    figs = rs_prompt_figures(
        (data_dir or data_root()) / RS_FILE, features, encoder=encoder, clf_kw=_clf_kw(features, lm, lm_layer)
    )
    for k, v in figs.items():
        console.print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}", highlight=False)
    if json_out:
        from refusalkit.data.io import write_json_atomic

        write_json_atomic(json_out, figs, indent=1)


def register(app: typer.Typer) -> None:
    """Add the ``predict`` command group to ``app``."""
    app.add_typer(predict_app, name="predict")
