"""Every bad input of issue 14 as a table of commands x cases, each run as a user would (a subprocess).

Each case must exit 2 with one line on stderr that names the file or option, print no traceback, and leave
every file under the test folder (runs root included) exactly as it was: nothing new, nothing changed.
`python bench/bad_input_table.py` runs this file and writes the per-area tally to docs/reliability.md;
the area of a case is the part of its id before the slash.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

RES = ROOT / "src" / "refusalkit" / "resources"


@dataclass
class Case:
    """One bad invocation: ``args`` may hold ``{name}`` placeholders filled from the files the test makes;
    ``expect`` must appear in the error line; ``xfail`` names the helper area that owns the fix."""

    id: str
    args: list[str]
    expect: str
    xfail: str | None = None
    cwd: str = "."
    check: str = "exit2"  # exit2: the contract above; secret: SECRET nowhere (output or any file written)
    why: str = ""  # with xfail: what is still wrong


# --- the inputs-file cases (issue 14: 70 of 70 passed; they stay) ------------------------------------------
# kind -> (file name, bytes given the required field, text the error line must hold)
_BAD_FILES = {
    "empty": ("in.jsonl", lambda f: b"", "in.jsonl"),
    "bad-json-line-2": ("in.jsonl", lambda f: f'{{"{f}": "a"}}\n{{"{f}": \n'.encode(), "in.jsonl:2"),
    "missing-field": ("in.jsonl", lambda f: b'{"other": "a"}\n', "in.jsonl:1"),
    "wrong-type": ("in.jsonl", lambda f: f'{{"{f}": 5}}\n'.encode(), "in.jsonl:1"),
    "bad-utf8": ("in.jsonl", lambda f: f'{{"{f}": "'.encode() + b"\xff\xfe" + b'"}\n', "in.jsonl:1"),
    "wrong-csv-header": ("in.csv", lambda f: b"foo,bar\n1,2\n", "in.csv"),
    "missing-file": ("in.jsonl", None, "in.jsonl"),
    "duplicate-id": ("in.jsonl", lambda f: f'{{"id": "a", "{f}": "x"}}\n{{"id": "a", "{f}": "y"}}\n'.encode(),
                     "in.jsonl:2"),
    "null": ("in.jsonl", lambda f: f'{{"{f}": null}}\n'.encode(), "in.jsonl:1"),
    "empty-prompt": ("in.jsonl", lambda f: f'{{"{f}": "   "}}\n'.encode(), "in.jsonl:1"),
}
# command -> (args with {in}, the field the file must have)
_FILE_COMMANDS = {
    "generate": (["generate", "{in}", "-o", "out.jsonl", "-m", "{tiny}"], "prompt"),
    "eval": (["eval", "-m", "{tiny}", "--bench", "{in}", "--out", "run"], "prompt"),
    "tokens-score": (["tokens", "score", "{in}", "-o", "out.jsonl", "-m", "{tiny}"], "prompt"),
    "tokens-generate": (["tokens", "generate", "{in}", "-o", "out.jsonl", "-m", "{tiny}"], "prompt"),
    "predict": (["predict", "{in}", "-o", "out.jsonl"], "prompt"),
    "predict-bootstrap": (["predict", "bootstrap", "--prompts", "{in}", "-m", "{tiny}", "--out", "clf"], "prompt"),
    "detect": (["detect", "{in}", "-o", "out.jsonl"], "response"),
}
# detect and predict pass rows through, so a repeated id is not an error there, and detect judges an empty
# response (as a refusal: no answer) by design
_NOT_ERRORS = {("predict", "duplicate-id"), ("detect", "duplicate-id"), ("detect", "empty-prompt")}
FILE_CASES = []
for _cmd, (_args, _field) in _FILE_COMMANDS.items():
    for _kind, (_name, _content, _expect) in _BAD_FILES.items():
        if (_cmd, _kind) in _NOT_ERRORS:
            continue
        FILE_CASES.append(Case(f"inputs/{_cmd}-{_kind}", [a.replace("{in}", _name) for a in _args], _expect))

OPTION_CASES = [
    Case("options/tokens-train-endpoint-model", ["tokens", "train", "-o", "adapter", "-m",
                                                 "openai:m@http://127.0.0.1:9/v1"], "endpoint"),
    Case("options/generate-limit-0", ["generate", "{prompts}", "-o", "o.jsonl", "-m", "{tiny}", "--limit", "0"],
         "--limit"),
    Case("options/generate-limit-negative", ["generate", "{prompts}", "-o", "o.jsonl", "-m", "{tiny}",
                                             "--limit", "-1"], "--limit"),
    Case("options/tokens-score-limit-0", ["tokens", "score", "{prompts}", "-o", "o.jsonl", "-m", "{tiny}",
                                          "--limit", "0"], "--limit"),
    Case("options/tokens-score-limit-negative", ["tokens", "score", "{prompts}", "-o", "o.jsonl", "-m", "{tiny}",
                                                 "--limit", "-1"], "--limit"),
    Case("options/eval-limit-0", ["eval", "-m", "{tiny}", "--bench", "{prompts}", "--out", "run", "--limit", "0"],
         "--limit"),
    Case("options/generate-max-new-tokens-0", ["generate", "{prompts}", "-o", "o.jsonl", "-m", "{tiny}",
                                               "--max-new-tokens", "0"], "--max-new-tokens"),
    Case("options/generate-max-new-tokens-negative", ["generate", "{prompts}", "-o", "o.jsonl", "-m", "{tiny}",
                                                      "--max-new-tokens", "-5"], "--max-new-tokens"),
    Case("options/eval-max-new-tokens-0", ["eval", "-m", "{tiny}", "--bench", "{prompts}", "--out", "run",
                                           "--max-new-tokens", "0"], "--max-new-tokens"),
    Case("options/eval-max-new-tokens-negative", ["eval", "-m", "{tiny}", "--bench", "{prompts}", "--out", "run",
                                                  "--max-new-tokens", "-5"], "--max-new-tokens"),
    Case("options/generate-batch-size-0", ["generate", "{prompts}", "-o", "o.jsonl", "-m", "{tiny}",
                                           "--batch-size", "0"], "--batch-size"),
    Case("options/generate-batch-size-negative", ["generate", "{prompts}", "-o", "o.jsonl", "-m", "{tiny}",
                                                  "--batch-size", "-1"], "--batch-size"),
    Case("options/eval-batch-size-0", ["eval", "-m", "{tiny}", "--bench", "{prompts}", "--out", "run",
                                       "--batch-size", "0"], "--batch-size"),
    Case("options/generate-temperature-negative", ["generate", "{prompts}", "-o", "o.jsonl", "-m", "{tiny}",
                                                   "--temperature", "-1"], "--temperature"),
    Case("options/generate-temperature-nan", ["generate", "{prompts}", "-o", "o.jsonl", "-m", "{tiny}",
                                              "--temperature", "nan"], "--temperature"),
    Case("options/eval-temperature-negative", ["eval", "-m", "{tiny}", "--bench", "{prompts}", "--out", "run",
                                               "--temperature", "-1"], "--temperature"),
    Case("options/generate-top-p-5", ["generate", "{prompts}", "-o", "o.jsonl", "-m", "{tiny}", "--top-p", "5"],
         "--top-p"),
    Case("options/generate-top-p-0", ["generate", "{prompts}", "-o", "o.jsonl", "-m", "{tiny}", "--top-p", "0"],
         "--top-p"),
    Case("options/eval-n-boot-0", ["eval", "-m", "{tiny}", "--bench", "{prompts}", "--out", "run", "--n-boot", "0"],
         "--n-boot"),
    Case("options/compare-n-boot-0", ["compare", "runa", "runb", "--n-boot", "0"], "--n-boot"),
    Case("options/tokens-score-temperature-0", ["tokens", "score", "{prompts}", "-o", "o.jsonl", "-m", "{tiny}",
                                                "--temperature", "0"], "--temperature"),
    Case("options/tokens-calibrate-temperature-0", ["tokens", "calibrate", "{prompts}", "-o", "p.json",
                                                    "-m", "{tiny}", "--temperature", "0"], "--temperature"),
    Case("options/tokens-generate-max-new-tokens-0", ["tokens", "generate", "{prompts}", "-o", "o.jsonl",
                                                      "-m", "{tiny}", "--max-new-tokens", "0"], "--max-new-tokens"),
    Case("options/customset-max-new-tokens-0", ["customset", "{policy}", "-o", "set.jsonl", "-m", "{tiny}",
                                                "--max-new-tokens", "0"], "--max-new-tokens"),
    Case("options/values-max-new-tokens-0", ["values", "--out", "vals", "-m", "{tiny}", "--max-new-tokens", "0"],
         "--max-new-tokens"),
    Case("options/predict-bootstrap-max-new-tokens-0", ["predict", "bootstrap", "--prompts", "{prompts}",
                                                        "-m", "{tiny}", "--out", "clf", "--max-new-tokens", "0"],
         "--max-new-tokens"),
    Case("options/latent-ablate-max-new-tokens-0", ["latent", "ablate", "{prompts}", "-o", "o.jsonl", "-d", "adir",
                                                    "--max-new-tokens", "0"], "--max-new-tokens"),
    Case("options/latent-steer-top-p-5", ["latent", "steer", "{prompts}", "-o", "o.jsonl", "-d", "adir",
                                          "--coef", "1", "--top-p", "5"], "--top-p"),
    Case("options/latent-guard-batch-size-0", ["latent", "guard", "{prompts}", "-o", "o.jsonl", "-d", "adir",
                                               "--batch-size", "0"], "--batch-size"),
    Case("options/detect-batch-size-0", ["detect", "{responses}", "-o", "o.jsonl", "--batch-size", "0"],
         "--batch-size"),
    # the refusal-cliff commands (issue 16): checked before a probe, the prompts or a model are read
    Case("options/latent-probe-train-n-train-0", ["latent", "probe", "train", "-o", "pdir", "-m", "{tiny}",
                                                  "--n-train", "0"], "--n-train"),
    Case("options/latent-cliff-window-0", ["latent", "cliff", "{prompts}", "-o", "cdir", "-p", "adir",
                                           "--window", "0"], "--window"),
    Case("options/latent-cliff-temperature-negative", ["latent", "cliff", "{prompts}", "-o", "cdir", "-p", "adir",
                                                       "--temperature", "-1"], "--temperature"),
    Case("options/latent-heads-fractions-2", ["latent", "heads", "{prompts}", "-o", "hdir", "-p", "adir",
                                              "--fractions", "0,2"], "--fractions"),
    Case("options/latent-select-fraction-0", ["latent", "select", "{prompts}", "-o", "s.jsonl", "--random",
                                              "--fraction", "0"], "--fraction"),
]

# output paths: an existing folder, a parent that cannot exist, a file as a folder, the input itself
_OUT_COMMANDS = {
    "detect": (["detect", "{responses}", "-o"], "{responses}"),
    "predict": (["predict", "{prompts}", "-o"], "{prompts}"),
    "generate": (["generate", "{prompts}", "-m", "{tiny}", "-o"], "{prompts}"),
    "tokens-score": (["tokens", "score", "{prompts}", "-m", "{tiny}", "-o"], "{prompts}"),
}
PATH_CASES = []
for _cmd, (_args, _input) in _OUT_COMMANDS.items():
    PATH_CASES += [
        Case(f"paths/{_cmd}-output-is-a-folder", [*_args, "adir"], "adir"),
        Case(f"paths/{_cmd}-output-under-proc", [*_args, "/proc/x/o.jsonl"], "/proc/x/o.jsonl"),
        Case(f"paths/{_cmd}-output-under-a-file", [*_args, "afile/o.jsonl"], "afile"),
        Case(f"paths/{_cmd}-output-is-the-input", [*_args, _input], "input"),
    ]
PATH_CASES += [
    Case("paths/eval-out-is-a-file", ["eval", "-m", "{tiny}", "--bench", "{prompts}", "--out", "afile"], "afile"),
    Case("paths/compare-out-is-a-file", ["compare", "runa", "runb", "-o", "afile"], "afile"),
    Case("paths/generate-run-dir-is-a-file", ["generate", "{prompts}", "-o", "o.jsonl", "-m", "{tiny}",
                                              "--run-dir", "afile"], "afile"),
    Case("paths/values-out-is-a-file", ["values", "--out", "afile", "-m", "{tiny}"], "afile"),
    Case("paths/customset-output-is-the-policy", ["customset", "{policy}", "-o", "{policy}", "-m", "{tiny}"],
         "input"),
    Case("paths/latent-guard-output-is-the-input", ["latent", "guard", "{prompts}", "-o", "{prompts}", "-d", "adir"],
         "input"),
    Case("paths/latent-export-output-is-a-file", ["latent", "export", "-d", "adir", "-o", "afile"], "afile"),
    Case("paths/tokens-calibrate-output-is-a-folder", ["tokens", "calibrate", "{prompts}", "-o", "adir",
                                                       "-m", "{tiny}"], "adir"),
]

PROMPT_CASES = [
    # the tiny model's context is 512 tokens: a 4,000-character prompt stands for the 40k one past 8,192
    Case("prompts/generate-past-context", ["generate", "{long}", "-o", "o.jsonl", "-m", "{tiny}"], "long.jsonl:2"),
    Case("prompts/eval-past-context", ["eval", "-m", "{tiny}", "--bench", "{long}", "--out", "run"],
         "long.jsonl:2"),
    # refusal tokens need the model's own adapter: the bundled model's, with a prompt past its 8,192 tokens
    Case("prompts/tokens-score-past-context", ["tokens", "score", "{longd}", "-o", "o.jsonl", "-m", "default"],
         "longd.jsonl:2"),
    Case("prompts/tokens-generate-past-context", ["tokens", "generate", "{longd}", "-o", "o.jsonl", "-m", "default"],
         "longd.jsonl:2"),
    Case("prompts/generate-5mb", ["generate", "{huge}", "-o", "o.jsonl", "-m", "{tiny}"], "huge.jsonl:1"),
    Case("prompts/eval-5mb", ["eval", "-m", "{tiny}", "--bench", "{huge}", "--out", "run"], "huge.jsonl:1"),
    Case("prompts/tokens-score-5mb", ["tokens", "score", "{huge}", "-o", "o.jsonl", "-m", "default"],
         "huge.jsonl:1"),
    Case("prompts/compare-metrics-empty", ["compare", "empty", "runb"], "metrics.json"),
    Case("prompts/compare-metrics-lacks-fields", ["compare", "runb", "partial"], "metrics.json"),
]

RUNS_CASES = [
    Case("runs/show-corrupt-sqlite", ["runs", "show", "corrupt"], "corrupt", xfail=None),
    Case("runs/show-bad-stored-json", ["runs", "show", "badjson"], "badjson"),
    # from sub/dir/deep, ../../escaped is no folder; only the runs root's ../../escaped exists
    Case("runs/show-name-escapes-runs-folder", ["runs", "show", "../../escaped"], "escaped", cwd="sub/dir/deep"),
    Case("runs/show-unrelated-sqlite", ["runs", "show", "foreign"], "foreign"),
]

ARTIFACT_CASES = [
    Case("artifacts/detector-bad-meta", ["detect", "{responses}", "-o", "o.jsonl", "-d", "det_badmeta"],
         "det_badmeta"),
    Case("artifacts/detector-random-weights", ["detect", "{responses}", "-o", "o.jsonl", "-d", "det_random"],
         "det_random"),
    Case("artifacts/detector-misshaped-weights", ["detect", "{responses}", "-o", "o.jsonl", "-d", "det_shape"],
         "det_shape"),
    Case("artifacts/predictor-bad-meta", ["predict", "{prompts}", "-o", "o.jsonl", "--predictor", "pred_badmeta"],
         "pred_badmeta"),
    Case("artifacts/predictor-random-weights", ["predict", "{prompts}", "-o", "o.jsonl", "--predictor",
                                                "pred_random"], "pred_random"),
    # the adapter's files are checked before the base model loads, so the error is the only line
    Case("artifacts/adapter-bad-meta", ["tokens", "score", "{prompts}", "-o", "o.jsonl", "--adapter",
                                        "adapter_badmeta"], "adapter_badmeta"),
    Case("artifacts/adapter-random-weights", ["tokens", "score", "{prompts}", "-o", "o.jsonl", "--adapter",
                                              "adapter_random"], "adapter_random"),
]

# an endpoint that refuses connections: the run fails (exit 2) after its retries, and a run store is left
# to resume from, so only the secret is checked: in the error, in the stored run and in `runs list`
_SECRET_SPEC = "openai:m@http://user:SECRET@127.0.0.1:9/v1"
SECRET_CASES = [
    Case("secrets/url-credentials-in-error-and-run-store", ["generate", "{prompts}", "-o", "o.jsonl",
                                                            "-m", _SECRET_SPEC, "--max-new-tokens", "4"],
         "127.0.0.1", check="secret"),
    Case("secrets/url-credentials-in-runs-list", ["runs", "list"], "", check="secret"),
]

ALL = FILE_CASES + OPTION_CASES + PATH_CASES + PROMPT_CASES + RUNS_CASES + ARTIFACT_CASES + SECRET_CASES


def _params():
    for c in ALL:
        marks = [pytest.mark.xfail(strict=True, reason=f"owned by {c.xfail}: {c.why}")] if c.xfail else []
        yield pytest.param(c, id=c.id, marks=marks)


# --- fixtures on disk -------------------------------------------------------------------------------------------
def _write_run_outputs(d: Path, metrics: dict, rows: list[dict]) -> None:
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _metrics() -> dict:
    rate = {"k": 1, "n": 2, "rate": 0.5, "ci": [0.0, 1.0]}
    return {"run": {"model": "m", "benchmarks": ["b"]}, "detector": {"name": "default"},
            "overall": {"safety": {"n": 2, "refusal": rate}},
            "per_category": [{"category": "c", "role": "safety", "n": 2, "refusal": rate}]}


def _make_files(tmp: Path, case: Case) -> dict[str, str]:
    """Write the files a case refers to and return the placeholder values."""
    (tmp / "prompts.jsonl").write_text('{"id": "a", "prompt": "Hello there"}\n{"id": "b", "prompt": "How are you?"}\n')
    (tmp / "responses.jsonl").write_text('{"prompt": "Hi", "response": "I cannot help with that."}\n')
    (tmp / "adir").mkdir()
    (tmp / "afile").write_text("a file\n")
    shutil.copy(RES / "customsets" / "example_policy.yaml", tmp / "policy.yaml")
    vals = {"prompts": "prompts.jsonl", "responses": "responses.jsonl", "policy": "policy.yaml"}
    if case.id.startswith("inputs/"):
        kind = next(k for k in _BAD_FILES if case.id.endswith("-" + k))
        name, content, _ = _BAD_FILES[kind]
        cmd = case.id.split("/", 1)[1][: -len(kind) - 1]
        if content is not None:
            (tmp / name).write_bytes(content(_FILE_COMMANDS[cmd][1]))
    if "{long}" in case.args:
        (tmp / "long.jsonl").write_text(json.dumps({"prompt": "short"}) + "\n"
                                        + json.dumps({"prompt": "many words " * 400}) + "\n")
        vals["long"] = "long.jsonl"
    if "{longd}" in case.args:
        (tmp / "longd.jsonl").write_text(json.dumps({"prompt": "short"}) + "\n"
                                         + json.dumps({"prompt": "many words " * 4500}) + "\n")
        vals["longd"] = "longd.jsonl"
    if "{huge}" in case.args:
        (tmp / "huge.jsonl").write_text(json.dumps({"prompt": "x" * 5_000_000}) + "\n")
        vals["huge"] = "huge.jsonl"
    if case.id.startswith(("prompts/compare", "options/compare", "paths/compare")):
        rows = [{"id": "a", "refused": True}, {"id": "b", "refused": False}]
        _write_run_outputs(tmp / "runa", _metrics(), rows)
        _write_run_outputs(tmp / "runb", _metrics(), rows)
        _write_run_outputs(tmp / "empty", {}, rows)
        m = _metrics()
        del m["overall"]["safety"]["refusal"]
        _write_run_outputs(tmp / "partial", m, rows)
    if case.id.startswith("runs/"):
        _make_runs(tmp)
    if case.id.startswith("artifacts/"):
        _make_artifacts(tmp)
    if case.id == "secrets/url-credentials-in-runs-list":  # leave a run of the secret endpoint to list
        r = run_cli("generate", "prompts.jsonl", "-o", "o.jsonl", "-m", _SECRET_SPEC, "--max-new-tokens", "4",
                    cwd=tmp, timeout=300)
        assert r.returncode != 0
    return vals


def _new_store(d: Path) -> None:
    try:
        from refusalkit.runs import RunStore
    except ImportError:  # before the run layer moved
        from refusalkit.evaluate.store import RunStore
    from refusalkit.data.records import Example
    with RunStore(d) as st:
        st.init_run("k", [Example(id="a", prompt="p")], kind="gen", model="default")


def _make_runs(tmp: Path) -> None:
    (tmp / "corrupt").mkdir()
    (tmp / "corrupt" / "run.sqlite").write_bytes(b"this is not a database\x00" * 64)
    _new_store(tmp / "badjson")
    con = sqlite3.connect(tmp / "badjson" / "run.sqlite")
    con.execute("UPDATE meta SET value = '{not json' WHERE key = 'kind'")
    con.commit()
    con.close()
    # `runs show ../../escaped` from sub/dir/deep: not a path from there, but runs-root/../../escaped exists
    (tmp / "sub" / "dir" / "deep").mkdir(parents=True)
    _new_store(tmp / "escaped")
    (tmp / "foreign").mkdir()
    con = sqlite3.connect(tmp / "foreign" / "run.sqlite")
    con.execute("CREATE TABLE notes (t TEXT)")
    con.execute("INSERT INTO notes VALUES ('mine')")
    con.commit()
    con.close()
    for d in ("badjson", "escaped"):  # only the database itself; no journals or lock files
        for f in (tmp / d).iterdir():
            if f.name != "run.sqlite":
                f.unlink() if f.is_file() else shutil.rmtree(f)


def _make_artifacts(tmp: Path) -> None:
    import numpy as np

    det, pred = RES / "detect" / "embedding", RES / "detect" / "prompt_chatgpt"
    for name, src in (("det", det), ("pred", pred)):
        for kind in ("badmeta", "random", "shape"):
            shutil.copytree(src, tmp / f"{name}_{kind}")
        (tmp / f"{name}_badmeta" / "meta.json").write_text('{"kind": ')
        (tmp / f"{name}_random" / "weights.npz").write_bytes(np.random.default_rng(0).bytes(4096))
        with np.load(src / "weights.npz") as z:
            np.savez(tmp / f"{name}_shape" / "weights.npz", **{k: np.zeros((3, 1)) for k in z.files})
    ad = RES / "tokens" / "smollm2-135m-coconot"
    shutil.copytree(ad, tmp / "adapter_badmeta")
    (tmp / "adapter_badmeta" / "refusal_tokens.json").write_text("{not json")
    shutil.copytree(ad, tmp / "adapter_random")
    (tmp / "adapter_random" / "adapter_model.safetensors").write_bytes(np.random.default_rng(1).bytes(4096))


def _snapshot(root: Path) -> dict[str, tuple]:
    """Return every file and folder under ``root`` with its size, modification time and mode."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size if p.is_file() else None, st.st_mtime_ns, st.st_mode)
    return out


