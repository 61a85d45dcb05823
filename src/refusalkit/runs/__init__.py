"""Runs: the run store (one SQLite file per run directory), resumable generation and ``run_resumable``,
the sequence every command uses to generate into a run directory. Imports only ``data`` and ``models``."""

from refusalkit.runs.generation import default_run_dir, generate_into_store, run_key
from refusalkit.runs.lock import RunInUseError, RunLock
from refusalkit.runs.resumable import STORE_FILES, RunProgress, RunResult, remove_store_files, run_resumable
from refusalkit.runs.store import DB_NAME, RunStore, list_runs, resolve_run, runs_root

__all__ = [
    "DB_NAME",
    "STORE_FILES",
    "RunInUseError",
    "RunLock",
    "RunProgress",
    "RunResult",
    "RunStore",
    "default_run_dir",
    "generate_into_store",
    "list_runs",
    "remove_store_files",
    "resolve_run",
    "run_key",
    "run_resumable",
    "runs_root",
]
