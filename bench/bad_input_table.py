"""Regenerate docs/reliability.md: how many bad-input cases were tried and passed, per area.

    python bench/bad_input_table.py            # the CLI table (tests/test_bad_input.py) and the server tests
    python bench/bad_input_table.py --no-server

It runs the tests with pytest (each case is a real `refusalkit` subprocess or HTTP request), reads the JUnit
XML report, and writes the tally. A case's area is the part of its test id before the slash
(``test_bad_input[options/generate-limit-0]`` -> options); every test of the server file is area ``server``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI_TESTS = "tests/test_bad_input.py"
SERVER_TESTS = "tests/test_serve_http.py"
AREAS = {
    "inputs": "Input files (malformed prompt/response files)",
    "options": "Options, checked before any model is loaded",
    "paths": "Output paths, checked before any work; file modes",
    "outputs": "JSON outputs (no NaN)",
    "prompts": "Prompts past the context; incomplete runs given to compare",
    "runs": "Run store (`runs show`)",
    "artifacts": "Detector, predictor and adapter folders",
    "secrets": "Credentials in model URLs",
    "server": "`refusalkit serve` over HTTP (limits, bad requests, streaming)",
}
NAMED = {"test_no_nan_in_json_outputs": "outputs",
         "test_library_generation_refuses_a_prompt_past_the_context": "prompts"}


def area_of(case: ET.Element) -> str:
    """Return the area of one JUnit test case (see the module docstring)."""
    name, file = case.get("name", ""), case.get("classname", "")
    if "test_serve_http" in file:
        return "server"
    if "[" in name and "/" in name:
        return name.split("[", 1)[1].split("/", 1)[0]
    return NAMED.get(name.split("[", 1)[0], "other")


def outcome_of(case: ET.Element) -> tuple[str, str]:
    """Return ``(outcome, message)``: passed, xfail (a known gap, with its owner), skipped or failed."""
    for child in case:
        if child.tag == "skipped":
            msg = child.get("message", "")
            return ("xfail", msg) if child.get("type") == "pytest.xfail" or "xfail" in msg else ("skipped", msg)
        if child.tag in ("failure", "error"):
            return "failed", (child.get("message") or "")[:200]
    return "passed", ""


def run(files: list[str]) -> ET.Element:
    """Run pytest on ``files`` and return the root of its JUnit XML report."""
    with tempfile.TemporaryDirectory() as d:
        xml = Path(d) / "report.xml"
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                        *files], cwd=ROOT, env=env, check=False)
        return ET.parse(xml).getroot()


def table(root: ET.Element) -> str:
    """Return the Markdown of docs/reliability.md for one pytest report."""
    tally: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    notes: list[str] = []
    for case in root.iter("testcase"):
        area = area_of(case)
        outcome, msg = outcome_of(case)
        tally[area][outcome] += 1
        if outcome != "passed":
            notes.append(f"- `{case.get('name')}`: {outcome}{' - ' + msg if msg else ''}")
    order = [a for a in AREAS if a in tally] + sorted(a for a in tally if a not in AREAS)
    lines = ["| area | what | cases tried | passed | known gaps (xfail) | failed |", "|---|---|---:|---:|---:|---:|"]
    tot: dict[str, int] = defaultdict(int)
    for a in order:
        t = tally[a]
        tried = sum(t.values()) - t["skipped"]
        for k, v in (("tried", tried), ("passed", t["passed"]), ("xfail", t["xfail"]), ("failed", t["failed"])):
            tot[k] += v
        lines.append(f"| {a} | {AREAS.get(a, '')} | {tried} | {t['passed']} | {t['xfail']} | {t['failed']} |")
    lines.append(f"| **all** | | **{tot['tried']}** | **{tot['passed']}** | **{tot['xfail']}** | **{tot['failed']}** |")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    head = [
        "# Reliability: bad input",
        "",
        "Every case feeds refusalkit one bad input the way a user would (a `refusalkit` subprocess, or an HTTP",
        "request to `refusalkit serve`). A CLI case passes when the command exits 2 with one line on stderr",
        "naming the file (with its line) or the option, prints no traceback, and leaves every file as it was:",
        "nothing new, nothing changed, nothing half-written. A server case passes when the server answers",
        "with the documented status and an OpenAI-style error object and stays up. Two kinds check something",
        "else: the umask cases (area paths) that outputs get the mode a plain write would (0644 under umask",
        "022), and the secrets cases that a credential in a `--model` URL appears nowhere: not in the error,",
        "the stored run or `runs list`. The cases are in",
        f"`{CLI_TESTS}` and `{SERVER_TESTS}`.",
        "",
        "What the commands check before any work (`src/refusalkit/cli/validate.py`, `models/context.py`):",
        "",
        "- counts (`--limit`, `--batch-size`, `--max-new-tokens`, `--n-boot`, ...) are at least 1; `--temperature`",
        "  of generation is a finite number >= 0 (0 = greedy), a softmax temperature (`tokens score`,",
        "  `calibrate`, `generate`) is > 0; `--top-p` is in (0, 1]; `--confidence` in [0.5, 1); `--seed` in",
        "  [0, 2**63);",
        "- an output file is not an existing folder, not one of the input files, and its folder exists or can be",
        "  created (a probe file is created and removed in the nearest existing folder); an output folder",
        "  (`--out`, `--run-dir`) is not an existing file;",
        "- every prompt, chat-templated, plus `--max-new-tokens` fits the model's context (from its config and",
        "  tokenizer, read without loading the weights), else the error names `FILE:LINE` and the token count;",
        "  a prompt too long on its character count alone is refused without being tokenized. `HFModel`",
        "  checks again before allocating, for library use;",
        "- outputs are written atomically with the mode a plain write would give (0666 minus the umask), and",
        "  JSON outputs hold no `NaN`/`Infinity` (written as `null`).",
        "",
        "Regenerate this page with `python bench/bad_input_table.py` (about ten minutes on two CPU cores).",
        "",
        f"Measured {dt.date.today().isoformat()} at commit {commit or '?'}.",
        "",
        *lines,
        "",
    ]
    if notes:
        head += ["Cases that did not pass (xfail: a known gap, with the part of refusalkit that owns its fix):",
                 "", *notes, ""]
    return "\n".join(head)


def main() -> None:
    """Run the bad-input tests and write docs/reliability.md."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-server", action="store_true", help="Only the CLI cases.")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    args = ap.parse_args()
    files = [CLI_TESTS] + ([] if args.no_server or not (ROOT / SERVER_TESTS).is_file() else [SERVER_TESTS])
    text = table(run(files))
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
