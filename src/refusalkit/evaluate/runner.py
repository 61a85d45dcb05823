"""``run_eval``: generate (resumably, through the run store), judge each committed batch, and write
``metrics.json``, ``responses.jsonl``, the plots and ``report.html`` into the run directory.

Generation and judging are interleaved batch by batch, and each step commits before the next starts, so a
killed eval rerun with the same command resumes where it stopped and judges every prompt exactly once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refusalkit.data.io import write_json_atomic, write_jsonl_atomic, write_text_atomic
from refusalkit.errors import RefusalkitError
from refusalkit.evaluate.benchsets import load_eval_examples, split_specs
from refusalkit.evaluate.judge import T2I_DETECTOR, detector_error_rates, judge_pending, resolve_detector
from refusalkit.evaluate.summary import compute_metrics
from refusalkit.models.base import GenerationConfig, LanguageModel
from refusalkit.models.spec import ModelSpec, load_model
from refusalkit.runs import RunProgress, RunStore, run_resumable

CONSTRUCTIVE_DEFINITION = (
    "share of non-compliant answers (any verdict but full_compliance) that give safe help (named resources, "
    "corrected facts, a safe alternative) rather than a bare refusal; Wilson interval; docs/constructive.md"
)
OUTPUTS = ("metrics.json", "responses.jsonl", "report.html", "frontier.png", "categories.png")


@dataclass
class EvalResult:
    """What one ``run_eval`` call did: the run directory, the metrics document, how many responses it
    generated and judged (a resumed run does only the missing ones) and where its time went."""

    run_dir: Path
    metrics: dict[str, Any]
    n_generated: int
    n_judged: int
    timing: dict[str, float]


def load_eval_model(spec: str | ModelSpec, *, batch_size: int = 16, images_dir: Path | None = None) -> LanguageModel:
    """Return the model for any ``--model`` spec that :func:`refusalkit.models.spec.load_model` accepts;
    a ``t2i:MODEL@URL`` image endpoint keeps its images in ``images_dir``."""
    return load_model(spec, batch_size=batch_size, images_dir=images_dir)


def judged_rows(store: RunStore, detector_name: str) -> list[dict[str, Any]]:
    """Return the run's responses (input order) merged with their verdicts from ``detector_name``."""
    verdicts = store.verdicts(detector_name)
    rows = []
    for r in store.iter_response_dicts():
        v = verdicts.get(r["id"])
        if v is None:
            continue
        rows.append(
            {
                **r,
                "verdict": v["verdict"],
                "p_refusal": v["p_refusal"],
                "refused": v["verdict"] != "full_compliance",
                "detector": detector_name,
                "convention": v.get("convention"),
                "convention_label": v.get("convention_label"),
            }
        )
    return rows


