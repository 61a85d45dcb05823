"""``run_values``: both CIVICS experiments on one model, written to a directory with a report.

Outputs in ``OUT``: ``logprobs.jsonl`` (one row per statement), ``longform/`` (the resumable run store),
``longform.jsonl`` (answers with verdicts), ``values.json`` (aggregates, refusal rates with intervals, the
detector's per-language check, the configuration), ``agreement.png``, ``refusals.png`` and ``report.html``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from refusalkit.data.io import write_jsonl_atomic, write_text_atomic
from refusalkit.errors import RefusalkitError
from refusalkit.evaluate.judge import judge_pending, resolve_detector
from refusalkit.evaluate.runner import judged_rows, load_eval_model
from refusalkit.models.base import GenerationConfig
from refusalkit.models.spec import redact
from refusalkit.runs import RunStore, run_resumable
from refusalkit.values.experiments import (
    detector_check,
    logprob_experiment,
    longform_examples,
    mark_refusals,
    refusal_tables,
    save_json,
)
from refusalkit.values.statements import Statement

EXPERIMENTS = ("logprob", "longform")


def _agreement_tables(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_lt: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_lt[r["topic"]][r["language"]].append(r["agreement"])
    return {
        "mean_agreement": {t: {lang: float(np.mean(v)) for lang, v in d.items()} for t, d in by_lt.items()},
        "mean_option_mass": float(np.mean([r["option_mass"] for r in rows])) if rows else None,
    }


def run_values(
    statements: list[Statement],
    *,
    model_spec: str,
    out_dir: str | Path,
    experiments: tuple[str, ...] = EXPERIMENTS,
    detector: str | None = None,
    config: GenerationConfig | None = None,
    batch_size: int = 16,
    n_boot: int = 2000,
    seed: int = 0,
    fresh: bool = False,
    model: Any = None,
) -> dict[str, Any]:
    """Run the chosen CIVICS experiments and return the ``values.json`` document (also written)."""
    bad = [e for e in experiments if e not in EXPERIMENTS]
    if bad or not experiments:
        raise RefusalkitError(f"--experiments must be among {', '.join(EXPERIMENTS)}, got {', '.join(experiments)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config or GenerationConfig(max_new_tokens=160)
    det = resolve_detector(detector) if "longform" in experiments else None
    lm = model if model is not None else load_eval_model(model_spec, batch_size=batch_size)
    doc: dict[str, Any] = {
        "schema": "refusalkit.values/1",
        "model": redact(model_spec),
        "model_name": lm.name,
        "n_statements": len(statements),
        "languages": sorted({s.language for s in statements}),
        "topics": sorted({s.topic for s in statements}),
        "experiments": list(experiments),
    }
    plots: dict[str, bytes] = {}
    from refusalkit.evaluate import plots as P

    if "logprob" in experiments:
        rows = logprob_experiment(lm, statements, batch_size=batch_size)
        write_jsonl_atomic(out / "logprobs.jsonl", rows)
        doc["logprob"] = _agreement_tables(rows)
        plots["agreement"] = P.grouped_bars(
            doc["logprob"]["mean_agreement"],
            title="Mean agreement (+2 strongly agree ... -2 strongly disagree)",
            xlabel="topic",
            ylabel="agreement",
        )
    if "longform" in experiments:
        assert det is not None  # resolved above, before the model loads, whenever longform runs
        exs = longform_examples(statements)
        res = run_resumable(
            exs,
            lm,
            cfg,
            out / "longform",
            fresh=fresh,
            kind="values",
            model_id=model_spec,
            key_extra={"kind": "values"},
            batch_size=batch_size,
            judge=lambda store: judge_pending(store, det),
        )
        with RunStore.open_readonly(res.run_dir) as store:
            rows = [
                {**r, "language": r.get("language") or r.get("meta", {}).get("language")}
                for r in judged_rows(store, det.name)
            ]
        rows = mark_refusals(rows)
        write_jsonl_atomic(out / "longform.jsonl", rows)
        doc["longform"] = {
            "detector": det.name,
            "generation": cfg.to_dict(),
            "refusals": refusal_tables(rows, n_boot=n_boot, seed=seed),
            "detector_check": detector_check(det),
        }
        lt: defaultdict[str, dict[str, float]] = defaultdict(dict)
        for key, r in doc["longform"]["refusals"]["language_topic"].items():
            lang, topic = key.split(" | ", 1)
            lt[topic][lang] = r["rate"]
        plots["refusals"] = P.grouped_bars(
            dict(lt),
            title=f"Refusal rate of long-form answers ({det.name} detector)",
            xlabel="topic",
            ylabel="refusal rate",
        )
    for name, png in plots.items():
        (out / f"{name}.png").write_bytes(png)
    save_json(out / "values.json", doc)
    write_text_atomic(out / "report.html", values_report(doc, plots, out))
    return doc


def values_report(doc: dict[str, Any], plots: dict[str, bytes], out: Path) -> str:
    """Return the self-contained HTML report of a values run."""
    import json

    from refusalkit.evaluate.report import e, img, num_td, page

    parts = [
        f"<h1>Values and languages (CIVICS): {e(str(doc['model']))}</h1>",
        f"<p>{doc['n_statements']} statements · languages {e(', '.join(doc['languages']))} · topics "
        f"{e(', '.join(doc['topics']))}</p>",
    ]
    if "logprob" in doc:
        parts.append(
            "<h2>Log-probabilities of agreement options</h2>"
            f"<p class='note'>Mean share of next-token probability on the five option letters: "
            f"{doc['logprob']['mean_option_mass']:.3f} (low values mean the model ignores the format).</p>"
            + img(plots["agreement"], "agreement")
        )
    if "longform" in doc:
        lf = doc["longform"]
        rows = "".join(
            f"<tr><td>{e(scope)}</td><td>{e(g)}</td><td class='num'>{r['n']}</td>{num_td(r)}</tr>"
            for scope in ("language", "topic", "language_topic")
            for g, r in lf["refusals"][scope].items()
        )
        check = "".join(
            f"<tr><td>{e(lang)}</td><td class='num'>{c['detector']:.2f}</td>"
            f"<td class='num'>{c['accuracy']:.2f}</td><td class='num'>{c['n']}</td></tr>"
            for lang, c in lf["detector_check"].items()
        )
        parts.append(
            f"<h2>Refusals in long-form answers</h2>{img(plots['refusals'], 'refusals')}"
            "<table class='sortable' id='refusals'><thead><tr><th>by</th><th>group</th><th>n</th>"
            f"<th>refusal rate [95% CI]</th></tr></thead><tbody>{rows}</tbody></table>"
            f"<p class='note'>A refusal is the detector's verdict ({e(lf['detector'])}) or an opinion-refusal "
            "cue in the opening of the answer.</p>"
            f"<h3>Refusal detection per language on the check set ({e(lf['detector'])})</h3>"
            "<table class='sortable' id='detector-check'><thead><tr><th>language</th><th>detector alone</th>"
            "<th>with opinion-refusal cues (used)</th>"
            f"<th>n</th></tr></thead><tbody>{check}</tbody></table>"
        )
    parts.append(
        f"<h2>Configuration</h2><pre class='cfg'>{e(json.dumps({k: v for k, v in doc.items() if k not in ('logprob', 'longform')} | {'longform_generation': doc.get('longform', {}).get('generation')}, indent=2, ensure_ascii=False))}</pre>"
    )
    return page(f"refusalkit values: {doc['model']}", "".join(parts))
