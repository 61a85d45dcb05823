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

from refusalkit.data.io import write_jsonl_atomic, write_text_atomic
from refusalkit.errors import RefusalkitError
from refusalkit.evaluate.benchsets import load_eval_examples, split_specs
from refusalkit.evaluate.generation import generate_into_store, run_key
from refusalkit.evaluate.judge import (T2I_DETECTOR, detector_error_rates, judge_pending, resolve_detector)
from refusalkit.evaluate.store import DB_NAME, RunStore
from refusalkit.evaluate.summary import compute_metrics
from refusalkit.models.base import GenerationConfig

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


class _TimedModel:
    """Wraps a LanguageModel and adds up the seconds spent inside ``generate``."""

    def __init__(self, model: Any):
        self.model = model
        self.name = model.name
        self.seconds = 0.0

    def generate(self, prompts, config=None):
        t = time.perf_counter()
        try:
            return self.model.generate(prompts, config)
        finally:
            self.seconds += time.perf_counter() - t


def load_eval_model(spec: str, *, batch_size: int = 16, images_dir: Path | None = None):
    """Return a model for ``spec``: ``t2i:MODEL@URL`` for an OpenAI-compatible image endpoint (images kept
    in ``images_dir``), else any ``--model`` spec that :func:`refusalkit.models.spec.load_model` accepts."""
    if spec.startswith("t2i:"):
        from refusalkit.models.t2i import OpenAIImageModel, parse_t2i_spec
        model, url = parse_t2i_spec(spec)
        return OpenAIImageModel(model, url, images_dir=images_dir)
    from refusalkit.models.spec import load_model, parse_model_spec
    kind, _ = parse_model_spec(spec)
    return load_model(spec) if kind == "openai" else load_model(spec, batch_size=batch_size)


def _validate_spec(spec: str) -> None:
    if spec.startswith("t2i:"):
        from refusalkit.models.t2i import parse_t2i_spec
        parse_t2i_spec(spec)
    else:
        from refusalkit.models.spec import parse_model_spec
        parse_model_spec(spec)


def judged_rows(store: RunStore, detector_name: str) -> list[dict[str, Any]]:
    """Return the run's responses (input order) merged with their verdicts from ``detector_name``."""
    verdicts = store.verdicts(detector_name)
    rows = []
    for r in store.iter_response_dicts():
        v = verdicts.get(r["id"])
        if v is None:
            continue
        rows.append({**r, "verdict": v["verdict"], "p_refusal": v["p_refusal"],
                     "refused": v["verdict"] != "full_compliance", "detector": detector_name,
                     "convention": v.get("convention"), "convention_label": v.get("convention_label")})
    return rows


