"""``refusalkit detect``: judge responses (``detect INPUT -o OUT``), and ``train``, ``evaluate``,
``explain``, ``write-data`` for detectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from refusalkit.cli import validate
from refusalkit.cli.common import console, err_console, handle_errors
from refusalkit.detect.registry import detector_help, trainable_help
from refusalkit.errors import RefusalkitError

_DETECTOR_HELP = detector_help()


class _DefaultRun(TyperGroup):
    """Routes ``detect INPUT ...`` to the ``run`` subcommand so both ``detect FILE`` and ``detect train`` work."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # Any: the click Context typer vendors is private
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


detect_app = typer.Typer(
    cls=_DefaultRun,
    no_args_is_help=True,
    help="Judge responses as full_compliance / partial_refusal / full_refusal / redirection.",
)


@detect_app.command("run")
@handle_errors
def run(
    input: Path = typer.Argument(..., help="JSONL/CSV with 'response' (and optionally 'prompt') per row."),
    output: Path = typer.Option(..., "--output", "-o", help="Output JSONL: each row plus verdict and p_refusal."),
    detector: str = typer.Option("default", "--detector", "-d", help=_DETECTOR_HELP),
    batch_size: int = typer.Option(512, help="Responses judged per batch."),
) -> None:
    """Add ``verdict`` (taxonomy label) and ``p_refusal`` (P(not full compliance)) to every row."""
    from refusalkit.data.io import write_jsonl_atomic
    from refusalkit.detect import get_detector
    from refusalkit.detect.base import labels_from_proba
    from refusalkit.detect.inputs import read_responses

    validate.positive("--batch-size", batch_size)
    validate.output_file("--output", output, inputs=[input])
    rows, responses, prompts, notes = read_responses(input)
    det = get_detector(detector)
    verdicts, probs = [], []
    for i in range(0, len(rows), batch_size):
        ps = None if prompts is None else prompts[i : i + batch_size]
        P = det.predict_proba(responses[i : i + batch_size], ps)
        verdicts += labels_from_proba(P, det.classes_)
        probs += (1 - P[:, list(det.classes_).index("full_compliance")]).tolist()
    out = []
    for r, v, p in zip(rows, verdicts, probs):
        d = {k: val for k, val in r.items() if k != "__line__"}
        d["verdict"], d["p_refusal"], d["detector"] = v, round(float(p), 4), det.name
        out.append(d)
    write_jsonl_atomic(output, out)
    n_ref = sum(v != "full_compliance" for v in verdicts)
    console.print(f"{len(out)} responses judged by {det.name}: {n_ref} refusals ({n_ref / len(out):.1%}) -> {output}")
    if notes["empty_responses"]:
        err_console.print(f"note: {notes['empty_responses']} empty responses were judged as refusals (no answer)")
    if notes["huge_responses"]:
        err_console.print(
            f"note: {notes['huge_responses']} responses over 1 MB were judged on their first 4,000 "
            "and last 1,000 characters"
        )