def write_outputs(run_dir: Path, metrics: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Write metrics.json, responses.jsonl, the plots and report.html into ``run_dir`` (each atomically)."""
    from refusalkit.evaluate import plots, report

    fr = plots.frontier_points(metrics, "overall") + plots.frontier_points(metrics, "", per_category=True)
    pngs = {
        "frontier": plots.frontier_plot(fr, f"Safety vs over-refusal: {metrics['run'].get('model')}"),
        "categories": plots.category_bars(metrics),
    }
    for name, png in pngs.items():
        tmp = run_dir / f".{name}.png.tmp"
        tmp.write_bytes(png)
        tmp.replace(run_dir / f"{name}.png")
    write_jsonl_atomic(run_dir / "responses.jsonl", rows)
    write_json_atomic(run_dir / "metrics.json", metrics)
    write_text_atomic(run_dir / "report.html", report.run_report(metrics, rows, pngs))


def run_eval(
    benches: Sequence[str],
    *,
    model_spec: str,
    out_dir: str | Path,
    detector: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    limit_mode: str = "stratified",
    data_dir: str | None = None,
    config: GenerationConfig | None = None,
    batch_size: int = 16,
    fresh: bool = False,
    rejudge: bool = False,
    sens: float | None = None,
    spec: float | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    model: Any = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    constructive: str | None = "default",
) -> EvalResult:
    """Evaluate ``model_spec`` on ``benches`` into ``out_dir`` and return an :class:`EvalResult`.

    ``model`` may be a ready LanguageModel (then ``model_spec`` only names the run). ``rejudge`` keeps the
    stored responses but judges all of them again (e.g. after the detector was retrained). ``constructive``
    names the constructive-safety judge (:func:`refusalkit.detect.constructive.get_constructive_judge`) that
    marks each non-compliant answer constructive or bare for ``constructive_rate``; ``None`` skips it (it is
    always skipped for judges that do not read text, e.g. image models).
    ``on_progress(stage, done, total)`` is called after each committed batch. Raises RefusalkitError for bad input before any
    work starts.
    """
    t_start = time.perf_counter()
    cfg = config or GenerationConfig()
    if not 0.5 <= level < 1:
        raise RefusalkitError(f"--confidence must be in [0.5, 1), got {level}")
    ms = ModelSpec.parse(model_spec)
    if detector is None and ms.kind == "t2i":
        detector = T2I_DETECTOR
    det = resolve_detector(detector)
    errors = detector_error_rates(det, sens, spec)
    cjudge = _constructive_judge(constructive) if constructive is not None and det.judges_text else None
    specs = split_specs(benches)
    examples = load_eval_examples(specs, limit=limit, seed=seed, limit_mode=limit_mode, data_dir=data_dir)
    if model is None:  # every prompt must fit the context before the run store is even created
        from refusalkit.models.context import check_examples

        check_examples(ms, examples, max_new_tokens=cfg.max_new_tokens, system_prompt=cfg.system_prompt)
    out = Path(out_dir)
    pass_no = 1

    def on_open(store: RunStore) -> None:
        nonlocal pass_no
        if rejudge:
            store.clear_verdicts(det.name)
        pass_no = int(store.get_meta().get("eval_passes", 0)) + 1
        store.set_meta(eval_passes=pass_no, detector=det.name)

    def report(p: RunProgress) -> None:
        if on_progress and p.new:
            on_progress("generate", p.done, p.total)

    res = run_resumable(
        examples,
        model if model is not None else (lambda: load_eval_model(ms, batch_size=batch_size, images_dir=out / "images")),
        cfg,
        out,
        fresh=fresh,
        outputs=OUTPUTS,
        kind="eval",
        model_id=ms.display,
        key_extra={"kind": "eval"},
        meta={"input": ",".join(specs), "benchmarks": specs, "limit": limit, "limit_mode": limit_mode, "seed": seed},
        batch_size=batch_size,
        on_open=on_open,
        judge=lambda store: judge_pending(store, det, pass_no=pass_no),
        on_progress=report,
        dir_option="--out",
    )
    with RunStore.open_readonly(out) as store:
        rows = judged_rows(store, det.name)
    c_info = None
    if cjudge is not None:
        from refusalkit.detect.constructive import annotate

        annotate(rows, cjudge)
        c_info = {"judge": cjudge.name, "definition": CONSTRUCTIVE_DEFINITION}
    run_info = {
        "dir": str(out),
        "model": ms.display,
        "model_name": res.model_name,
        "benchmarks": specs,
        "limit": limit,
        "limit_mode": limit_mode,
        "seed": seed,
        "n_inputs": res.n_inputs,
        "generation": cfg.to_dict(),
        "batch_size": batch_size,
        "run_key": res.key,
        "created": res.created,
        "eval_passes": pass_no,
        "refusalkit_version": _version(),
    }
    timing: dict[str, Any] = dict(res.timing)
    n_gen, judged = res.n_new, res.n_judged
    t = time.perf_counter()
    metrics = compute_metrics(
        rows,
        run=run_info,
        detector={"name": det.name},
        errors=errors,
        level=level,
        n_boot=n_boot,
        seed=seed,
        constructive=c_info,
    )
    write_outputs(out, metrics, rows)
    timing["metrics_report_s"] = time.perf_counter() - t
    timing["total_s"] = time.perf_counter() - t_start
    timing["outside_generation_share"] = (1 - timing["generate_s"] / timing["total_s"]) if n_gen else None
    metrics["timing"] = timing
    write_json_atomic(out / "metrics.json", metrics)
    return EvalResult(out, metrics, n_gen, judged, timing)


def _constructive_judge(name: str) -> Any:
    from refusalkit.detect.constructive import get_constructive_judge

    return get_constructive_judge(name)


def _version() -> str:
    from refusalkit import __version__

    return __version__


def load_run_outputs(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Return ``(metrics, judged rows)`` of a finished eval run directory (its metrics.json and
    responses.jsonl); raises RefusalkitError when they are missing."""
    from refusalkit.data.io import iter_jsonl

    d = Path(run_dir)
    mp, rp = d / "metrics.json", d / "responses.jsonl"
    if not mp.is_file() or not rp.is_file():
        raise RefusalkitError(
            f"{d} is not a finished eval run (no metrics.json/responses.jsonl); "
            "run `refusalkit eval ... --out DIR` first"
        )
    try:
        metrics = json.loads(mp.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        from refusalkit.errors import InputError

        raise InputError(f"malformed JSON: {e.msg}", file=str(mp), line=e.lineno) from None
    return metrics, list(iter_jsonl(rp))
