"""``RunStore``: a run directory with an SQLite database that commits every finished item.

A run directory holds ``run.sqlite`` with the run's metadata, its inputs, and one row per finished
response (and per verdict, for judged runs). Each batch is committed in one transaction before the next
starts, so a crash or Ctrl-C loses at most the batch in flight and a rerun never duplicates a row.

A store records that refusalkit made it (table ``refusalkit_store``), and is only ever opened when it
carries that mark (or is a store made before the mark existed: exactly the four known tables with their
known columns). Stores are opened either for writing (WAL journal while open, back to a single file when
closed) or read-only (``mode=ro``, journal mode untouched), so ``runs show`` never changes a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from refusalkit.data.records import Example, Response
from refusalkit.errors import RefusalkitError

DB_NAME = "run.sqlite"
STORE_MARK = "refusalkit.run"
STORE_VERSION = 1
MARK_TABLE = "refusalkit_store"
# The tables (and their columns) of a run store; stores made before the mark table have exactly these.
KNOWN_TABLES: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "inputs": ("idx", "id", "example"),
    "responses": ("id", "record", "created"),
    "verdicts": ("id", "detector", "record"),
}
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {MARK_TABLE} (name TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inputs (idx INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, example TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, record TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS verdicts (id TEXT NOT NULL, detector TEXT NOT NULL, record TEXT NOT NULL,
                                     PRIMARY KEY (id, detector));
"""
_RUN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def runs_root() -> Path:
    """Return the default directory that holds runs (``$REFUSALKIT_HOME/runs`` or the user data dir)."""
    env = os.environ.get("REFUSALKIT_HOME")
    if env:
        return Path(env) / "runs"
    from platformdirs import user_data_dir

    return Path(user_data_dir("refusalkit")) / "runs"


def resolve_run(run: str, root: str | os.PathLike | None = None) -> Path:
    """Return the run directory for ``run``: a directory holding ``run.sqlite``, or the name of a run
    under ``root`` (default :func:`runs_root`). A name is one plain path component (no ``/``, ``..`` or
    leading dot), so it can never point outside the runs folder. Raises RefusalkitError otherwise."""
    base = Path(root) if root is not None else runs_root()
    p = Path(run).expanduser()
    if (p / DB_NAME).is_file():
        return p
    if not _RUN_NAME.match(run) or run in (".", ".."):
        raise RefusalkitError(
            f"no run directory {run!r} (no {DB_NAME} there), and it is not a run name "
            f"(a name is one folder under {base}, without '/' or '..')"
        )
    q = base / run
    if (q / DB_NAME).is_file():
        return q
    raise RefusalkitError(f"no run {run!r} (neither a run directory nor a name under {base})")


def _table_columns(conn: sqlite3.Connection) -> dict[str, tuple[str, ...]]:
    names = [
        n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    ]
    return {n: tuple(r[1] for r in conn.execute(f'PRAGMA table_info("{n}")')) for n in names}


def check_store(conn: sqlite3.Connection, db: Path, *, allow_empty: bool) -> str:
    """Return how the database at ``db`` (open on ``conn``) is a refusalkit run store: ``"marked"`` (it
    carries the mark table), ``"legacy"`` (made before the mark: exactly the known tables and columns) or
    ``"empty"`` (no tables; only with ``allow_empty``). Raises RefusalkitError for anything else, without
    changing the file."""
    tables = _table_columns(conn)
    if not tables and allow_empty:
        return "empty"
    if MARK_TABLE in tables:
        rows = conn.execute(f"SELECT name, version FROM {MARK_TABLE}").fetchall()
        if len(rows) != 1 or rows[0][0] != STORE_MARK:
            raise RefusalkitError(f"{db} is not a refusalkit run store (bad {MARK_TABLE} table)")
        if not isinstance(rows[0][1], int) or rows[0][1] > STORE_VERSION:
            raise RefusalkitError(
                f"{db} is a run store of version {rows[0][1]!r}, newer than this refusalkit "
                f"reads ({STORE_VERSION}); upgrade refusalkit"
            )
        bad = [t for t, cols in KNOWN_TABLES.items() if tables.get(t) != cols]
        if bad:
            raise RefusalkitError(f"{db} is a damaged refusalkit run store (table {bad[0]!r} missing or changed)")
        return "marked"
    if tables == KNOWN_TABLES:
        return "legacy"
    listed = ", ".join(sorted(tables)) or "none"
    raise RefusalkitError(f"{db} is not a refusalkit run store (its tables: {listed})")


