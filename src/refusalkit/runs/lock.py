"""``RunLock``: one writer per run directory, through an exclusive ``flock`` on ``DIR/run.lock``.

The kernel drops the lock when its process ends, however it ends (SIGKILL included), so a stale lock
file never blocks a rerun. The holder writes its pid into the file so a second process can say who
holds the run, and removes the file when it lets go.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from refusalkit.errors import RefusalkitError

LOCK_NAME = "run.lock"


class RunInUseError(RefusalkitError):
    """Another process holds the run directory's lock."""


class RunLock:
    """An exclusive lock on a run directory. Use as a context manager, or call :meth:`acquire` and
    :meth:`release`. ``wait=True`` blocks until the lock is free instead of raising RunInUseError."""

    def __init__(self, run_dir: str | os.PathLike, *, wait: bool = False):
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK_NAME
        self.wait = wait
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock and return self; raise RunInUseError (naming the holder's pid) when it is held."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise RefusalkitError(f"cannot create the lock file {self.path}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"pid {holder}" if holder else "another process"
                raise RunInUseError(
                    f"run {self.dir} is in use by {who}; wait for it to finish or choose another run directory"
                ) from None
            # The previous holder removes the file when it lets go: if that happened between our open and
            # our flock, we locked a file nobody else will see, so start again on the current one.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and let go of the lock (the removal happens while it is still held)."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
