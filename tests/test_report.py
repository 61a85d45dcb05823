"""HTML reports open and render in headless Chromium: plots decode, tables are there and sort, no external
resources; for one run and for a comparison (``refusalkit compare``)."""

import json
import re
import shutil
import subprocess

import pytest

from conftest import run_cli
from refusalkit.models.base import GenerationConfig


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def render(html_path, tmp_path, fragment=""):
    """Return the DOM of ``html_path`` after headless Chromium has loaded it and run its scripts."""
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's chromium)")
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    profile.mkdir()
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=10000",
           "--dump-dom", html_path.resolve().as_uri() + fragment]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.fixture(scope="module")
def two_runs(tiny_model_dir, data_dir, tmp_path_factory):
    from refusalkit.evaluate.runner import run_eval
    from refusalkit.models.hf import HFModel
    base = tmp_path_factory.mktemp("runs")
    model = HFModel(tiny_model_dir, name="tiny")
    out = []
    for name, temp in (("greedy", 0.0), ("sampled", 1.0)):
        res = run_eval(["xstest"], model_spec=str(tiny_model_dir), out_dir=base / name, detector="keyword",
                       limit=36, data_dir=str(data_dir), n_boot=200, model=model,
                       config=GenerationConfig(max_new_tokens=8, temperature=temp, seed=1))
        out.append(res)
    return out


def _attr(dom, name):
    m = re.search(rf'<body[^>]*\b{name}="([^"]*)"', dom)
    return m.group(1) if m else None


def test_run_report_renders_in_chromium(two_runs, tmp_path):
    res = two_runs[0]
    html = (res.run_dir / "report.html").read_text()
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html), "the report must not load external resources"
    dom = render(res.run_dir / "report.html", tmp_path)
    assert _attr(dom, "data-rendered") == "yes"
    n_img = int(_attr(dom, "data-images"))
    assert n_img >= 2 and _attr(dom, "data-images-ok") == str(n_img)  # every embedded plot decoded
    body = dom.split('id="categories"', 1)[1].split("</table>", 1)[0]
    assert body.count("<tr>") == len(res.metrics["per_category"]) + 1
    assert "Example responses" in dom and "Configuration" in dom


def test_report_table_sorts_in_chromium(two_runs, tmp_path):
    res = two_runs[0]
    dom = render(res.run_dir / "report.html", tmp_path, "#sort=categories:1:desc")  # category, descending
    assert _attr(dom, "data-sorted-by") == "categories:1"
    body = dom.split('id="categories"', 1)[1].split("</tbody>", 1)[0]
    names = re.findall(r"<tr><td>[^<]*</td><td>([^<]*)</td>", body)
    assert len(names) == len(res.metrics["per_category"])
    assert names == sorted(names, key=str.lower, reverse=True) and names != sorted(names, key=str.lower)


def test_compare_cli_and_report(two_runs, tmp_path):
    a, b = (str(r.run_dir) for r in two_runs)
    out = tmp_path / "cmp"
    r = run_cli("compare", a, b, "--out", str(out), "--n-boot", "200", "--all")
    assert r.returncode == 0, r.stderr
    comp = json.loads((out / "compare.json").read_text())
    assert comp["schema"] == "refusalkit.compare/1" and [x["label"] for x in comp["runs"]] == ["greedy", "sampled"]
    overall = [d for d in comp["differences"] if d["category"] == "(all)"]
    assert {d["role"] for d in overall} == {"safety", "over_refusal"}
    for d in comp["differences"]:
        assert d["n"] > 0 and d["ci"][0] <= d["diff"] <= d["ci"][1] and 0 <= d["p_value"] <= 1
        assert d["diff"] == pytest.approx(d["rate_b"] - d["rate_a"])
    assert (out / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    dom = render(out / "compare.html", tmp_path)
    assert _attr(dom, "data-rendered") == "yes"
    assert int(_attr(dom, "data-images-ok")) >= 1 and _attr(dom, "data-images-ok") == _attr(dom, "data-images")
    assert dom.count("<tr>") > len(comp["differences"])


def test_compare_rejects_unfinished_runs(tmp_path):
    (tmp_path / "x").mkdir()
    r = run_cli("compare", str(tmp_path / "x"), str(tmp_path / "x"))
    assert r.returncode == 2 and "not a finished eval run" in r.stderr.replace("\n", " ")
