"""The run layer in-process: the store (marking, read-only opens, foreign and corrupt files, bad JSON),
``resolve_run``, the lock, ``--fresh`` and ``run_resumable`` with a small recording model.

The fake model below stands in for a LanguageModel only to test the run layer (which calls, how often,
in what order); the models themselves are tested against real weights elsewhere.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading

import pytest

from refusalkit.data.records import Example, Response
from refusalkit.errors import RefusalkitError
from refusalkit.models.base import Generation, GenerationConfig
from refusalkit.runs import (
    DB_NAME,
    RunInUseError,
    RunLock,
    RunStore,
    list_runs,
    remove_store_files,
    resolve_run,
    run_key,
    run_resumable,
)
from refusalkit.runs.lock import LOCK_NAME

CFG = GenerationConfig(max_new_tokens=4)


class RecordingModel:
    """Answers ``"answer to <prompt>"`` and records every prompt it was asked (optionally failing after
    ``fail_after`` prompts, to stand for a crash, or waiting on ``gate`` before each batch)."""

    def __init__(self, name: str = "rec", fail_after: int | None = None, gate: threading.Event | None = None):
        self.name = name
        self.calls: list[list[str]] = []
        self.fail_after = fail_after
        self.gate = gate

    @property
    def prompts(self) -> list[str]:
        return [p for c in self.calls for p in c]

    def generate(self, prompts, config=None):
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_after is not None and len(self.prompts) + len(prompts) > self.fail_after:
            raise KeyboardInterrupt  # as Ctrl-C would, mid-run
        self.calls.append(list(prompts))
        return [Generation(f"answer to {p}", n_tokens=3, meta={"seen": i}) for i, p in enumerate(prompts)]


def _examples(n: int) -> list[Example]:
    return [Example(id=f"e{i}", prompt=f"prompt {i}", category="c") for i in range(n)]


def _files(d) -> set[str]:
    return {p.name for p in d.iterdir()}


# --- the store ----------------------------------------------------------------------------------------


def test_store_round_trip_is_marked_and_one_file_at_rest(tmp_path):
    exs = _examples(3)
    with RunStore(tmp_path / "r") as st:
        st.init_run("k", exs, kind="gen", model="m")
        assert [e.id for e in st.pending()] == ["e0", "e1", "e2"]
        st.add_responses([Response.from_example(exs[1], "hi", model="m")])
        st.add_responses([Response.from_example(exs[1], "again", model="m")])  # kept, not duplicated
        st.add_verdicts("kw", [{"id": "e1", "verdict": "full_compliance"}])
        assert st.counts() == {"inputs": 3, "responses": 1, "verdicts": 1}
    assert _files(tmp_path / "r") == {DB_NAME}  # back to the rollback journal: no -wal/-shm at rest
    with sqlite3.connect(tmp_path / "r" / DB_NAME) as c:
        assert c.execute("SELECT name, version FROM refusalkit_store").fetchall() == [("refusalkit.run", 1)]
    with RunStore.open_readonly(tmp_path / "r") as st:
        assert [r.response for r in st.responses()] == ["hi"]
        assert [e.id for e in st.pending()] == ["e0", "e2"]
        assert st.get_meta()["model"] == "m" and st.get_meta()["n_inputs"] == 3
        assert st.verdicts("kw") == {"e1": {"id": "e1", "verdict": "full_compliance"}}
        with pytest.raises(RefusalkitError, match="read-only"):
            st.set_meta(x=1)


def test_a_different_run_in_the_same_dir_is_refused(tmp_path):
    with RunStore(tmp_path) as st:
        st.init_run("k1", _examples(2))
        st.init_run("k1", _examples(2))  # the same run: fine
        with pytest.raises(RefusalkitError, match="holds a different run.*choose another --out"):
            st.init_run("k2", _examples(2), dir_option="--out")


def _sqlite_file(path, sql: str) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.executescript(sql)
    con.commit()
    con.close()
    return path.read_bytes()


@pytest.mark.parametrize("readonly", [True, False])
def test_a_foreign_sqlite_file_is_refused_and_left_unchanged(tmp_path, readonly):
    db = tmp_path / "r" / DB_NAME
    before = _sqlite_file(db, "CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('mine');")
    with pytest.raises(RefusalkitError, match="not a refusalkit run store"):
        RunStore(tmp_path / "r", readonly=readonly)
    assert db.read_bytes() == before and _files(tmp_path / "r") == {DB_NAME}
    with pytest.raises(RefusalkitError, match="not a refusalkit run store"):
        remove_store_files(tmp_path / "r")  # --fresh never deletes a database refusalkit did not make
    assert db.read_bytes() == before


def test_a_store_from_before_the_mark_is_accepted(tmp_path):
    legacy = """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE inputs (idx INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, example TEXT NOT NULL);
    CREATE TABLE responses (id TEXT PRIMARY KEY, record TEXT NOT NULL, created REAL NOT NULL);
    CREATE TABLE verdicts (id TEXT NOT NULL, detector TEXT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (id, detector));
    INSERT INTO meta VALUES ('key', '"k"'), ('kind', '"gen"');
    INSERT INTO inputs VALUES (0, 'a', '{"id": "a", "prompt": "p"}');
    """
    db = tmp_path / DB_NAME
    before = _sqlite_file(db, legacy)
    with RunStore.open_readonly(tmp_path) as st:
        assert st.kind == "legacy" and [e.id for e in st.pending()] == ["a"]
    assert db.read_bytes() == before  # a read-only open leaves it as it was
    with RunStore(tmp_path) as st:  # a writing open adds the mark
        assert st.kind == "legacy"
    with RunStore.open_readonly(tmp_path) as st:
        assert st.kind == "marked"


def test_extra_tables_or_columns_are_not_a_run_store(tmp_path):
    _sqlite_file(
        tmp_path / DB_NAME,
        """
    CREATE TABLE meta (key TEXT, value TEXT); CREATE TABLE inputs (idx INTEGER, id TEXT, example TEXT);
    CREATE TABLE responses (id TEXT, record TEXT, created REAL); CREATE TABLE verdicts (id TEXT, detector TEXT);
    """,
    )
    with pytest.raises(RefusalkitError, match="not a refusalkit run store"):
        RunStore.open_readonly(tmp_path)


def test_corrupt_database_is_one_error_naming_the_file(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite at all" * 200)
    for ro in (True, False):
        with pytest.raises(RefusalkitError, match=f"{DB_NAME}: not a readable refusalkit run store"):
            RunStore(tmp_path, readonly=ro)
    with pytest.raises(RefusalkitError):
        remove_store_files(tmp_path)
    assert (tmp_path / DB_NAME).exists()


@pytest.mark.parametrize(
    "table, sql, what",
    [
        ("meta", "UPDATE meta SET value = '{broken' WHERE key = 'model'", "meta key 'model'"),
        ("responses", "UPDATE responses SET record = 'nope'", "response 'e0'"),
        ("inputs", "UPDATE inputs SET example = '[1, 2]' WHERE idx = 1", "input 1"),
    ],
)
def test_bad_stored_json_is_one_error(tmp_path, table, sql, what):
    exs = _examples(2)
    with RunStore(tmp_path) as st:
        st.init_run("k", exs, model="m")
        st.add_responses([Response.from_example(exs[0], "r")])
    with sqlite3.connect(tmp_path / DB_NAME) as c:
        c.execute(sql)
    with RunStore.open_readonly(tmp_path) as st, pytest.raises(RefusalkitError) as e:
        {"meta": st.get_meta, "responses": lambda: list(st.iter_response_dicts()), "inputs": st.inputs}[table]()
    assert what in str(e.value) and "\n" not in str(e.value)


def test_resolve_run_confines_names_to_the_runs_root(tmp_path):
    root = tmp_path / "home" / "runs"
    with RunStore(root / "gen-abc") as st:
        st.init_run("k", _examples(1))
    with RunStore(tmp_path / "outside") as st:
        st.init_run("k", _examples(1))
    assert resolve_run("gen-abc", root) == root / "gen-abc"
    assert resolve_run(str(tmp_path / "outside"), root) == tmp_path / "outside"  # a path the user typed
    with RunStore(tmp_path / "home" / "outside") as st:  # reachable as runs/../outside
        st.init_run("k", _examples(1))
    cwd = os.getcwd()
    (tmp_path / "cwd" / "a" / "b").mkdir(parents=True)
    os.chdir(tmp_path / "cwd" / "a" / "b")  # where neither name is a path to a run
    try:
        for name in ("../outside", "../../outside", "..", ".", "a/b", ".hidden"):
            with pytest.raises(RefusalkitError):
                resolve_run(name, root)
    finally:
        os.chdir(cwd)


def test_list_runs_reports_unreadable_stores_instead_of_failing(tmp_path):
    with RunStore(tmp_path / "good") as st:
        st.init_run("k", _examples(2), kind="gen", model="m")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / DB_NAME).write_bytes(b"garbage" * 100)
    rows = {r["name"]: r for r in list_runs(tmp_path)}
    assert rows["good"]["inputs"] == 2 and rows["good"]["model"] == "m"
    assert "not a readable refusalkit run store" in rows["bad"]["error"]


# --- the lock -------------------------------------------------------------------------------------------


def test_lock_is_exclusive_names_the_holder_and_removes_itself(tmp_path):
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(RunInUseError, match=f"in use by pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(tmp_path):  # free again
        pass


def test_a_stale_lock_file_from_a_killed_process_does_not_block(tmp_path):
    (tmp_path / LOCK_NAME).write_text("999999\n")  # left behind by a SIGKILLed run: the kernel dropped its flock
    with RunLock(tmp_path):
        pass


@pytest.mark.skipif(sys.platform != "linux", reason="flock semantics")
def test_lock_is_released_when_the_holding_process_dies(tmp_path):
    import subprocess

    code = (
        "import sys, time; from refusalkit.runs import RunLock; l = RunLock(sys.argv[1]).acquire(); "
        "print('locked', flush=True); time.sleep(60)"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError, match=f"pid {p.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        p.kill()
        p.wait()
    with RunLock(tmp_path):
        pass


# --- run_resumable ------------------------------------------------------------------------------------


def test_run_resumable_generates_each_prompt_once_and_resumes(tmp_path):
    exs = _examples(7)
    m = RecordingModel(fail_after=4)
    with pytest.raises(KeyboardInterrupt):
        run_resumable(exs, m, CFG, tmp_path / "r", batch_size=2)
    assert m.prompts == ["prompt 0", "prompt 1", "prompt 2", "prompt 3"]
    assert not (tmp_path / "r" / LOCK_NAME).exists()  # released on the way out
    m2 = RecordingModel()
    seen = []
    res = run_resumable(exs, m2, CFG, tmp_path / "r", batch_size=2, on_progress=seen.append)
    assert m2.prompts == ["prompt 4", "prompt 5", "prompt 6"]  # only the missing ones
    assert (res.n_new, res.n_inputs, res.model_name) == (3, 7, "rec")
    assert [(p.done, p.new, p.new_tokens) for p in seen] == [(4, 0, 0), (6, 2, 6), (7, 3, 9)]
    m3 = RecordingModel()
    assert run_resumable(exs, m3, CFG, tmp_path / "r").n_new == 0 and m3.calls == []
    with RunStore.open_readonly(tmp_path / "r") as st:
        rows = list(st.iter_response_dicts())
    assert [r["id"] for r in rows] == [e.id for e in exs]
    assert rows[0]["response"] == "answer to prompt 0" and rows[0]["gen_seen"] == 0 and rows[0]["category"] == "c"


def test_model_given_as_spec_or_loader_is_loaded_only_when_something_is_pending(tmp_path):
    exs = _examples(3)
    loads = []

    def loader():
        loads.append(1)
        return RecordingModel(name="loaded")

    res = run_resumable(exs, loader, CFG, tmp_path, model_id="my-model")
    assert loads == [1] and res.model_name == "loaded" and res.n_new == 3
    res = run_resumable(exs, loader, CFG, tmp_path, model_id="my-model")
    assert loads == [1] and res.n_new == 0 and res.model_name == "loaded"
    # a --model string is loaded only when needed: a finished run under a hub id that is not in the
    # (offline) cache completes without touching the model layer
    run_resumable(exs, RecordingModel(), CFG, tmp_path / "hub", model_id="org/not-downloaded")
    res = run_resumable(exs, "org/not-downloaded", CFG, tmp_path / "hub")
    assert res.n_new == 0 and res.model_name == "rec"
    with pytest.raises(TypeError):
        run_resumable(exs, loader, CFG, tmp_path / "x")


def test_run_key_and_default_dir_follow_the_settings(tmp_path):
    exs = _examples(2)
    k = run_key("m", exs, CFG)
    assert k == run_key("m", exs, CFG) and k != run_key("m", exs, CFG.with_(max_new_tokens=5))
    assert k != run_key("m", exs, CFG, kind="eval") and k != run_key("m2", exs, CFG)
    res = run_resumable(exs, RecordingModel(), CFG, model_id="m", kind="gen")
    assert res.run_dir.name == f"gen-{k[:12]}" and res.key == k
    assert res.run_dir.parent == tmp_path / "rkhome" / "runs"


def test_judge_runs_after_each_batch_and_at_the_end(tmp_path):
    exs = _examples(5)
    judged: list[str] = []

    def judge(store: RunStore) -> int:
        done = set(judged)
        todo = [r.id for r in store.responses() if r.id not in done]
        judged.extend(todo)
        return len(todo)

    opened = []
    res = run_resumable(
        exs,
        RecordingModel(),
        CFG,
        tmp_path,
        batch_size=2,
        judge=judge,
        on_open=lambda st: opened.append(st.counts()["responses"]),
    )
    assert judged == [e.id for e in exs] and res.n_judged == 5 and opened == [0]
    assert set(res.timing) == {"load_s", "generate_s", "judge_s"}


def test_fresh_removes_only_the_store_files_and_declared_outputs(tmp_path):
    d = tmp_path / "run"
    exs = _examples(3)
    run_resumable(exs, RecordingModel(), CFG, d)
    (d / "notes.txt").write_text("keep me")
    (d / "sub").mkdir()
    (d / "sub" / "x.txt").write_text("and me")
    (d / "metrics.json").write_text("{}")
    (d / "report.html").write_text("<p>")
    m = RecordingModel()
    res = run_resumable(exs, m, CFG, d, fresh=True, outputs=("metrics.json",))
    assert res.n_new == 3 and len(m.prompts) == 3  # started over
    assert _files(d) == {DB_NAME, "notes.txt", "sub", "report.html"}
    assert (d / "notes.txt").read_text() == "keep me" and (d / "sub" / "x.txt").read_text() == "and me"
    # fresh also starts over a run with other settings in the same folder, which is otherwise refused
    with pytest.raises(RefusalkitError, match="different run"):
        run_resumable(exs, RecordingModel(), CFG.with_(max_new_tokens=9), d)
    assert run_resumable(exs, RecordingModel(), CFG.with_(max_new_tokens=9), d, fresh=True).n_new == 3


def test_run_dir_that_is_a_file_or_a_bad_batch_size_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RefusalkitError, match="not a directory"):
        run_resumable(_examples(1), RecordingModel(), CFG, f)
    with pytest.raises(RefusalkitError, match="--batch-size"):
        run_resumable(_examples(1), RecordingModel(), CFG, tmp_path / "r", batch_size=0)
    assert not (tmp_path / "r").exists()


def test_two_concurrent_runs_on_one_store_never_generate_a_prompt_twice(tmp_path):
    exs = _examples(6)
    gate = threading.Event()
    first, second = RecordingModel(gate=gate), RecordingModel()
    errors: list[BaseException] = []

    def run_first():
        try:
            run_resumable(exs, first, CFG, tmp_path, batch_size=2)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=run_first)
    t.start()
    try:
        # the first run holds the lock (its model waits on the gate); the second is turned away
        for _ in range(200):
            if (tmp_path / LOCK_NAME).exists() and (tmp_path / DB_NAME).exists():
                break
            threading.Event().wait(0.02)
        with pytest.raises(RunInUseError, match=f"run {tmp_path} is in use by pid {os.getpid()}"):
            run_resumable(exs, second, CFG, tmp_path, batch_size=2)
    finally:
        gate.set()
        t.join()
    assert not errors
    assert second.calls == [] and sorted(first.prompts) == sorted(e.prompt for e in exs)
    assert run_resumable(exs, second, CFG, tmp_path).n_new == 0 and second.calls == []


def test_run_layer_does_not_import_torch_or_higher_layers():
    import subprocess

    code = (
        "import sys, refusalkit.runs; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith(("
        "'refusalkit.evaluate', 'refusalkit.detect', 'refusalkit.tokens', 'refusalkit.cli', "
        "'refusalkit.predict', 'refusalkit.values', 'refusalkit.serve'))); print(json.dumps(bad))"
    )
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
