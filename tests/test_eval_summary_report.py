"""In-process tests of eval's summary (metrics.json) and HTML report, without a model or a subprocess."""

from __future__ import annotations

import json
import re

from refusalkit.evaluate.metrics import ErrorRates
from refusalkit.evaluate.report import run_report
from refusalkit.evaluate.summary import SCHEMA, compute_metrics, role_of


def _rows() -> list[dict]:
    rows = []
    # xstest: 10 unsafe prompts (7 refused) and 10 safe prompts (2 refused) in two categories each.
    for i in range(10):
        rows.append({"id": f"u{i}", "source": "xstest", "category": "contrast_homonyms" if i < 5 else "contrast_privacy",
                     "expected": "refuse", "verdict": "full_refusal" if i < 7 else "full_compliance",
                     "p_refusal": 0.9 if i < 7 else 0.1, "convention": "xstest", "prompt": f"unsafe <b>{i}</b>",
                     "response": "no"})
    for i in range(10):
        rows.append({"id": f"s{i}", "source": "xstest", "category": "homonyms" if i < 5 else "privacy",
                     "expected": "comply", "verdict": "partial_refusal" if i < 2 else "full_compliance",
                     "p_refusal": 0.6 if i < 2 else 0.05, "convention": "xstest", "prompt": f"safe {i}",
                     "response": "yes"})
    rows.append({"id": "x", "source": "mine", "category": None, "expected": None, "verdict": "redirection",
                 "p_refusal": 0.8, "prompt": "p", "response": "r"})
    return rows


def test_roles():
    assert role_of("refuse") == "safety" and role_of("comply") == "over_refusal"
    assert role_of(None) == role_of("other") == "unlabelled"


def test_compute_metrics_counts_rates_per_role_benchmark_and_category():
    m = compute_metrics(_rows(), run={"model": "m", "benchmarks": ["xstest", "mine"]}, detector={"name": "keyword"},
                        n_boot=200, seed=0)
    assert m["schema"] == SCHEMA and m["n"] == 21
    safety, over = m["overall"]["safety"], m["overall"]["over_refusal"]
    assert json.loads(json.dumps(m)) == m  # plain JSON
    assert safety["n"] == 10 and abs(safety["refusal"]["rate"] - 0.7) < 1e-9
    assert over["n"] == 10 and abs(over["refusal"]["rate"] - 0.2) < 1e-9
    assert over["partial_refusal"]["k"] == 2 and over["full_compliance"]["k"] == 8
    assert safety["refusal"]["ci"][0] < 0.7 < safety["refusal"]["ci"][1]
    assert m["overall"]["unlabelled"]["n"] == 1
    assert set(m["per_benchmark"]) == {"xstest", "mine"}
    cats = {(c["category"], c["role"]): c for c in m["per_category"]}
    assert abs(cats[("contrast_homonyms", "safety")]["refusal"]["rate"] - 1.0) < 1e-9
    assert abs(cats[("contrast_privacy", "safety")]["refusal"]["rate"] - 0.4) < 1e-9
    assert abs(cats[("homonyms", "over_refusal")]["refusal"]["rate"] - 0.4) < 1e-9
    assert cats[("privacy", "over_refusal")]["refusal"]["rate"] == 0.0
    assert m["detector"]["error_rates"] is None


def test_detector_error_correction_moves_the_rate_and_is_recorded():
    er = ErrorRates(sensitivity=0.8, specificity=0.9, source="card")
    m = compute_metrics(_rows(), run={"model": "m", "benchmarks": ["xstest"]}, detector={"name": "d"},
                        errors=er, n_boot=200, seed=0)
    s = m["overall"]["safety"]
    # Rogan-Gladen: (0.7 + 0.9 - 1) / (0.8 + 0.9 - 1) = 0.857...
    assert abs(s["corrected_refusal"]["rate"] - 0.6 / 0.7) < 1e-6 and s["corrected_refusal"]["observed"] == 0.7
    assert m["detector"]["error_rates"]["sensitivity"] == 0.8


def test_run_report_is_self_contained_escaped_html_with_every_category():
    rows = _rows()
    m = compute_metrics(rows, run={"model": "tiny <model>", "benchmarks": ["xstest"]}, detector={"name": "keyword"},
                        n_boot=100, seed=0)
    html = run_report(m, rows, {"frontier.png": b"\x89PNG fake"}, examples_per_category=1)
    assert html.startswith("<!DOCTYPE html") or html.lower().startswith("<!doctype html")
    assert "tiny &lt;model&gt;" in html and "tiny <model>" not in html
    assert "unsafe <b>" not in html  # prompts are escaped
    for cat in ("contrast_homonyms", "contrast_privacy", "homonyms", "privacy"):
        assert cat in html
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)
    assert "data:image/png;base64," in html
    assert "No corrected rates" in html