@pytest.mark.parametrize("case", list(_params()))
def test_bad_input(case: Case, tmp_path: Path, tiny_model_dir: Path) -> None:
    vals = _make_files(tmp_path, case)
    vals["tiny"] = str(tiny_model_dir)
    args = [a.format(**vals) if "{" in a else a for a in case.args]
    before = _snapshot(tmp_path)
    cwd = tmp_path / case.cwd
    r = run_cli(*args, cwd=cwd, timeout=300)
    after = _snapshot(tmp_path)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr + r.stdout, r.stderr[-3000:]
    if case.check == "secret":
        assert "SECRET" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]
        for f in tmp_path.rglob("*"):
            assert not f.is_file() or b"SECRET" not in f.read_bytes(), f
        if case.args[0] == "generate":
            assert r.returncode == 2 and case.expect in r.stderr, r.stderr[-2000:]
        return
    assert r.returncode == 2, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr[-2000:]
    assert case.expect.format(**vals) in lines[0], lines[0]
    added = sorted(set(after) - set(before))
    changed = sorted(k for k in before if k in after and before[k] != after[k] and not Path(tmp_path, k).is_dir())
    removed = sorted(set(before) - set(after))
    assert not added and not changed and not removed, (added, changed, removed)


# --- outputs: the umask decides their mode, and no NaN reaches a JSON file -----------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)],
                         ids=["paths/umask-022", "paths/umask-027", "paths/umask-077"])