def write_outputs(run_dir: Path, metrics: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Write metrics.json, responses.jsonl, the plots and report.html into ``run_dir`` (each atomically)."""
    from refusalkit.evaluate import plots, report

    fr = plots.frontier_points(metrics, "overall") + plots.frontier_points(metrics, "", per_category=True)
    pngs = {"frontier": plots.frontier_plot(fr, f"Safety vs over-refusal: {metrics['run'].get('model')}"),
            "categories": plots.category_bars(metrics)}
    for name, png in pngs.items():
        tmp = run_dir / f".{name}.png.tmp"
        tmp.write_bytes(png)
        tmp.replace(run_dir / f"{name}.png")
    write_jsonl_atomic(run_dir / "responses.jsonl", rows)
    write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    write_text_atomic(run_dir / "report.html", report.run_report(metrics, rows, pngs))


def run_eval(benches: Sequence[str], *, model_spec: str, out_dir: str | Path, detector: str | None = None,
             limit: int | None = None, seed: int = 0, limit_mode: str = "stratified",
             data_dir: str | None = None, config: GenerationConfig | None = None, batch_size: int = 16,
             fresh: bool = False, rejudge: bool = False, sens: float | None = None, spec: float | None = None,
             n_boot: int = 2000, level: float = 0.95, model: Any = None,
             on_progress: Callable[[str, int, int], None] | None = None) -> EvalResult:
    """Evaluate ``model_spec`` on ``benches`` into ``out_dir`` and return an :class:`EvalResult`.

    ``model`` may be a ready LanguageModel (then ``model_spec`` only names the run). ``rejudge`` keeps the
    stored responses but judges all of them again (e.g. after the detector was retrained).
    ``on_progress(stage, done, total)`` is called after each committed batch. Raises RefusalkitError for bad input before any
    work starts.
    """
    t_start = time.perf_counter()
    cfg = config or GenerationConfig()
    if not 0.5 <= level < 1:
        raise RefusalkitError(f"--confidence must be in [0.5, 1), got {level}")
    _validate_spec(model_spec)
    if detector is None and model_spec.startswith("t2i:"):
        detector = T2I_DETECTOR
    det = resolve_detector(detector)
    errors = detector_error_rates(det, sens, spec)
    specs = split_specs(benches)
    examples = load_eval_examples(specs, limit=limit, seed=seed, limit_mode=limit_mode, data_dir=data_dir)
    if model is None:  # every prompt must fit the context before the run store is even created
        from refusalkit.models.context import check_examples
        check_examples(model_spec, examples, max_new_tokens=cfg.max_new_tokens, system_prompt=cfg.system_prompt)
    out = Path(out_dir)
    if fresh:
        for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", *OUTPUTS):
            (out / name).unlink(missing_ok=True)
    key = run_key(model_spec, examples, cfg, kind="eval")
    timing = {"load_s": 0.0, "generate_s": 0.0, "judge_s": 0.0}
    with RunStore(out) as store:
        try:
            store.init_run(key, examples, kind="eval", model=model_spec, config=cfg.to_dict(),
                           input=",".join(specs), benchmarks=specs, limit=limit, limit_mode=limit_mode, seed=seed)
        except RefusalkitError:
            raise RefusalkitError(f"{out} holds a different run (other model, prompts or generation settings); "
                                  "choose another --out or pass --fresh to start over") from None
        if rejudge:
            store.clear_verdicts(det.name)
        meta = store.get_meta()
        pass_no = int(meta.get("eval_passes", 0)) + 1
        store.set_meta(eval_passes=pass_no, detector=det.name)
        total = len(examples)
        judged = 0
        pending = store.pending()
        n_gen = 0
        if pending:
            t = time.perf_counter()
            lm = model if model is not None else load_eval_model(model_spec, batch_size=batch_size,
                                                                     images_dir=out / "images")
            timing["load_s"] = time.perf_counter() - t
            store.set_meta(model_name=lm.name)
            timed = _TimedModel(lm)
            done0 = total - len(pending)

            def on_batch(n: int, _ntok: int) -> None:
                nonlocal judged, done0
                t = time.perf_counter()
                judged += judge_pending(store, det, pass_no=pass_no)
                timing["judge_s"] += time.perf_counter() - t
                done0 += n
                if on_progress:
                    on_progress("generate", done0, total)

            n_gen = generate_into_store(store, timed, cfg, batch_size=batch_size, on_batch=on_batch)
            timing["generate_s"] = timed.seconds
        t = time.perf_counter()
        judged += judge_pending(store, det, pass_no=pass_no)
        timing["judge_s"] += time.perf_counter() - t
        rows = judged_rows(store, det.name)
        model_name = store.get_meta().get("model_name")
        run_info = {"dir": str(out), "model": model_spec, "model_name": model_name, "benchmarks": specs,
                    "limit": limit, "limit_mode": limit_mode, "seed": seed, "n_inputs": total,
                    "generation": cfg.to_dict(), "batch_size": batch_size, "run_key": key,
                    "created": meta.get("created"), "eval_passes": pass_no,
                    "refusalkit_version": _version()}
    t = time.perf_counter()
    metrics = compute_metrics(rows, run=run_info, detector={"name": det.name}, errors=errors, level=level,
                              n_boot=n_boot, seed=seed)
    write_outputs(out, metrics, rows)
    timing["metrics_report_s"] = time.perf_counter() - t
    timing["total_s"] = time.perf_counter() - t_start
    timing["outside_generation_share"] = (1 - timing["generate_s"] / timing["total_s"]) if n_gen else None
    metrics["timing"] = timing
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    return EvalResult(out, metrics, n_gen, judged, timing)


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
        raise RefusalkitError(f"{d} is not a finished eval run (no metrics.json/responses.jsonl); "
                              "run `refusalkit eval ... --out DIR` first")
    try:
        metrics = json.loads(mp.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        from refusalkit.errors import InputError
        raise InputError(f"malformed JSON: {e.msg}", file=str(mp), line=e.lineno) from None
    return metrics, list(iter_jsonl(rp))