@detect_app.command("constructive")
@handle_errors
def constructive(
    input: Path = typer.Argument(
        ..., help="JSONL/CSV with 'response' per row, and 'verdict' (from `refusalkit detect`) or none."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Output JSONL: each row plus 'constructive'."),
    judge: str = typer.Option("default", "--judge", help="Constructive judge: default, cues, or a saved judge folder."),
    detector: str = typer.Option(
        "default", "--detector", "-d", help="Detector for rows without a 'verdict'. " + _DETECTOR_HELP
    ),
) -> None:
    """Add ``constructive`` to every row: true/false for answers that are not full compliance (constructive:
    safe help such as named resources, corrected facts or a safe alternative; false: a bare refusal), null
    for full compliance. Rows keep their ``verdict``; a file without verdicts is judged by ``--detector``
    first (adding ``verdict`` and ``p_refusal``)."""
    from refusalkit.data.io import write_jsonl_atomic
    from refusalkit.data.taxonomy import LABELS
    from refusalkit.detect.constructive import annotate, get_constructive_judge
    from refusalkit.detect.inputs import read_responses
    from refusalkit.errors import InputError

    validate.output_file("--output", output, inputs=[input])
    if judge not in ("default", "cues") and not Path(judge).is_dir():
        raise RefusalkitError(f"--judge: {judge!r} is not default, cues or a saved judge folder")
    rows, responses, prompts, _ = read_responses(input)
    have = [r for r in rows if "verdict" in r]
    if have and len(have) != len(rows):
        r = next(r for r in rows if "verdict" not in r)
        raise InputError(
            "missing (some rows have a verdict and this one has none; give verdicts on every row or on none)",
            file=str(input),
            line=r.get("__line__"),
            field="verdict",
        )
    for r in have:
        if r["verdict"] not in LABELS:
            raise InputError(
                f"unknown label {r['verdict']!r}; expected one of {', '.join(LABELS)}",
                file=str(input),
                line=r.get("__line__"),
                field="verdict",
            )
    cj = get_constructive_judge(judge)
    out = [{k: v for k, v in r.items() if k != "__line__"} for r in rows]
    if not have and out:
        from refusalkit.detect import get_detector
        from refusalkit.detect.base import labels_from_proba

        det = get_detector(detector)
        P = det.predict_proba(responses, prompts)
        fc = list(det.classes_).index("full_compliance")
        for d, v, row in zip(out, labels_from_proba(P, det.classes_), P):
            d["verdict"], d["p_refusal"], d["detector"] = v, round(float(1 - row[fc]), 4), det.name
    annotate(out, cj)
    write_jsonl_atomic(output, out)
    n_nc = sum(d["constructive"] is not None for d in out)
    n_c = sum(bool(d["constructive"]) for d in out)
    share = f" ({n_c / n_nc:.1%})" if n_nc else ""
    console.print(
        f"{len(out)} rows, {n_nc} not full compliance: {n_c} constructive{share} by the {cj.name} judge -> {output}",
        highlight=False,
        markup=False,
    )


@detect_app.command("train")
@handle_errors
def train(
    data: list[Path] | None = typer.Option(
        None, "--data", help="Labelled JSONL/CSV (prompt, response, label); repeatable."
    ),
    convention: str = typer.Option(
        "binary",
        help="Convention of the gold labels: binary, xstest, reuter_schulze, orbench, coconot, or taxonomy labels.",
    ),
    label_field: str | None = typer.Option(
        None, help="Field with the gold label (default: label; fine_label for reuter_schulze)."
    ),
    kind: str = typer.Option("linear", help=trainable_help()),
    out: Path | None = typer.Option(None, "--out", help="Folder to write the detector into."),
    with_synthetic: bool = typer.Option(False, help="Add refusalkit's synthetic responses to the data."),
) -> None:
    """Train a detector on labelled responses. (The shipped detectors are rebuilt from a repository
    checkout with ``scripts/rebuild_shipped.py``.)"""
    from refusalkit.detect import training
    from refusalkit.detect.registry import make_detector

    validate.output_dir("--out", out)
    if not data and not with_synthetic:
        raise RefusalkitError("give --data FILE (labelled responses) or --with-synthetic")
    from refusalkit.detect.datasets import read_labelled
    from refusalkit.detect.synth import write_synthetic

    rows = []
    for f in data or []:
        rows += read_labelled(f, convention, label_field)
    if with_synthetic:
        rows += write_synthetic()
    if len({r["label"] for r in rows}) < 2:
        raise RefusalkitError("the training data has only one label; a detector needs at least two")
    if out is None:
        raise RefusalkitError("give --out FOLDER for the trained detector")
    det = training.fit_rows(make_detector(kind, name=out.name), rows)
    fit = training.evaluate_rows(det, rows)
    from collections import Counter

    det.save(
        out,
        {
            "name": out.name,
            "kind": kind,
            "training_data": {
                "files": [str(f) for f in data or []],
                "synthetic": with_synthetic,
                "n": len(rows),
                "labels": dict(Counter(r["label"] for r in rows)),
            },
            "convention": convention,
            "training_accuracy": fit["binary"]["accuracy"],
            "note": "training accuracy only; measure held-out accuracy with `refusalkit detect evaluate`",
        },
    )
    console.print(
        f"trained {kind} detector on {len(rows)} responses -> {out} (training accuracy "
        f"{fit['binary']['accuracy']:.4f}; evaluate it on held-out data)"
    )


@detect_app.command("evaluate")
@handle_errors
def evaluate(
    data: Path | None = typer.Option(None, "--data", help="Labelled JSONL/CSV (prompt, response, label)."),
    detector: list[str] = typer.Option(["default"], "--detector", "-d", help=_DETECTOR_HELP + " Repeatable."),
    convention: str = typer.Option(
        "binary", help="Convention of the gold labels (binary, xstest, reuter_schulze, orbench, coconot)."
    ),
    label_field: str | None = typer.Option(None, help="Field with the gold label."),
    rs_test: bool = typer.Option(
        False, "--rs-test", help="Use the Reuter & Schulze test split (paper protocol) from --data-dir."
    ),
    data_dir: Path | None = typer.Option(
        None, help="Folder with chatgpt_refusals.jsonl (default: $REFUSALKIT_DATA or ../shared/data)."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the reports as JSON."),
    by: str | None = typer.Option(
        None,
        "--by",
        help="Also report each group of rows sharing this field "
        "(e.g. family, source_model): n, binary accuracy, false "
        "positives/negatives, and XSTest 3-class / 4-class accuracy where the "
        "gold labels make those distinctions.",
    ),
) -> None:
    """Accuracy, macro-F1, confusion matrix, per-class precision/recall, per-source and (--by) per-group accuracy."""
    from refusalkit.detect import get_detector
    from refusalkit.detect.datasets import RS_FILE, read_labelled, rs_split
    from refusalkit.detect.metrics import format_report
    from refusalkit.detect.training import evaluate_rows

    if json_out is not None:
        validate.output_file("--json", json_out, inputs=[data])
    if by is not None and not by.strip():
        raise RefusalkitError("--by: give a field name, e.g. --by source_model")
    counts: dict[str, int] = {}
    if rs_test:
        from refusalkit.data.registry import data_root

        rs_file = (data_dir or data_root()) / RS_FILE
        rows = rs_split(rs_file)[2]
        where = f"{rs_file} test split (70/15/15, random_state 0)"
        if by is not None:
            # The protocol split keeps only the fields it scores; the ChatGPT set has one model anyway.
            raise RefusalkitError("--by works with --data, not with --rs-test")
    elif data is not None:
        rows, where = read_labelled(data, convention, label_field, group_field=by, counts=counts), str(data)
    else:
        raise RefusalkitError("give --data FILE or --rs-test")
    if not rows:
        raise RefusalkitError(f"{where}: no labelled rows left after dropping excluded labels")
    if counts.get("excluded"):
        console.print(f"skipped {counts['excluded']} rows labelled excluded", highlight=False, markup=False)
    reports = {}
    for name in detector:
        rep = evaluate_rows(get_detector(name), rows, by=by)
        rep["n_excluded"] = counts.get("excluded", 0)
        reports[name] = rep
        console.print(format_report(rep, f"== {name} on {where}"), highlight=False, markup=False)
    if json_out:
        from refusalkit.data.io import write_json_atomic

        write_json_atomic(json_out, reports, indent=1)


@detect_app.command("explain")
@handle_errors
def explain(
    response: str | None = typer.Option(None, "--response", "-r", help="Response text to explain."),
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="The prompt it answered."),
    input: Path | None = typer.Option(None, "--input", help="Explain rows of this JSONL file instead."),
    limit: int = typer.Option(5, help="Rows of --input to explain."),
    detector: str = typer.Option("default", "--detector", "-d", help=_DETECTOR_HELP),
    top: int = typer.Option(8, help="Features or rules to show."),
    rules: bool = typer.Option(False, "--rules", help="Show the detector's strongest rules/n-grams overall."),
) -> None:
    """Show the rules or n-grams that drive a verdict (or, with --rules, the detector overall)."""
    from refusalkit.detect import get_detector

    det = get_detector(detector)
    if rules:
        if hasattr(det, "rules"):
            for r in det.rules(top):
                console.print(
                    f"IF {r['rule']} THEN {r['votes_for']}  votes={r['votes']}", highlight=False, markup=False
                )
        elif hasattr(det, "top_features"):
            tf = det.top_features(top)
            for side in ("refusal", "compliance"):
                console.print(
                    f"towards {side}: " + ", ".join(f"{n} ({w:+.2f})" for n, w in tf[side]),
                    highlight=False,
                    markup=False,
                )
        else:
            from refusalkit.detect.patterns import CUES

            for g, ps in CUES.items():
                console.print(f"{g}: {len(ps)} patterns, e.g. {ps[0][:100]}", highlight=False, markup=False)
        return
    if input is not None:
        from refusalkit.detect.inputs import read_responses

        _, responses, prompts, _ = read_responses(input)
        items = [(responses[i], prompts[i] if prompts else None) for i in range(min(limit, len(responses)))]
    elif response is not None:
        items = [(response, prompt)]
    else:
        raise RefusalkitError("give --response TEXT, --input FILE, or --rules")
    for resp, pr in items:
        P = det.predict_proba([resp], None if pr is None else [pr])
        from refusalkit.detect.base import labels_from_proba

        v = labels_from_proba(P, det.classes_)[0]
        p = 1 - P[0, list(det.classes_).index("full_compliance")]
        console.print(f"{v}  p_refusal={p:.3f}  {resp[:100]!r}", highlight=False, markup=False)
        for e in det.explain(resp, pr, top):
            extra = f"  {e['weight']:+.3f}" if "weight" in e else ""
            console.print(f"   {e['feature']}{extra}", highlight=False, markup=False)


@detect_app.command("write-data")
@handle_errors
def write_data(
    output: Path = typer.Option(..., "--output", "-o", help="JSONL to write."),
    seed: int = typer.Option(0),
    per_topic: int = typer.Option(25),
) -> None:
    """Write refusalkit's synthetic labelled responses (the data the shipped detectors train on)."""
    from refusalkit.data.io import write_jsonl_atomic
    from refusalkit.detect.synth import write_synthetic

    validate.positive("--per-topic", per_topic)
    validate.output_file("--output", output)
    n = write_jsonl_atomic(output, write_synthetic(seed=seed, n_per_topic=per_topic))
    console.print(f"wrote {n} labelled responses -> {output}")


def register(app: typer.Typer) -> None:
    """Add the ``detect`` command group to ``app``."""
    app.add_typer(detect_app, name="detect")
