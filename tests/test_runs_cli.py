"""``refusalkit runs list|show|export`` as subprocesses on stores that are foreign, corrupt, damaged or
named out of the runs folder: exit 2 with one line, and the files are left exactly as they were."""

from __future__ import annotations

import json
import sqlite3

import pytest

from conftest import run_cli
from refusalkit.data.records import Example, Response
from refusalkit.runs import DB_NAME, RunStore


def _store(d, n=2):
    exs = [Example(id=f"e{i}", prompt=f"p{i}") for i in range(n)]
    with RunStore(d) as st:
        st.init_run("k", exs, kind="gen", model="m")
        st.add_responses([Response.from_example(e, f"r{i}") for i, e in enumerate(exs)])
    return d


def _snapshot(d):
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def _one_line_error(r, *needles):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for n in needles:
        assert n in r.stderr.replace("\n", ""), r.stderr


@pytest.mark.parametrize("command", ["show", "export"])
def test_foreign_sqlite_file_is_refused_and_not_modified(tmp_path, command):
    d = tmp_path / "notmine"
    d.mkdir()
    con = sqlite3.connect(d / DB_NAME)
    con.executescript("CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('keep');")
    con.close()
    before = _snapshot(d)
    extra = ["-o", str(tmp_path / "o.jsonl")] if command == "export" else []
    _one_line_error(run_cli("runs", command, str(d), *extra), "not a refusalkit run store")
    assert _snapshot(d) == before  # no tables added, no journal switch, no -wal/-shm files
    assert not (tmp_path / "o.jsonl").exists()


def test_corrupt_store_and_bad_stored_json_exit_2(tmp_path):
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / DB_NAME).write_bytes(b"\x00garbage" * 500)
    _one_line_error(run_cli("runs", "show", str(bad)), str(bad / DB_NAME))
    d = _store(tmp_path / "badjson")
    with sqlite3.connect(d / DB_NAME) as c:
        c.execute("UPDATE meta SET value = '{not json' WHERE key = 'model'")
        c.execute("UPDATE responses SET record = 'oops' WHERE id = 'e1'")
    _one_line_error(run_cli("runs", "show", str(d)), "bad stored JSON in meta key 'model'")
    out = tmp_path / "o.jsonl"
    _one_line_error(run_cli("runs", "export", str(d), "-o", str(out)), "bad stored JSON in response 'e1'")
    assert not out.exists() and not list(tmp_path.glob(".o.jsonl*"))  # nothing half-written


def test_run_names_stay_inside_the_runs_folder(tmp_path):
    home = tmp_path / "a" / "home"
    _store(home / "runs" / "gen-1")
    _store(tmp_path / "a" / "x")  # what runs/../../x would reach
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {"REFUSALKIT_HOME": str(home)}
    r = run_cli("runs", "show", "gen-1", env=env, cwd=cwd)
    assert r.returncode == 0 and json.loads(r.stdout)["responses"] == 2
    for name in ("../../x", "../runs/gen-1", "/"):
        _one_line_error(run_cli("runs", "show", name, env=env, cwd=cwd), "no run")


def test_runs_list_marks_unreadable_stores(tmp_path):
    root = tmp_path / "runs"
    _store(root / "good")
    (root / "bad").mkdir()
    (root / "bad" / DB_NAME).write_bytes(b"garbage" * 100)
    r = run_cli("runs", "list", "--root", str(root))
    assert r.returncode == 0, r.stderr
    assert "good" in r.stdout and "2/2" in r.stdout and "unreadable" in r.stdout
