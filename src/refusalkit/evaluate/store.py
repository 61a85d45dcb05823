"""``RunStore``: a run directory with an SQLite database (WAL mode) that commits every finished item.

A run directory holds ``run.sqlite`` with the run's metadata, its inputs, and one row per finished
response (and per verdict, for judged runs). Each batch is committed in one transaction before the next
starts, so a crash or Ctrl-C loses at most the batch in flight and a rerun never duplicates a row.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from refusalkit.data.records import Example, Response
from refusalkit.errors import RefusalkitError

DB_NAME = "run.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inputs (idx INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, example TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, record TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS verdicts (id TEXT NOT NULL, detector TEXT NOT NULL, record TEXT NOT NULL,
                                     PRIMARY KEY (id, detector));
"""


def runs_root() -> Path:
    """Return the default directory that holds runs (``$REFUSALKIT_HOME/runs`` or the user data dir)."""
    env = os.environ.get("REFUSALKIT_HOME")
    if env:
        return Path(env) / "runs"
    from platformdirs import user_data_dir
    return Path(user_data_dir("refusalkit")) / "runs"


class RunStore:
    """A run directory backed by SQLite in WAL mode. Use as a context manager or call :meth:`close`."""

    def __init__(self, run_dir: str | os.PathLike, *, create: bool = True):
        self.dir = Path(run_dir)
        db = self.dir / DB_NAME
        if not create and not db.is_file():
            raise RefusalkitError(f"{self.dir} is not a refusalkit run directory (no {DB_NAME})")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(db, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        self.conn.commit()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection."""
        self.conn.close()

    # --- metadata -------------------------------------------------------------------------------------
    def get_meta(self) -> dict[str, Any]:
        """Return the run's metadata as a dict."""
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def set_meta(self, **values: Any) -> None:
        """Store metadata values (JSON-encoded), replacing existing keys."""
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                  [(k, json.dumps(v)) for k, v in values.items()])

    def init_run(self, key: str, examples: list[Example], **meta: Any) -> None:
        """Record a new run's key, metadata and inputs, or check that an existing run has the same key.

        Raises RefusalkitError when the directory holds a different run.
        """
        existing = self.get_meta().get("key")
        if existing is not None and existing != key:
            raise RefusalkitError(
                f"{self.dir} holds a different run (other model, inputs or settings); "
                "choose another --run-dir or pass --fresh to start over")
        if existing is None:
            with self.conn:
                self.conn.executemany("INSERT INTO inputs VALUES (?, ?, ?)",
                                      [(i, ex.id, json.dumps(ex.to_dict())) for i, ex in enumerate(examples)])
                self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                      [(k, json.dumps(v)) for k, v in
                                       {**meta, "key": key, "created": time.time(),
                                        "n_inputs": len(examples)}.items()])

    # --- inputs and responses ---------------------------------------------------------------------------
    def inputs(self) -> list[Example]:
        """Return the run's inputs in their original order."""
        return [Example.from_dict(json.loads(r)) for (r,) in
                self.conn.execute("SELECT example FROM inputs ORDER BY idx")]

    def done_ids(self) -> set[str]:
        """Return the ids that already have a response."""
        return {r for (r,) in self.conn.execute("SELECT id FROM responses")}

    def pending(self) -> list[Example]:
        """Return the inputs without a response yet, in input order."""
        return [Example.from_dict(json.loads(r)) for (r,) in self.conn.execute(
            "SELECT example FROM inputs WHERE id NOT IN (SELECT id FROM responses) ORDER BY idx")]

    def add_responses(self, responses: Iterable[Response]) -> None:
        """Commit a batch of responses in one transaction (an id already stored is kept, not duplicated)."""
        now = time.time()
        with self.conn:
            self.conn.executemany("INSERT OR IGNORE INTO responses VALUES (?, ?, ?)",
                                  [(r.id, json.dumps(r.to_dict(), ensure_ascii=False), now) for r in responses])

    def responses(self) -> list[Response]:
        """Return the stored responses in input order."""
        return [Response.from_dict(json.loads(r)) for (r,) in self.conn.execute(
            "SELECT r.record FROM responses r JOIN inputs i ON i.id = r.id ORDER BY i.idx")]

    def iter_response_dicts(self) -> Iterator[dict[str, Any]]:
        """Yield stored responses as dicts, in input order (for streaming exports)."""
        for (r,) in self.conn.execute(
                "SELECT r.record FROM responses r JOIN inputs i ON i.id = r.id ORDER BY i.idx"):
            yield json.loads(r)

    # --- verdicts -----------------------------------------------------------------------------------------
    def add_verdicts(self, detector: str, verdicts: Iterable[dict[str, Any]]) -> None:
        """Commit a batch of verdict dicts (each with ``id``) for ``detector``; re-judging replaces."""
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?)",
                                  [(v["id"], detector, json.dumps(v, ensure_ascii=False)) for v in verdicts])

    def clear_verdicts(self, detector: str) -> int:
        """Delete every verdict of ``detector`` (to judge the stored responses again); return how many."""
        with self.conn:
            return self.conn.execute("DELETE FROM verdicts WHERE detector = ?", (detector,)).rowcount

    def verdicts(self, detector: str) -> dict[str, dict[str, Any]]:
        """Return ``{id: verdict dict}`` for ``detector``."""
        return {i: json.loads(r) for i, r in self.conn.execute(
            "SELECT id, record FROM verdicts WHERE detector = ?", (detector,))}

    def counts(self) -> dict[str, int]:
        """Return the numbers of inputs, responses and verdict rows."""
        q = self.conn.execute
        return {"inputs": q("SELECT COUNT(*) FROM inputs").fetchone()[0],
                "responses": q("SELECT COUNT(*) FROM responses").fetchone()[0],
                "verdicts": q("SELECT COUNT(*) FROM verdicts").fetchone()[0]}


def list_runs(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Return a summary (dir, kind, model, counts, created) of every run directory under ``root``."""
    base = Path(root) if root else runs_root()
    out = []
    if not base.is_dir():
        return out
    for d in sorted(base.iterdir()):
        if (d / DB_NAME).is_file():
            with RunStore(d, create=False) as st:
                meta = st.get_meta()
                out.append({"dir": str(d), "name": d.name, "kind": meta.get("kind"), "model": meta.get("model"),
                            "input": meta.get("input"), "created": meta.get("created"), **st.counts()})
    return out
