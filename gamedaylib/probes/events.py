"""The runbook's only access to the events table (psycopg 3, sync), with index-friendly queries.

Every query here is written so that PostgreSQL can answer it from the indexes in
``gamedaylib/sql/indexes.sql`` on a table of millions of rows (``docs/performance.md`` has the plans
and timings on 10 million rows):

- windows of time (``count_since``, ``per_minute``, ``duplicates``, ``window_stats``) are ranges on
  ``created_at`` (``events_created_at_idx``),
- ``critical_types`` is an index-only scan of ``(type, created_at)`` per type,
- ``lookup_keys`` and ``account_keys`` copy the keys into a temporary table with ``COPY`` and join
  once on ``idempotency_key`` (an index probe per key inside the server, index-only for
  ``account_keys``): one statement for a million keys instead of a million round trips.

Errors become :class:`~gamedaylib.exceptions.ProbeError` with a readable reason (server down,
authentication, missing table, timeout). The DSN's password never appears in a message or a repr.

Times: pass timezone-aware datetimes; a naive datetime is taken as UTC. Results are aware (UTC).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any, TypeVar

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import errors as pg_errors

from gamedaylib.exceptions import ProbeError

T = TypeVar("T")

__all__ = [
    "EventsStore",
    "IndexSpec",
    "KeyAccounting",
    "KeyInfo",
    "required_indexes",
]

_PROBE = "events"
TABLE = "events"
_KEYS_TABLE = "gameday_keys"  # temporary, per session, dropped at commit

_INDEX_RE = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>\w+)\s+"
    r"ON\s+(?:ONLY\s+)?(?P<table>[\w.]+)\s*(?:USING\s+\w+\s*)?\((?P<cols>[^)]*)\)[^;]*;",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class KeyInfo:
    """What the table holds for one idempotency key (count 0 = lost: never stored)."""

    count: int
    first_created_at: datetime | None
    last_created_at: datetime | None


@dataclass(frozen=True)
class KeyAccounting:
    """Loss and duplicate accounting of a set of keys against the table, computed in the database."""

    keys: int  # distinct keys asked about
    stored: int  # keys found at least once
    lost: int  # keys never stored
    duplicated: int  # keys stored more than once
    extra_rows: int  # rows beyond the first for duplicated keys
    lost_keys: tuple[str, ...]  # at most ``limit`` of them, sorted
    duplicated_keys: tuple[tuple[str, int], ...]  # (key, rows), at most ``limit``, most rows first


@dataclass(frozen=True)
class IndexSpec:
    """An index the runbook relies on: its leading columns, and the DDL that creates it."""

    name: str
    columns: tuple[str, ...]
    ddl: str


def required_indexes() -> tuple[IndexSpec, ...]:
    """The indexes of ``gamedaylib/sql/indexes.sql``, in file order."""
    text = resources.files("gamedaylib").joinpath("sql", "indexes.sql").read_text(encoding="utf-8")
    code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    specs = []
    for match in _INDEX_RE.finditer(code):
        cols = tuple(c.strip().split()[0].strip('"').lower() for c in match["cols"].split(",") if c.strip())
        ddl = " ".join(match.group(0).split())
        specs.append(IndexSpec(match["name"], cols, ddl))
    return tuple(specs)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _distinct(keys: Sequence[str]) -> Sequence[str]:
    """``keys`` without repeats (the input itself when it has none; the order is then kept)."""
    unique = set(keys)
    return keys if len(unique) == len(keys) else list(unique)


def _copy_text(keys: Sequence[str]) -> str:
    """The keys as COPY text format, one per line, escaped only when needed."""
    text = "\n".join(keys)
    if "\\" in text or "\t" in text or "\r" in text or text.count("\n") != len(keys) - 1:
        text = "\n".join(
            k.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
            for k in keys
        )
    return text + "\n" if keys else ""


class EventsStore:
    """The events table of a target, reached through ``dsn`` (a libpq URL or key=value string).

    The connection is opened on first use and reopened after the server went away. Safe to share
    between the notebook and a sampler thread (one statement at a time).
    """

    def __init__(self, dsn: str, connect_timeout: float = 3.0, *, statement_timeout: float = 30.0) -> None:
        self._dsn = dsn
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.RLock()
        try:
            info = pg_conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise ProbeError(_PROBE, "the events DSN is not a valid PostgreSQL connection string") from exc
        self._password = str(info.get("password") or "")
        self._options = str(info.get("options") or "")  # kept: ours are appended
        host, port = info.get("host") or "localhost", info.get("port") or "5432"
        self.where = f"{info.get('user') or '?'}@{host}:{port}/{info.get('dbname') or '?'}"

    def __repr__(self) -> str:
        return f"EventsStore({self.where!r})"

    # -- connection and errors ------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        text = " ".join(str(text).split())
        if len(self._password) >= 3:
            text = text.replace(self._password, "***")
        return text.replace(self._dsn, self.where) if self._dsn else text

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self._drop_connection()
        timeout_ms = max(1, int(self.statement_timeout * 1000))
        try:
            conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=max(1, round(self.connect_timeout)),
                options=f"{self._options} -c statement_timeout={timeout_ms} -c TimeZone=UTC".strip(),
                application_name="gameday-events-probe",
            )
        except psycopg.OperationalError as exc:
            raise ProbeError(_PROBE, self._connect_reason(exc)) from exc
        except psycopg.Error as exc:
            raise ProbeError(_PROBE, f"cannot connect to {self.where}: {self._scrub(str(exc))}") from exc
        self._conn = conn
        return conn

    def _connect_reason(self, exc: psycopg.OperationalError) -> str:
        msg = self._scrub(str(exc))
        low = msg.lower()
        if "password authentication failed" in low or "authentication failed" in low:
            return f"authentication failed for {self.where} (check the user and password of the DSN)"
        if "no password supplied" in low:
            return f"authentication failed for {self.where}: the server wants a password, the DSN has none"
        if "does not exist" in low and "database" in low:
            return f"database of {self.where} does not exist: {msg}"
        if "refused" in low:
            return f"PostgreSQL at {self.where} refused the connection (server down or wrong port)"
        if "timeout" in low or "timed out" in low:
            return f"PostgreSQL at {self.where} did not answer within {self.connect_timeout:g}s"
        return f"cannot connect to {self.where}: {msg}"

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            conn.close()

    def _fail(self, exc: psycopg.Error, what: str) -> ProbeError:
        if isinstance(exc, pg_errors.UndefinedTable):
            return ProbeError(_PROBE, f"table {TABLE!r} does not exist in {self.where} ({what})")
        if isinstance(exc, pg_errors.UndefinedColumn):
            return ProbeError(_PROBE, f"table {TABLE!r} lacks a column the runbook reads ({what}): "
                                      f"{self._scrub(str(exc))}")
        if isinstance(exc, pg_errors.QueryCanceled):
            return ProbeError(_PROBE, f"{what} exceeded the statement timeout of {self.statement_timeout:g}s")
        if isinstance(exc, pg_errors.InsufficientPrivilege):
            return ProbeError(_PROBE, f"permission denied for {what}: {self._scrub(str(exc))}")
        if isinstance(exc, psycopg.OperationalError):
            self._drop_connection()
            return ProbeError(_PROBE, f"lost the connection to {self.where} during {what}: "
                                      f"{self._scrub(str(exc))}")
        return ProbeError(_PROBE, f"{what} failed: {self._scrub(str(exc))}")

    def _connected(self) -> bool:
        return self._conn is not None and not self._conn.closed and not self._conn.broken

    def _query(self, what: str, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        return self._on_connection(what, lambda conn: conn.execute(sql, params).fetchall())

    def _on_connection(self, what: str, work: Callable[[psycopg.Connection], T]) -> T:
        """``work(connection)`` under the lock; an idle connection that died meanwhile gets one fresh try."""
        with self._lock:
            for retry in (True, False):
                reused = self._connected()
                conn = self._connect()
                try:
                    return work(conn)
                except psycopg.OperationalError as exc:
                    if retry and reused:
                        self._drop_connection()
                        continue
                    raise self._fail(exc, what) from exc
                except psycopg.Error as exc:
                    raise self._fail(exc, what) from exc
            raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the connection (the store reconnects if used again)."""
        with self._lock:
            self._drop_connection()

    def __enter__(self) -> EventsStore:  # noqa: PYI034 (Python 3.10 has no typing.Self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the runbook's queries ------------------------------------------------------------------
    def count_since(self, since: datetime) -> int:
        """Rows stored at or after ``since``."""
        rows = self._query("count since", f"SELECT count(*) FROM {TABLE} WHERE created_at >= %s", (_utc(since),))
        return int(rows[0][0])

    def per_minute(self, since: datetime, until: datetime) -> list[tuple[datetime, int]]:
        """Rows stored per minute in ``[since, until)``, one entry per minute (zeros included)."""
        since, until = _utc(since), _utc(until)
        rows = self._query(
            "events per minute",
            f"SELECT date_trunc('minute', created_at) AS minute, count(*) FROM {TABLE} "
            "WHERE created_at >= %s AND created_at < %s GROUP BY 1 ORDER BY 1",
            (since, until),
        )
        counts = {m: int(n) for m, n in rows}
        out: list[tuple[datetime, int]] = []
        minute = since.astimezone(timezone.utc).replace(second=0, microsecond=0)
        while minute < until:
            out.append((minute, counts.get(minute, 0)))
            minute += timedelta(minutes=1)
        return out

    def duplicates(self, since: datetime, until: datetime) -> list[tuple[str, int]]:
        """Idempotency keys stored more than once in ``[since, until)``, with their row counts."""
        rows = self._query(
            "duplicate scan",
            f"SELECT idempotency_key, count(*) FROM {TABLE} "
            "WHERE created_at >= %s AND created_at < %s AND idempotency_key IS NOT NULL "
            "GROUP BY idempotency_key HAVING count(*) > 1 ORDER BY count(*) DESC, idempotency_key",
            (_utc(since), _utc(until)),
        )
        return [(str(k), int(n)) for k, n in rows]

    def critical_types(self, since: datetime, types: Iterable[str]) -> dict[str, int]:
        """Rows of each of ``types`` stored at or after ``since`` (every type present, 0 when none)."""
        wanted = list(dict.fromkeys(types))
        if not wanted:
            return {}
        rows = self._query(
            "critical event types",
            f"SELECT type, count(*) FROM {TABLE} WHERE type = ANY(%s) AND created_at >= %s GROUP BY type",
            (wanted, _utc(since)),
        )
        found = {str(t): int(n) for t, n in rows}
        return {t: found.get(t, 0) for t in wanted}

    def window_stats(self, since: datetime) -> tuple[datetime | None, datetime | None, int]:
        """``(min created_at, max created_at, rows)`` of the rows stored at or after ``since``."""
        rows = self._query(
            "window stats",
            f"SELECT min(created_at), max(created_at), count(*) FROM {TABLE} WHERE created_at >= %s",
            (_utc(since),),
        )
        first, last, count = rows[0]
        return first, last, int(count)

    # -- keys: set-based -----------------------------------------------------------------------
    def _with_keys(self, what: str, keys: Sequence[str], statements: Sequence[tuple[str, tuple[Any, ...]]]
                   ) -> list[list[tuple[Any, ...]]]:
        """Load ``keys`` (distinct) into a temporary table with COPY, run ``statements``, drop it."""
        return self._on_connection(what, lambda conn: self._with_keys_on(conn, keys, statements))

    @staticmethod
    def _with_keys_on(conn: psycopg.Connection[Any], keys: Sequence[str],
                      statements: Sequence[tuple[str, tuple[Any, ...]]]) -> list[list[tuple[Any, ...]]]:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(f"CREATE TEMPORARY TABLE {_KEYS_TABLE} (k text NOT NULL) ON COMMIT DROP")
            with cur.copy(f"COPY {_KEYS_TABLE} (k) FROM STDIN") as copy:
                payload = _copy_text(keys)
                step = 8 * 1024 * 1024
                for start in range(0, len(payload), step):
                    copy.write(payload[start:start + step])
            cur.execute("SET LOCAL jit = off")  # compiling costs more than it saves here
            results = []
            for sql, params in statements:
                cur.execute(sql, params)
                results.append(cur.fetchall())
            return results

    def lookup_keys(self, keys: Sequence[str]) -> dict[str, KeyInfo]:
        """Every key of ``keys`` with how often and when it was stored (``KeyInfo(0, None, None)`` = lost).

        One COPY and one join, however many keys: each key is probed in the server through
        ``events_idempotency_key_idx``.
        """
        (rows,) = self._with_keys("key lookup", _distinct(keys), [(
            (f"SELECT t.k, c.n, c.first, c.last FROM {_KEYS_TABLE} t CROSS JOIN LATERAL "
             f"(SELECT count(*) AS n, min(e.created_at) AS first, max(e.created_at) AS last FROM {TABLE} e "
             "WHERE e.idempotency_key = t.k) c WHERE c.n > 0"),
            (),
        )])
        found = {str(k): KeyInfo(int(n), first, last) for k, n, first, last in rows}
        missing = KeyInfo(0, None, None)
        return {k: found.get(k, missing) for k in keys}

    def account_keys(self, keys: Sequence[str], *, limit: int = 1000) -> KeyAccounting:
        """Loss and duplicate accounting of ``keys``, computed in the database in one statement.

        The keys go into a temporary table with COPY; one join counts each key's rows through an
        index-only probe of ``events_idempotency_key_idx`` and sends back only the anomalies (keys
        stored 0 times: lost, the anti-join; or more than once: duplicated). At most ``limit`` of
        each are kept in the result, sorted; the counts are exact.
        """
        distinct = _distinct(keys)
        (rows,) = self._with_keys("key accounting", distinct, [(
            (f"SELECT t.k, c.n FROM {_KEYS_TABLE} t CROSS JOIN LATERAL "
             f"(SELECT count(*) AS n FROM {TABLE} e WHERE e.idempotency_key = t.k) c WHERE c.n <> 1"),
            (),
        )])
        lost = sorted(str(k) for k, n in rows if n == 0)
        dups = sorted(((str(k), int(n)) for k, n in rows if n > 1), key=lambda kn: (-kn[1], kn[0]))
        return KeyAccounting(
            keys=len(distinct), stored=len(distinct) - len(lost), lost=len(lost), duplicated=len(dups),
            extra_rows=sum(n - 1 for _, n in dups), lost_keys=tuple(lost[:limit]),
            duplicated_keys=tuple(dups[:limit]),
        )

    # -- pre-flight ------------------------------------------------------------------------------
    def check_indexes(self) -> list[str]:
        """DDL of each index of ``indexes.sql`` the table lacks (empty when all are present).

        An index serves when it is a valid, non-partial b-tree whose leading columns are the required
        ones (unique or not). Raises ProbeError when the table itself is missing.
        """
        rows = self._query(
            "index check",
            "SELECT to_regclass(%s) IS NOT NULL",
            (TABLE,),
        )
        if not rows[0][0]:
            raise ProbeError(_PROBE, f"table {TABLE!r} does not exist in {self.where}")
        present = self._query(
            "index check",
            "SELECT ARRAY(SELECT a.attname::text FROM generate_series(0, ix.indnkeyatts - 1) AS n "
            "             LEFT JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = ix.indkey[n] "
            "             ORDER BY n) "
            "FROM pg_index ix JOIN pg_class c ON c.oid = ix.indexrelid JOIN pg_am am ON am.oid = c.relam "
            "WHERE ix.indrelid = to_regclass(%s) AND ix.indisvalid AND ix.indpred IS NULL "
            "AND am.amname = 'btree'",
            (TABLE,),
        )
        have = [tuple(str(c).lower() if c is not None else "" for c in cols) for (cols,) in present]
        return [
            spec.ddl for spec in required_indexes()
            if not any(cols[: len(spec.columns)] == spec.columns for cols in have)
        ]
