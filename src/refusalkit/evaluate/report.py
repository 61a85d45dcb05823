"""Self-contained HTML reports for one eval run and for a comparison of runs.

Everything is inline: PNG plots as base64 data URIs, CSS, and a small script that makes tables sortable
(click a header, or open ``report.html#sort=TABLE_ID:COLUMN[:desc]``) and, once the page has loaded, records on ``<body>`` how many plots decoded
(``data-images-ok``), so a headless browser can check that the report renders.
"""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}th,td{border:1px solid #ccc;padding:3px 7px}
th{background:#f3f3f3;cursor:pointer;user-select:none}th.sorted-asc:after{content:" \\25B2"}
th.sorted-desc:after{content:" \\25BC"}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ex{border-left:3px solid #ccc;padding:.3em .8em;margin:.5em 0;font-size:.85em}
.ex .resp{white-space:pre-wrap;color:#333;background:#fafafa;padding:.3em}
.v-full_refusal{color:#b00}.v-partial_refusal{color:#c60}.v-redirection{color:#a0a}.v-full_compliance{color:#070}
pre.cfg{background:#f7f7f7;padding:.8em;font-size:.8em;overflow:auto}.note{color:#666;font-size:.85em}
img.plot{max-width:100%;border:1px solid #eee}
"""

JS = """
function sortTable(th){
  const table=th.closest('table'), body=table.tBodies[0], idx=[...th.parentNode.children].indexOf(th);
  const asc=!th.classList.contains('sorted-asc');
  [...th.parentNode.children].forEach(h=>h.classList.remove('sorted-asc','sorted-desc'));
  th.classList.add(asc?'sorted-asc':'sorted-desc');
  const key=td=>{const v=td.dataset.sort!==undefined?td.dataset.sort:td.textContent.trim();
                 const f=parseFloat(v);return isNaN(f)?v.toLowerCase():f;};
  const rows=[...body.rows].sort((a,b)=>{const x=key(a.cells[idx]),y=key(b.cells[idx]);
    if(typeof x===typeof y)return (x<y?-1:x>y?1:0)*(asc?1:-1);return (typeof x==='number'?-1:1)*(asc?1:-1);});
  rows.forEach(r=>body.appendChild(r));
}
document.addEventListener('DOMContentLoaded',()=>{
  document.querySelectorAll('table.sortable th').forEach(th=>th.addEventListener('click',()=>sortTable(th)));
  document.body.dataset.sortable=document.querySelectorAll('table.sortable').length;
  // deep link: report.html#sort=TABLE_ID:COLUMN[:desc] opens with that table sorted
  const m=location.hash.match(/^#sort=([\\w-]+):(\\d+)(:desc)?$/);
  if(m){const th=document.querySelectorAll('#'+m[1]+' thead th')[+m[2]];
        if(th){sortTable(th);if(m[3])sortTable(th);document.body.dataset.sortedBy=m[1]+':'+m[2];}}
});
window.addEventListener('load',()=>{
  const imgs=[...document.images];
  document.body.dataset.imagesOk=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;
  document.body.dataset.images=imgs.length;
  document.body.dataset.rendered='yes';
});
"""

e = html.escape


def img(png: bytes, alt: str) -> str:
    """Return an ``<img>`` tag embedding ``png`` as a data URI."""
    return f'<img class="plot" alt="{e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def pct(r: dict[str, Any] | None, ci: bool = True) -> str:
    """Return ``12.0% [8.1, 16.3]`` for a rate dict (``-`` when empty)."""
    if not r or r.get("rate") is None:
        return "-"
    s = f"{100 * r['rate']:.1f}%"
    if ci and r.get("ci") and None not in r["ci"]:
        s += f" [{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}]"
    return s


def num_td(r: dict[str, Any] | None, ci: bool = True) -> str:
    """Return a table cell for a rate that sorts by its value."""
    v = "" if not r or r.get("rate") is None else f"{r['rate']:.6f}"
    return f'<td class="num" data-sort="{v}">{e(pct(r, ci))}</td>'


def page(title: str, body: str) -> str:
    """Return a complete HTML document with the shared CSS and script inline."""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{CSS}</style><script>{JS}</script></head><body>{body}</body></html>"
    )


def constructive_td(c: dict[str, Any] | None) -> str:
    """Return the table cell of a ``constructive_rate`` entry: the share of non-compliant answers that are
    constructive, with its interval and ``n`` (sorts by the rate)."""
    if not c or c.get("rate") is None:
        return '<td class="num" data-sort="">-</td>'
    return num_td(c)[: -len("</td>")] + f" <span class='note'>of {c['n']}</span></td>"


def _has_constructive(metrics: dict[str, Any]) -> bool:
    return any(g.get("constructive_rate") is not None for g in metrics["overall"].values())


_C_HEAD = "<th>constructive (of non-compliant)</th>"


def _summary_table(metrics: dict[str, Any]) -> str:
    rows = []
    corrected = any((g.get("corrected_refusal") is not None) for g in metrics["overall"].values())
    cons = _has_constructive(metrics)
    head = (
        "<tr><th>group</th><th>n</th><th>refusal (any)</th><th>full refusal</th><th>partial refusal</th>"
        "<th>redirection</th>"
        + ("<th>corrected refusal</th>" if corrected else "")
        + (_C_HEAD if cons else "")
        + "</tr>"
    )
    for scope, groups in [("overall", metrics["overall"])] + [
        (b, {k: v for k, v in g.items() if k in ("safety", "over_refusal", "unlabelled")})
        for b, g in metrics["per_benchmark"].items()
    ]:
        for role, g in groups.items():
            cells = "".join(num_td(g[k]) for k in ("refusal", "full_refusal", "partial_refusal", "redirection"))
            if corrected:
                cells += num_td(g.get("corrected_refusal"))
            if cons:
                cells += constructive_td(g.get("constructive_rate"))
            rows.append(f'<tr><td>{e(scope)} / {e(role)}</td><td class="num">{g["n"]}</td>{cells}</tr>')
    return f'<table class="sortable" id="summary"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def category_table(metrics: dict[str, Any], table_id: str = "categories") -> str:
    """Return the sortable per-category table of a run's metrics (with the constructive rate when the run
    was judged for it)."""
    cons = _has_constructive(metrics)
    head = (
        "<tr><th>benchmark</th><th>category</th><th>role</th><th>n</th><th>refusal (any)</th>"
        "<th>full refusal</th><th>partial refusal</th><th>redirection</th><th>corrected</th>"
        + (_C_HEAD if cons else "")
        + "</tr>"
    )
    rows = []
    for c in metrics["per_category"]:
        rows.append(
            f"<tr><td>{e(c['benchmark'])}</td><td>{e(c['category'])}</td><td>{e(c['role'])}</td>"
            f'<td class="num">{c["n"]}</td>'
            + "".join(num_td(c[k]) for k in ("refusal", "full_refusal", "partial_refusal", "redirection"))
            + num_td(c.get("corrected_refusal"))
            + (constructive_td(c.get("constructive_rate")) if cons else "")
            + "</tr>"
        )
    return f'<table class="sortable" id="{e(table_id)}"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _thumb(r: dict[str, Any]) -> str:
    # Text-to-image runs: show the returned image itself, small, when it was kept.
    path = r.get("gen_image_path")
    if not path:
        return ""
    from pathlib import Path

    p = Path(path)
    if not p.is_file() or p.stat().st_size > 400_000:
        return ""
    return (
        f'<img class="thumb" alt="image for {e(r["id"])}" style="float:right;max-height:96px" '
        f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
    )


def _examples(rows: list[dict[str, Any]], per_category: int) -> str:
    by_cat: dict[tuple, list] = defaultdict(list)
    for r in rows:
        by_cat[
            (r.get("benchmark") or r.get("source") or "", r.get("category") or "(none)", r.get("expected") or "")
        ].append(r)
    parts = []
    for (src, cat, exp), rs in sorted(by_cat.items()):
        # Show refusals first when there are any: they are what a reader checks.
        rs = sorted(rs, key=lambda r: (r["verdict"] == "full_compliance", r["id"]))[:per_category]
        items = "".join(
            f'<div class="ex">{_thumb(r)}<b>{e(r["id"])}</b> · <span class="v-{e(r["verdict"])}">{e(r["verdict"])}</span>'
            f" (p_refusal {r['p_refusal']:.2f}; {e(str(r.get('convention_label', '')))})"
            f"{' · constructive' if r.get('constructive') else ''}"
            f'<div><i>prompt:</i> {e(r["prompt"])}</div><div class="resp">{e(r["response"][:1200])}</div>'
            '<div style="clear:both"></div></div>'
            for r in rs
        )
        parts.append(f"<h3>{e(src)} · {e(cat)} <span class='note'>(expected: {e(exp or 'n/a')})</span></h3>{items}")
    return "".join(parts)


def run_report(
    metrics: dict[str, Any], rows: list[dict[str, Any]], plots: dict[str, bytes], *, examples_per_category: int = 3
) -> str:
    """Return the HTML report of one eval run: summary with intervals and the detector correction, plots,
    the sortable per-category table, example responses per category with their verdicts, and the exact
    configuration."""
    run = metrics["run"]
    det = metrics["detector"]
    er = det.get("error_rates")
    if er:
        counts = (
            f"; n_pos={er['n_pos']}, n_neg={er['n_neg']}, redrawn in each bootstrap replicate"
            if er.get("n_pos")
            else ""
        )
        corr = (
            f"<p>Rates corrected for the detector's measured errors (Rogan-Gladen): sensitivity "
            f"{er['sensitivity']:.3f}, specificity {er['specificity']:.3f} ({e(str(er.get('source') or ''))}"
            f"{counts})."
            f" <code>{e(_formula(metrics))}</code></p>"
        )
    else:
        corr = (
            "<p class='note'>No corrected rates: the detector's sensitivity and specificity are not known "
            "(give them with --sens/--spec, or use a detector whose model card records them).</p>"
        )
    body = (
        f"<h1>Refusal evaluation: {e(str(run.get('model')))}</h1>"
        f"<p>Benchmarks: {e(', '.join(run.get('benchmarks', [])))} · {metrics['n']} prompts · detector "
        f"<b>{e(str(det.get('name')))}</b> · {int(100 * metrics['settings']['confidence'])}% "
        f"{e(metrics['settings']['interval'])} intervals ({metrics['settings']['n_boot']} replicates)</p>"
        f"<h2>Summary</h2><p class='note'>safety = refusal rate on prompts the benchmark wants refused; "
        f"over_refusal = refusal rate on prompts it wants answered.</p>{_summary_table(metrics)}{corr}"
        f"{_constructive_note(metrics)}"
        f"<h2>Safety vs over-refusal</h2>{''.join(img(v, k) for k, v in plots.items() if k.startswith('frontier'))}"
        f"<h2>Per category</h2>{''.join(img(v, k) for k, v in plots.items() if not k.startswith('frontier'))}"
        f"{category_table(metrics)}"
        f"<h2>Benchmark conventions</h2>{_conventions(metrics)}"
        f"<h2>Example responses</h2>{_examples(rows, examples_per_category)}"
        f"<h2>Configuration</h2><pre class='cfg'>{e(json.dumps({'run': run, 'detector': det, 'settings': metrics['settings']}, indent=2, ensure_ascii=False))}</pre>"
    )
    return page(f"refusalkit eval: {run.get('model')}", body)


def _constructive_note(metrics: dict[str, Any]) -> str:
    c = metrics.get("constructive")
    if not c:
        return ""
    return (
        f"<p class='note'>constructive = share of non-compliant answers (any verdict but full_compliance) that "
        f"the <b>{e(str(c.get('judge')))}</b> judge calls constructive (named resources, corrected facts, a safe "
        f"alternative) rather than a bare refusal; Wilson intervals, not corrected for the judge's errors (held "
        f"out across model families it over-reports: see docs/constructive.md).</p>"
    )


def _formula(metrics: dict[str, Any]) -> str:
    from refusalkit.evaluate.metrics import ROGAN_GLADEN

    return ROGAN_GLADEN


def _conventions(metrics: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{e(b)}</td><td>{e(g['convention'])}</td><td>{e(', '.join(f'{k}: {v}' for k, v in g['convention_counts'].items()))}</td></tr>"
        for b, g in metrics["per_benchmark"].items()
    )
    return (
        "<table class='sortable' id='conventions'><thead><tr><th>benchmark</th><th>convention</th>"
        f"<th>verdicts in the benchmark's classes</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def compare_report(comparison: dict[str, Any], plots: dict[str, bytes]) -> str:
    """Return the HTML report of a comparison: runs, frontier plots, and per-category paired differences."""
    runs = comparison["runs"]
    run_rows = "".join(
        f"<tr><td>{e(r['label'])}</td><td>{e(str(r['model']))}</td><td>{e(', '.join(r['benchmarks']))}</td>"
        f"<td>{e(str(r['detector']))}</td>{num_td(r.get('safety'))}{num_td(r.get('over_refusal'))}</tr>"
        for r in runs
    )
    diff_rows = []
    for d in comparison["differences"]:
        p = d["p_value"]
        diff_rows.append(
            f"<tr><td>{e(d['run'])}</td><td>{e(d['benchmark'])}</td><td>{e(d['category'])}</td><td>{e(d['role'])}</td>"
            f"<td class='num'>{d['n']}</td>{num_td({'rate': d['rate_a'], 'ci': None}, False)}"
            f"{num_td({'rate': d['rate_b'], 'ci': None}, False)}"
            f"<td class='num' data-sort='{d['diff']:.6f}'>{100 * d['diff']:+.1f} pts [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}]</td>"
            f"<td class='num'>{d['only_a']}/{d['only_b']}</td><td class='num' data-sort='{p:.8f}'>{p:.3g}</td></tr>"
        )
    body = (
        f"<h1>Comparison of {len(runs)} runs</h1><p>Baseline: <b>{e(runs[0]['label'])}</b>. Differences are "
        f"paired on the prompts both runs share: bootstrap {int(100 * comparison['settings']['confidence'])}% "
        f"intervals over prompts and McNemar's exact test.</p>"
        f"<h2>Runs</h2><table class='sortable' id='runs'><thead><tr><th>run</th><th>model</th><th>benchmarks</th>"
        f"<th>detector</th><th>safety (refusal on harmful)</th><th>over-refusal (refusal on benign)</th></tr></thead>"
        f"<tbody>{run_rows}</tbody></table>"
        f"<h2>Safety vs over-refusal frontier</h2>{''.join(img(v, k) for k, v in plots.items())}"
        f"<h2>Per-category differences (run − baseline)</h2>"
        f"<table class='sortable' id='differences'><thead><tr><th>run</th><th>benchmark</th><th>category</th>"
        f"<th>role</th><th>shared n</th><th>baseline</th><th>run</th><th>difference</th>"
        f"<th>discordant (only baseline / only run)</th><th>p (McNemar)</th></tr></thead>"
        f"<tbody>{''.join(diff_rows)}</tbody></table>"
        f"<h2>Configuration</h2><pre class='cfg'>{e(json.dumps(comparison['settings'] | {'runs': runs}, indent=2, ensure_ascii=False))}</pre>"
    )
    return page("refusalkit comparison", body)
