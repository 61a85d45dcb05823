"""Comparing eval runs: per-category paired differences against the first run (the baseline) on the
prompts both runs share, and the safety-vs-over-refusal frontier of all runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from refusalkit.data.io import write_json_atomic, write_text_atomic
from refusalkit.errors import InputError, RefusalkitError
from refusalkit.evaluate.benchsets import benchmark_of
from refusalkit.evaluate.metrics import paired_difference
from refusalkit.evaluate.runner import load_run_outputs
from refusalkit.evaluate.summary import role_of

SCHEMA = "refusalkit.compare/1"


class _Rate(BaseModel):
    k: int
    rate: float | None
    ci: list[float | None] | None


class _Group(BaseModel):
    n: int
    refusal: _Rate


class _Detector(BaseModel):
    name: str


class _Run(BaseModel):
    model: str | None = None
    benchmarks: list[str] = []


class _Category(BaseModel):
    category: str
    role: str
    n: int
    refusal: _Rate


class _Metrics(BaseModel):
    """The part of an eval run's metrics.json that compare reads (other fields are ignored)."""

    run: _Run
    detector: _Detector
    overall: dict[str, _Group]
    per_category: list[_Category]


class _Row(BaseModel):
    id: str
    refused: bool


def _check_run(run_dir: Path, metrics: Any, rows: list[dict[str, Any]]) -> None:
    """Raise InputError naming the file and field when a run's metrics.json or responses.jsonl lacks what
    compare needs (a hand-edited or truncated run, or one from another tool)."""
    for path, model, docs in (
        (run_dir / "metrics.json", _Metrics, [(None, metrics)]),
        (run_dir / "responses.jsonl", _Row, [(i + 1, r) for i, r in enumerate(rows)]),
    ):
        for line, doc in docs:
            try:
                model.model_validate(doc)
            except ValidationError as e:
                err = e.errors()[0]
                field = ".".join(str(x) for x in err["loc"]) or None
                raise InputError(
                    f"{err['msg']} (compare needs a metrics.json and responses.jsonl written by `refusalkit eval`)",
                    file=str(path),
                    line=line,
                    field=field,
                ) from None


def _labels(dirs: list[Path], labels: list[str] | None) -> list[str]:
    if labels:
        if len(labels) != len(dirs):
            raise RefusalkitError(f"--label given {len(labels)} times for {len(dirs)} runs")
        return labels
    out: list[str] = []
    for d in dirs:
        name = d.name or str(d)
        out.append(name if name not in out else f"{name}#{len(out) + 1}")
    return out


def compare_runs(
    run_dirs: Sequence[str | Path],
    *,
    labels: list[str] | None = None,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Return the comparison document (schema ``refusalkit.compare/1``) of finished eval runs.

    For every later run and every (benchmark, category, role) group, and for each role overall
    (category ``(all)``), the refusal rates of the baseline and the run are compared on the prompt ids both
    hold: the difference ``run - baseline`` with a paired bootstrap interval and McNemar's exact test.
    """
    if len(run_dirs) < 2:
        raise RefusalkitError("compare needs at least two run directories")
    dirs = [Path(d) for d in run_dirs]
    names = _labels(dirs, labels)
    loaded = [load_run_outputs(d) for d in dirs]
    for d, (m, rows) in zip(dirs, loaded):
        _check_run(d, m, rows)
    runs = []
    for name, d, (m, _) in zip(names, dirs, loaded):
        o = m["overall"]
        runs.append(
            {
                "label": name,
                "dir": str(d),
                "model": m["run"].get("model"),
                "benchmarks": m["run"].get("benchmarks", []),
                "detector": m["detector"]["name"],
                "safety": (o.get("safety") or {}).get("refusal"),
                "over_refusal": (o.get("over_refusal") or {}).get("refusal"),
            }
        )
    base_rows = {r["id"]: r for r in loaded[0][1]}
    diffs = []
    for name, (_, rows) in zip(names[1:], loaded[1:]):
        groups: dict[tuple, list[tuple[bool, bool]]] = defaultdict(list)
        for r in rows:
            b = base_rows.get(r["id"])
            if b is None:
                continue
            role = role_of(r.get("expected"))
            pair = (bool(b["refused"]), bool(r["refused"]))
            groups[(benchmark_of(r), r.get("category") or "(none)", role)].append(pair)
            groups[("(all)", "(all)", role)].append(pair)
        if not groups:
            raise RefusalkitError(f"run {name!r} shares no prompt ids with the baseline {names[0]!r}")
        for (src, cat, role), pairs in sorted(groups.items()):
            base_refused, run_refused = zip(*pairs)
            diffs.append(
                {
                    "run": name,
                    "benchmark": src,
                    "category": cat,
                    "role": role,
                    **paired_difference(base_refused, run_refused, level=level, n_boot=n_boot, seed=seed),
                }
            )
    detectors = sorted({r["detector"] for r in runs})
    return {
        "schema": SCHEMA,
        "runs": runs,
        "differences": diffs,
        "metrics": [m for m, _ in loaded],
        "settings": {
            "baseline": names[0],
            "confidence": level,
            "n_boot": n_boot,
            "seed": seed,
            "paired_on": "prompt id",
            "test": "McNemar exact; bootstrap over shared prompts",
            "detectors": detectors,
            "warning": None
            if len(detectors) == 1
            else "the runs were judged by different detectors; differences mix model and judge",
        },
    }


def write_comparison(comparison: dict[str, Any], out_dir: str | Path, *, per_category: bool = True) -> Path:
    """Write ``compare.json``, ``frontier.png`` and ``compare.html`` into ``out_dir``; return its path."""
    from refusalkit.evaluate import plots, report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pts = [p for r, m in zip(comparison["runs"], comparison["metrics"]) for p in plots.frontier_points(m, r["label"])]
    pngs = {"frontier": plots.frontier_plot(pts, "Safety vs over-refusal: one point per run")}
    if per_category:
        cat_pts = [
            p
            for r, m in zip(comparison["runs"], comparison["metrics"])
            for p in plots.frontier_points(m, r["label"], per_category=True)
        ]
        if cat_pts:
            pngs["frontier_categories"] = plots.frontier_plot(cat_pts, "Safety vs over-refusal per category")
    for name, png in pngs.items():
        tmp = out / f".{name}.png.tmp"
        tmp.write_bytes(png)
        tmp.replace(out / f"{name}.png")
    doc = {k: v for k, v in comparison.items() if k != "metrics"}
    write_json_atomic(out / "compare.json", doc)
    write_text_atomic(out / "compare.html", report.compare_report(comparison, pngs))
    return out
