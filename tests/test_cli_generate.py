"""``refusalkit generate`` and ``runs`` as subprocesses: output, resume after SIGKILL, bad input."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli


def _prompts(tmp_path, n):
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Question number {i}: why?", "category": "c"}) + "\n"
                         for i in range(n)))
    return p


def test_generate_writes_one_row_per_prompt_and_runs_commands(tmp_path, tiny_model_dir):
    inp, out = _prompts(tmp_path, 5), tmp_path / "out.jsonl"
    r = run_cli("generate", str(inp), "-o", str(out), "--model", str(tiny_model_dir), "--max-new-tokens", "4",
                "--run-dir", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in rows] == [f"p{i}" for i in range(5)]
    assert all(x["category"] == "c" and x["model"] == str(tiny_model_dir) for x in rows)
    # Rerunning finds everything done and rewrites the same output.
    r = run_cli("generate", str(inp), "-o", str(out), "--model", str(tiny_model_dir), "--max-new-tokens", "4",
                "--run-dir", str(tmp_path / "run"))
    assert r.returncode == 0 and "already" in r.stderr
    r = run_cli("runs", "show", str(tmp_path / "run"))
    assert r.returncode == 0 and '"responses": 5' in r.stdout
    exp = tmp_path / "again.jsonl"
    assert run_cli("runs", "export", str(tmp_path / "run"), "-o", str(exp)).returncode == 0
    assert exp.read_text() == out.read_text()


def test_default_run_dir_is_listed(tmp_path, tiny_model_dir):
    inp = _prompts(tmp_path, 2)
    home = tmp_path / "home"
    env = {"REFUSALKIT_HOME": str(home)}
    r = run_cli("generate", str(inp), "-o", str(tmp_path / "o.jsonl"), "--model", str(tiny_model_dir),
                "--max-new-tokens", "2", env=env)
    assert r.returncode == 0, r.stderr
    r = run_cli("runs", "list", env=env)
    assert r.returncode == 0 and "gen-" in r.stdout and "2/2" in r.stdout


def test_sigkill_then_rerun_has_exactly_one_row_per_id(tmp_path, tiny_model_dir):
    n = 120
    inp, out, run = _prompts(tmp_path, n), tmp_path / "out.jsonl", tmp_path / "run"
    args = ["generate", str(inp), "-o", str(out), "--model", str(tiny_model_dir), "--max-new-tokens", "24",
            "--batch-size", "4", "--run-dir", str(run)]
    exe = Path(sys.executable).parent / "refusalkit"
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ}, start_new_session=True)
    db = run / "run.sqlite"
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as c:
                    done = c.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done >= 8:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "generation finished before it could be killed; raise n"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < done < n
    assert not out.exists()  # nothing half-written
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert sorted(ids) == sorted(f"p{i}" for i in range(n)) and len(ids) == len(set(ids))
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM responses").fetchone() == (n, n)


@pytest.mark.parametrize("content, expect", [
    (b'{"prompt": "ok"}\n{"prompt": "x"\n', ":2: malformed JSON"),
    (b'{"prompt": "ok"}\n{"text": "x"}\n', ":2: field 'prompt': missing"),
    (b'{"prompt": "\xff\xfe"}\n', ":1: not valid UTF-8"),
    (b'', "no records"),
])
def test_bad_input_exits_2_without_output(tmp_path, content, expect):
    inp = tmp_path / "bad.jsonl"
    inp.write_bytes(content)
    out = tmp_path / "out.jsonl"
    r = run_cli("generate", str(inp), "-o", str(out), "--model", "default")
    assert r.returncode == 2
    assert str(inp) in r.stderr and expect in r.stderr.replace("\n", "")
    assert "Traceback" not in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, expect", [
    (["no-such-benchmark"], "unknown benchmark"),
    (["PROMPTS", "--model", "nonsense"], "unknown model spec"),
    (["PROMPTS", "--model", "openai:m@ftp://x"], "http://"),
])
def test_unknown_benchmark_or_model_exits_2(tmp_path, args, expect):
    inp = _prompts(tmp_path, 1)
    args = [str(inp) if a == "PROMPTS" else a for a in args]
    r = run_cli("generate", *args, "-o", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and expect in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_fresh_removes_only_the_run_store(tmp_path, tiny_model_dir):
    inp, out, run = _prompts(tmp_path, 3), tmp_path / "out.jsonl", tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("my notes")
    (run / "sub").mkdir()
    (run / "sub" / "data.txt").write_text("my data")
    args = ["generate", str(inp), "-o", str(out), "--model", str(tiny_model_dir), "--max-new-tokens", "2",
            "--limit", "2", "--run-dir", str(run)]
    r = run_cli(*args)
    assert r.returncode == 0 and "2 new" in r.stdout, r.stderr
    r = run_cli(*args, "--fresh")
    assert r.returncode == 0 and "2 new" in r.stdout, r.stderr  # generated again
    assert (run / "notes.txt").read_text() == "my notes" and (run / "sub" / "data.txt").read_text() == "my data"
    assert {p.name for p in run.iterdir()} == {"notes.txt", "sub", "run.sqlite"}
    # a database that refusalkit did not make is never deleted, not even with --fresh
    other = tmp_path / "other"
    other.mkdir()
    con = sqlite3.connect(other / "run.sqlite")
    con.executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
    con.close()
    before = (other / "run.sqlite").read_bytes()
    r = run_cli(*args[:-1], str(other), "--fresh")
    assert r.returncode == 2 and "not a refusalkit run store" in r.stderr and "Traceback" not in r.stderr
    assert (other / "run.sqlite").read_bytes() == before


def test_two_concurrent_generates_on_one_store_generate_each_prompt_once(tmp_path, tiny_model_dir):
    import re

    n = 40
    inp, run = _prompts(tmp_path, n), tmp_path / "run"
    exe = Path(sys.executable).parent / "refusalkit"
    procs = [subprocess.Popen([str(exe), "generate", str(inp), "-o", str(tmp_path / f"out{i}.jsonl"), "--model",
                               str(tiny_model_dir), "--max-new-tokens", "8", "--batch-size", "4", "--run-dir",
                               str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "COLUMNS": "200"})
             for i in range(2)]
    results = [(p.returncode, out, err) for p in procs for out, err in [p.communicate(timeout=300)]]
    new = 0
    for rc, out, err in results:
        assert rc in (0, 2) and "Traceback" not in err, err
        if rc == 2:  # turned away while the other one held the run
            assert f"run {run} is in use by pid" in err.replace("\n", "")
        else:
            new += int(re.search(r"; (\d+) new in", out).group(1))
    assert any(rc == 0 for rc, _, _ in results)
    assert new == n  # between them, every prompt was generated once
    with sqlite3.connect(run / "run.sqlite") as c:
        assert c.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM responses").fetchone() == (n, n)
