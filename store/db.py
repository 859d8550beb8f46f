"""The server's one read-write DuckDB connection: a single-writer lock, group commit, reads.

Why a writer thread: every DuckDB commit writes and fsyncs the WAL (~5 ms here), so one commit
per call would cap the whole server at ~200 writes/s however many threads it has. Every write
goes through `Database.write(fn)`: a single thread takes all writes waiting at that moment, runs
them in ONE transaction, commits, and only then answers each caller. A call that returned has
therefore been committed (durable against SIGKILL and power loss); a call that raised wrote
nothing. If one write of a batch fails, the batch is rolled back and each write is re-run in its
own transaction, so one bad write never takes its neighbours down with it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb

from errors import AssistantError, StoreError

if TYPE_CHECKING:
    from config import Config

log = logging.getLogger(__name__)
T = TypeVar("T")
Cursor = duckdb.DuckDBPyConnection

DB_FILENAME = "assistant.duckdb"
MAX_BATCH = 256
"""Most waiting writes committed together in one transaction."""


def one_row(cur: Cursor) -> tuple[Any, ...]:
    """The row a statement that always yields one (an aggregate, INSERT ... RETURNING count)
    returned."""
    row = cur.fetchone()
    if row is None:
        raise StoreError("the database returned no row where one was expected")
    return row


def database_path(cfg: Config) -> Path:
    """Where the server's database lives: `<data_dir>/assistant.duckdb`."""
    return cfg.data_dir / DB_FILENAME


def lock_path(path: Path) -> Path:
    """The pid/lock file beside the database (holds the PID of the process that owns it)."""
    return path.with_name(path.name + ".pid")


class _Job:
    __slots__ = ("fn", "done", "result", "error")

    def __init__(self, fn: Callable[[Cursor], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


_STOP = _Job(lambda cur: None)


class Database:
    """One read-write DuckDB connection for the whole server process, safe for many threads.

    Use `write(fn)` for anything that changes data (fn receives a cursor inside an open
    transaction) and `reader()` for queries. Build it with `open_database`.
    """

    def __init__(self, path: Path, conn: Cursor, lock_fd: int) -> None:
        self.path = path
        self._conn = conn
        self._lock_fd = lock_fd
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._writer = threading.Thread(target=self._write_loop, name="duckdb-writer", daemon=True)
        self._wcur = conn.cursor()
        self._writer.start()

    # ---- writes ------------------------------------------------------------------------------

    def write(self, fn: Callable[[Cursor], T]) -> T:
        """Run `fn(cursor)` in a write transaction and return its result once committed.

        `fn` must only touch the database (it may be re-run after a neighbour's failure) and
        must not call `write` itself. Domain errors it raises reach the caller unchanged;
        DuckDB errors become StoreError.
        """
        if threading.current_thread() is self._writer:
            raise RuntimeError("Database.write called from inside a write function")
        job = _Job(fn)
        with self._close_lock:  # a job queued before close's stop marker is always run
            if self._closed:
                raise StoreError(
                    f"database {self.path} is closed: open it again with open_database"
                )
            self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    def _write_loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in batch
            jobs = [job for job in batch if job is not _STOP]
            if jobs:
                self._run_batch(jobs)
            if stop:
                return

    def _run_batch(self, jobs: list[_Job]) -> None:
        if len(jobs) > 1:
            try:
                self._wcur.execute("BEGIN TRANSACTION")
                results = [job.fn(self._wcur) for job in jobs]
                self._wcur.execute("COMMIT")
            except BaseException:
                self._rollback()
            else:
                for job, result in zip(jobs, results, strict=True):
                    job.result = result
                    job.done.set()
                return
        for job in jobs:  # one at a time: alone, or re-run after a failed batch
            try:
                self._wcur.execute("BEGIN TRANSACTION")
                job.result = job.fn(self._wcur)
                self._wcur.execute("COMMIT")
            except AssistantError as exc:
                self._rollback()
                job.error = exc
            except duckdb.Error as exc:
                self._rollback()
                job.error = StoreError(
                    f"database write failed and was rolled back: {exc}. "
                    "Nothing was saved; retry, and check the disk if it "
                    "persists"
                )
            except BaseException as exc:  # a bug: hand the real exception to the caller
                self._rollback()
                job.error = exc
            job.done.set()

    def _rollback(self) -> None:
        try:
            self._wcur.execute("ROLLBACK")
        except duckdb.Error:
            pass  # no transaction was open (BEGIN itself failed)

    # ---- reads -------------------------------------------------------------------------------

    @contextmanager
    def reader(self) -> Iterator[Cursor]:
        """A fresh cursor for queries; it sees every write that has returned."""
        if self._closed:
            raise StoreError(f"database {self.path} is closed: open it again with open_database")
        cur = self._conn.cursor()
        try:
            yield cur
        except duckdb.Error as exc:
            raise StoreError(f"database query failed: {exc}") from exc
        finally:
            cur.close()

    # ---- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Finish pending writes, close the connection and release the single-writer lock."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._writer.join()
        self._wcur.close()
        self._conn.close()
        try:
            os.ftruncate(self._lock_fd, 0)
        finally:
            os.close(self._lock_fd)  # closing the descriptor releases the flock

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _holder_message(path: Path, pid: str | None) -> str:
    who = f"process {pid}" if pid else "another process"
    return (
        f"the database {path} is in use by {who}: only one process may write it. Stop the "
        "server (or that process) first, or use the server's admin API while it runs"
    )


def _take_lock(path: Path) -> int:
    """flock the pid file beside the database; the kernel drops it when the holder dies, so a
    pid file left by a killed process (a stale lock) never blocks a restart."""
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or None
        os.close(fd)
        raise StoreError(_holder_message(path, pid)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def open_database(path: Path) -> Database:
    """Open (creating folders and file as needed) and migrate the database at `path`.

    Raises StoreError naming the holder's PID when another process has it open.
    """
    from store.migrations import apply_migrations

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the data folder {path.parent}: {exc}") from None
    fd = _take_lock(path)
    try:
        conn = duckdb.connect(str(path))
    except duckdb.Error as exc:
        os.close(fd)
        # Someone outside this product (a duckdb shell, a notebook) holds DuckDB's own lock.
        match = re.search(r"PID (\d+)", str(exc))
        if "lock" in str(exc).lower():
            raise StoreError(_holder_message(path, match.group(1) if match else None)) from None
        raise StoreError(
            f"cannot open the database {path}: {exc}. If the file is damaged, "
            "restore it from a backup or move it aside"
        ) from None
    try:
        apply_migrations(conn)
    except BaseException:
        conn.close()
        os.close(fd)
        raise
    return Database(path, conn, fd)
