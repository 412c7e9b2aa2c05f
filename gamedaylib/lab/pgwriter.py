"""A writer committing continuously through a DSN and remembering every acknowledged commit: the ground
truth for "confirmed writes lost" in the failover cluster's tests and benchmark.

``CommitWriter(dsn, rate=200.0)``: ``start()`` creates its table (``gameday_pg_writes``) and starts a
thread that inserts one row per commit (autocommit, at most ``rate`` per second), reconnecting after any
error. Each acknowledged commit is an ``Ack`` (sequence number, the PostgreSQL port that answered, when).
A commit still running after ``statement_timeout_ms`` is cancelled from the client (PostgreSQL's
``statement_timeout`` is off while a commit waits for a synchronous standby, forever on an orphaned
primary); a commit whose wait was cut short that way is committed locally but not replicated:
PostgreSQL reports success with a warning, so it is kept apart (``unconfirmed``), not counted as
acknowledged. ``stop()`` ends the thread; ``lost(dsn)`` returns the
acknowledged sequence numbers missing from the table as read through ``dsn`` afterwards.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg

from gamedaylib.exceptions import LabError
from gamedaylib.lab.pgclient import SYNC_WAIT_CANCELLED, cancel

__all__ = [
    "Ack",
    "CommitWriter",
]

TABLE = "gameday_pg_writes"


@dataclass(frozen=True)
class Ack:
    """One acknowledged commit."""

    seq: int
    port: int  # inet_server_port() of the PostgreSQL that committed it
    at: datetime


@dataclass
class CommitWriter:
    """Commits rows through ``dsn`` until stopped; see the module docstring."""

    dsn: str
    rate: float = 200.0
    statement_timeout_ms: int = 5000
    connect_timeout: int = 2
    writer_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    acks: list[Ack] = field(default_factory=list)
    unconfirmed: list[int] = field(default_factory=list)
    errors: int = 0
    last_error: str = ""

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._lock = threading.Lock()
        self._busy: tuple[psycopg.Connection[Any], float] | None = None  # connection, deadline

    def _watch(self) -> None:
        """Cancel a commit that runs past ``statement_timeout_ms`` (PostgreSQL's own timeout does not
        cover a commit's wait for a synchronous standby)."""
        while not self._stop.wait(0.1):
            busy = self._busy
            if busy is not None and time.monotonic() > busy[1]:
                cancel(busy[0])
                self._stop.wait(0.5)

    def _connect(self, notices: list[str]) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=self.connect_timeout,
                               options=f"-c statement_timeout={self.statement_timeout_ms}")
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        return conn

    def start(self, timeout: float = 30.0) -> CommitWriter:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self._connect([]) as conn:
                    conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {TABLE} (writer text NOT NULL, seq bigint NOT NULL, "
                        "at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (writer, seq))"
                    )
                break
            except psycopg.Error as exc:
                if time.monotonic() > deadline:
                    raise LabError(f"the writer could not create {TABLE}: {exc}") from exc
                time.sleep(0.2)
        self._thread = threading.Thread(target=self._run, name=f"commit-writer-{self.writer_id}", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name=f"commit-watchdog-{self.writer_id}", daemon=True)
        self._thread.start()
        self._watchdog.start()
        return self

    def _run(self) -> None:
        seq = 0
        conn: psycopg.Connection[Any] | None = None
        notices: list[str] = []
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                if conn is None:
                    notices = []
                    conn = self._connect(notices)
                seq += 1
                notices.clear()
                self._busy = (conn, time.monotonic() + self.statement_timeout_ms / 1000)
                try:
                    row = conn.execute(
                        f"INSERT INTO {TABLE} (writer, seq) VALUES (%s, %s) RETURNING inet_server_port()",
                        (self.writer_id, seq),
                    ).fetchone()
                finally:
                    self._busy = None
                at = datetime.now(timezone.utc)
                with self._lock:
                    if any(SYNC_WAIT_CANCELLED in n for n in notices):
                        self.unconfirmed.append(seq)
                    else:
                        self.acks.append(Ack(seq, int(row[0]) if row and row[0] else 0, at))
            except psycopg.Error as exc:
                with self._lock:
                    self.errors += 1
                    self.last_error = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                if conn is not None:
                    conn.close()
                    conn = None
                self._stop.wait(0.05)
            next_at = max(next_at + interval, time.monotonic() - 1.0)
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
        if conn is not None:
            conn.close()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for thread in (self._thread, self._watchdog):
            if thread is not None:
                thread.join(timeout)
                if thread.is_alive():
                    raise LabError(f"the commit writer did not stop within {timeout:g}s")

    def snapshot(self) -> list[Ack]:
        with self._lock:
            return list(self.acks)

    def lost(self, dsn: str | None = None) -> list[int]:
        """Acknowledged sequence numbers not in the table as read through ``dsn`` (default: the
        writer's own DSN)."""
        acked = [a.seq for a in self.snapshot()]
        try:
            with psycopg.connect(dsn or self.dsn, autocommit=True, connect_timeout=self.connect_timeout) as conn:
                rows = conn.execute(
                    f"SELECT seq FROM {TABLE} WHERE writer = %s AND seq = ANY(%s)", (self.writer_id, acked)
                ).fetchall()
        except psycopg.Error as exc:
            raise LabError(f"could not read {TABLE} to count lost writes: {exc}") from exc
        found = {r[0] for r in rows}
        return [s for s in acked if s not in found]