class RunStore:
    """A run directory backed by SQLite. Use as a context manager or call :meth:`close`.

    ``RunStore(dir)`` opens for writing, creating the directory and the database when missing.
    ``RunStore(dir, readonly=True)`` (or :meth:`open_readonly`) opens an existing store without
    changing anything. Both refuse a database that refusalkit did not create, and both report a
    corrupt database or bad stored JSON as RefusalkitError (one line naming the file).
    """

    def __init__(self, run_dir: str | os.PathLike, *, readonly: bool = False):
        self.dir = Path(run_dir)
        self.db = self.dir / DB_NAME
        self.readonly = readonly
        if readonly:
            if not self.db.is_file():
                raise RefusalkitError(f"{self.dir} is not a refusalkit run directory (no {DB_NAME})")
            # mode=ro: SQLite opens the file read-only and never creates tables or switches its journal
            self.conn = self._connect(f"{self.db.resolve().as_uri()}?mode=ro", uri=True)
            with self._guard():
                self.kind = check_store(self.conn, self.db, allow_empty=False)
            return
        if self.dir.exists() and not self.dir.is_dir():
            raise RefusalkitError(f"run directory {self.dir} exists and is not a directory")
        if self.db.exists() and not self.db.is_file():
            raise RefusalkitError(f"{self.db} exists and is not a file")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RefusalkitError(f"cannot create run directory {self.dir}: {e.strerror or e}") from None
        self.conn = self._connect(str(self.db))
        with self._guard():
            # checked before anything is written: an unrelated database is left exactly as it was
            self.kind = check_store(self.conn, self.db, allow_empty=True)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)
            if self.kind != "marked":
                self.conn.execute(f"INSERT INTO {MARK_TABLE} VALUES (?, ?)", (STORE_MARK, STORE_VERSION))
            self.conn.commit()

    @classmethod
    def open_readonly(cls, run_dir: str | os.PathLike) -> RunStore:
        """Return the existing store in ``run_dir`` opened read-only (for show, list and export)."""
        return cls(run_dir, readonly=True)

    def _connect(self, target: str, *, uri: bool = False) -> sqlite3.Connection:
        try:
            return sqlite3.connect(target, timeout=30, uri=uri)
        except sqlite3.Error as e:
            raise RefusalkitError(f"{self.db}: cannot open the run store ({e})") from None

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn SQLite errors (a corrupt or foreign file) into one-line RefusalkitErrors naming the file."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            raise RefusalkitError(f"{self.db}: not a readable refusalkit run store ({e})") from None

    def _loads(self, text: Any, what: str) -> Any:
        try:
            return json.loads(text)
        except (TypeError, json.JSONDecodeError) as e:
            raise RefusalkitError(f"{self.db}: bad stored JSON in {what} ({e})") from None

    def _record(self, cls: Any, text: Any, what: str) -> Any:
        d = self._loads(text, what)
        if not isinstance(d, dict) or not isinstance(d.get("id"), str):
            raise RefusalkitError(f"{self.db}: bad stored record in {what} (not an object with an 'id')")
        try:
            return cls.from_dict(d)
        except TypeError as e:
            raise RefusalkitError(f"{self.db}: bad stored record in {what} ({e})") from None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the database; a store opened for writing goes back to a single file (no -wal/-shm)."""
        if not self.readonly:
            # Back to the rollback journal so the store at rest is one file, and read-only opens (which
            # would otherwise create -wal/-shm files) leave the folder as it is. Another open connection
            # makes this fail harmlessly: the database then stays in WAL mode.
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA busy_timeout=200")  # do not wait long for a reader to finish
                self.conn.execute("PRAGMA journal_mode=DELETE")
        self.conn.close()

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._guard():
            return self.conn.execute(sql, params).fetchall()

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        if self.readonly:
            raise RefusalkitError(f"{self.db} is open read-only")
        with self._guard(), self.conn:
            return self.conn.executemany(sql, rows).rowcount

    # --- metadata -------------------------------------------------------------------------------------
    def get_meta(self) -> dict[str, Any]:
        """Return the run's metadata as a dict."""
        return {k: self._loads(v, f"meta key {k!r}") for k, v in self._all("SELECT key, value FROM meta")}

    def set_meta(self, **values: Any) -> None:
        """Store metadata values (JSON-encoded), replacing existing keys."""
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()])

    def init_run(self, key: str, examples: list[Example], *, dir_option: str = "--run-dir", **meta: Any) -> None:
        """Record a new run's key, metadata and inputs, or check that an existing run has the same key.

        Raises RefusalkitError when the directory holds a different run (``dir_option`` names the
        command-line option that chose the directory, for the message).
        """
        existing = self.get_meta().get("key")
        if existing is not None and existing != key:
            raise RefusalkitError(
                f"{self.dir} holds a different run (other model, prompts or generation settings); "
                f"choose another {dir_option} or pass --fresh to start over"
            )
        if existing is None:
            if self.readonly:
                raise RefusalkitError(f"{self.db} is open read-only")
            with self._guard(), self.conn:
                self.conn.executemany(
                    "INSERT INTO inputs VALUES (?, ?, ?)",
                    [(i, ex.id, json.dumps(ex.to_dict())) for i, ex in enumerate(examples)],
                )
                self.conn.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [
                        (k, json.dumps(v))
                        for k, v in {**meta, "key": key, "created": time.time(), "n_inputs": len(examples)}.items()
                    ],
                )

    # --- inputs and responses ---------------------------------------------------------------------------
    def inputs(self) -> list[Example]:
        """Return the run's inputs in their original order."""
        return [
            self._record(Example, r, f"input {i}") for i, r in self._all("SELECT idx, example FROM inputs ORDER BY idx")
        ]

    def done_ids(self) -> set[str]:
        """Return the ids that already have a response."""
        return {r for (r,) in self._all("SELECT id FROM responses")}

    def pending(self) -> list[Example]:
        """Return the inputs without a response yet, in input order."""
        return [
            self._record(Example, r, f"input {i}")
            for i, r in self._all(
                "SELECT idx, example FROM inputs WHERE id NOT IN (SELECT id FROM responses) ORDER BY idx"
            )
        ]

    def add_responses(self, responses: Iterable[Response]) -> None:
        """Commit a batch of responses in one transaction (an id already stored is kept, not duplicated)."""
        now = time.time()
        self._write(
            "INSERT OR IGNORE INTO responses VALUES (?, ?, ?)",
            [(r.id, json.dumps(r.to_dict(), ensure_ascii=False), now) for r in responses],
        )

    def responses(self) -> list[Response]:
        """Return the stored responses in input order."""
        return [
            self._record(Response, r, f"response {i!r}")
            for i, r in self._all("SELECT r.id, r.record FROM responses r JOIN inputs i ON i.id = r.id ORDER BY i.idx")
        ]

    def iter_response_dicts(self) -> Iterator[dict[str, Any]]:
        """Yield stored responses as dicts, in input order (for streaming exports)."""
        with self._guard():
            cur = self.conn.execute(
                "SELECT r.id, r.record FROM responses r JOIN inputs i ON i.id = r.id ORDER BY i.idx"
            )
            for i, r in cur:
                d = self._loads(r, f"response {i!r}")
                if not isinstance(d, dict):
                    raise RefusalkitError(f"{self.db}: bad stored record in response {i!r} (not an object)")
                yield d

    # --- verdicts -----------------------------------------------------------------------------------------
    def add_verdicts(self, detector: str, verdicts: Iterable[dict[str, Any]]) -> None:
        """Commit a batch of verdict dicts (each with ``id``) for ``detector``; re-judging replaces."""
        self._write(
            "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?)",
            [(v["id"], detector, json.dumps(v, ensure_ascii=False)) for v in verdicts],
        )

    def clear_verdicts(self, detector: str) -> int:
        """Delete every verdict of ``detector`` (to judge the stored responses again); return how many."""
        return self._write("DELETE FROM verdicts WHERE detector = ?", [(detector,)])

    def verdicts(self, detector: str) -> dict[str, dict[str, Any]]:
        """Return ``{id: verdict dict}`` for ``detector``."""
        return {
            i: self._loads(r, f"verdict {i!r}")
            for i, r in self._all("SELECT id, record FROM verdicts WHERE detector = ?", (detector,))
        }

    def counts(self) -> dict[str, int]:
        """Return the numbers of inputs, responses and verdict rows."""
        return {t: self._all(f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("inputs", "responses", "verdicts")}


def list_runs(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Return a summary (dir, name, kind, model, counts, created) of every run directory under ``root``,
    opened read-only; a folder whose ``run.sqlite`` cannot be read gets an ``error`` entry instead."""
    base = Path(root) if root else runs_root()
    out: list[dict[str, Any]] = []
    if not base.is_dir():
        return out
    for d in sorted(base.iterdir()):
        if not (d / DB_NAME).is_file():
            continue
        try:
            with RunStore.open_readonly(d) as st:
                meta = st.get_meta()
                out.append(
                    {
                        "dir": str(d),
                        "name": d.name,
                        "kind": meta.get("kind"),
                        "model": meta.get("model"),
                        "input": meta.get("input"),
                        "created": meta.get("created"),
                        **st.counts(),
                    }
                )
        except RefusalkitError as e:
            out.append({"dir": str(d), "name": d.name, "error": str(e)})
    return out