def test_outputs_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    exe = shutil.which("refusalkit", path=str(Path(sys.executable).parent)) or "refusalkit"
    out = tmp_path / "o.jsonl"
    subprocess.run([exe, "detect", "write-data", "-o", str(out), "--per-topic", "1"], check=True,
                   capture_output=True, preexec_fn=lambda: os.umask(umask), timeout=300)
    assert out.stat().st_mode & 0o777 == mode


def test_no_nan_in_json_outputs(tmp_path: Path) -> None:
    from refusalkit.data.io import write_json_atomic, write_jsonl_atomic

    write_jsonl_atomic(tmp_path / "a.jsonl", [{"p": float("nan"), "q": [1.0, float("inf")], "r": 0.5}])
    write_json_atomic(tmp_path / "b.json", {"p": float("-inf"), "r": {"s": float("nan")}})
    assert json.loads((tmp_path / "a.jsonl").read_text(), parse_constant=pytest.fail) == \
        {"p": None, "q": [1.0, None], "r": 0.5}
    assert json.loads((tmp_path / "b.json").read_text(), parse_constant=pytest.fail) == \
        {"p": None, "r": {"s": None}}


def test_library_generation_refuses_a_prompt_past_the_context(tiny_model_dir: Path) -> None:
    """The backstop under the CLI's check: HFModel itself refuses before allocating anything, and a
    5 MB prompt is refused on its length alone (no tokenizing of the whole text)."""
    import time

    from refusalkit.models.context import PromptTooLongError
    from refusalkit.models.hf import HFModel

    m = HFModel(tiny_model_dir)
    assert m.context.n_ctx == 512
    with pytest.raises(PromptTooLongError) as e:
        m.generate(["hi", "many words " * 400])
    assert e.value.index == 1 and e.value.n_tokens > e.value.limit == 512 - 256
    with pytest.raises(PromptTooLongError):
        m.next_token_logits(["many words " * 400])
    t = time.perf_counter()
    with pytest.raises(PromptTooLongError, match="at least"):
        m.generate(["x" * 5_000_000])
    assert time.perf_counter() - t < 2.0
    assert len(m.generate(["hi"], None)) == 1  # a prompt that fits still runs
