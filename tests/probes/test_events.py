"""EventsStore against a real PostgreSQL (started here, as an unprivileged user when we are root)."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gamedaylib.exceptions import ProbeError
from gamedaylib.probes.events import EventsStore, KeyInfo, required_indexes

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-Pa55word"
T0 = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)


def _bench_common() -> Any:
    spec = importlib.util.spec_from_file_location("gameday_bench_common", ROOT / "benchmarks" / "common.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pg() -> Iterator[Any]:
    common = _bench_common()
    root = Path(tempfile.mkdtemp(prefix="gameday-test-events-pg-"))
    server = common.PostgresServer(root, password=PASSWORD)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        import shutil

        shutil.rmtree(root, ignore_errors=True)


# rows: (key, type, seconds after T0)
ROWS = [
    ("once", "page.view", 0),
    ("twice", "buddy.match", 30),
    ("twice", "buddy.match", 95),  # a duplicate, one minute later
    ("late", "report.generated", 150),
    ("old", "kintell.session", -3600),
]


@pytest.fixture(scope="module")
def dsn(pg: Any) -> str:
    url = pg.create_database("gameday")
    ddl = (ROOT / "gamedaylib" / "sql" / "events.sql").read_text()
    ddl = ddl.replace("CREATE UNIQUE INDEX", "CREATE INDEX")  # the lab_idempotency=false shape: duplicates possible
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(ddl)
        for key, typ, secs in ROWS:
            at = T0 + timedelta(seconds=secs)
            conn.execute(
                "INSERT INTO events (idempotency_key, type, payload, occurred_at, created_at) "
                "VALUES (%s, %s, '{}', %s, %s)", (key, typ, at, at),
            )
    return url


@pytest.fixture
def store(dsn: str) -> Iterator[EventsStore]:
    s = EventsStore(dsn)
    try:
        yield s
    finally:
        s.close()


def test_counts_window_and_per_minute(store: EventsStore) -> None:
    assert store.count_since(T0) == 4
    assert store.count_since(T0 + timedelta(seconds=31)) == 2
    first, last, n = store.window_stats(T0)
    assert (first, last, n) == (T0, T0 + timedelta(seconds=150), 4)
    assert store.window_stats(T0 + timedelta(days=1)) == (None, None, 0)
    minutes = store.per_minute(T0, T0 + timedelta(minutes=4))
    assert [m for m, _ in minutes] == [T0 + timedelta(minutes=i) for i in range(4)]
    assert [n for _, n in minutes] == [2, 1, 1, 0]  # zero-filled


def test_naive_datetimes_are_utc(store: EventsStore) -> None:
    assert store.count_since(T0.replace(tzinfo=None)) == 4


def test_lookup_keys_stored_once_twice_and_missing(store: EventsStore) -> None:
    found = store.lookup_keys(["once", "twice", "never", "once"])
    assert list(found) == ["once", "twice", "never"]
    assert found["once"] == KeyInfo(1, T0, T0)
    assert found["twice"] == KeyInfo(2, T0 + timedelta(seconds=30), T0 + timedelta(seconds=95))
    assert found["never"] == KeyInfo(0, None, None)
    assert store.lookup_keys([]) == {}


def test_lookup_keys_with_copy_special_characters(store: EventsStore) -> None:
    odd = ["tab\there", "back\\slash", "new\nline", "once"]
    found = store.lookup_keys(odd)
    assert [found[k].count for k in odd] == [0, 0, 0, 1]


def test_account_keys(store: EventsStore) -> None:
    acc = store.account_keys(["once", "twice", "never", "gone", "late"])
    assert (acc.keys, acc.stored, acc.lost, acc.duplicated, acc.extra_rows) == (5, 3, 2, 1, 1)
    assert acc.lost_keys == ("gone", "never")
    assert acc.duplicated_keys == (("twice", 2),)


def test_duplicates_in_window(store: EventsStore) -> None:
    assert store.duplicates(T0, T0 + timedelta(minutes=5)) == [("twice", 2)]
    # a window that holds only one of the two copies sees no duplicate
    assert store.duplicates(T0 + timedelta(seconds=60), T0 + timedelta(minutes=5)) == []


def test_critical_types(store: EventsStore) -> None:
    got = store.critical_types(T0, ["buddy.match", "kintell.session", "report.generated"])
    assert got == {"buddy.match": 2, "kintell.session": 0, "report.generated": 1}
    assert store.critical_types(T0 - timedelta(hours=2), ["kintell.session"]) == {"kintell.session": 1}


def test_check_indexes_names_the_missing_ddl(store: EventsStore, dsn: str) -> None:
    assert store.check_indexes() == []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP INDEX events_created_at_idx")
        try:
            missing = store.check_indexes()
        finally:
            conn.execute("CREATE INDEX events_created_at_idx ON events (created_at)")
    assert missing == [next(s.ddl for s in required_indexes() if s.name == "events_created_at_idx")]
    assert "ON events (created_at)" in missing[0]
    assert store.check_indexes() == []


def test_an_index_under_another_name_or_unique_serves(store: EventsStore, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER INDEX events_type_created_at_idx RENAME TO my_own_name")
        try:
            assert store.check_indexes() == []
        finally:
            conn.execute("ALTER INDEX my_own_name RENAME TO events_type_created_at_idx")


def test_required_indexes_match_the_lab_table() -> None:
    specs = {s.name: s.columns for s in required_indexes()}
    assert specs == {
        "events_idempotency_key_idx": ("idempotency_key",),
        "events_created_at_idx": ("created_at",),
        "events_type_created_at_idx": ("type", "created_at"),
    }
    lab_sql = (ROOT / "gamedaylib" / "sql" / "events.sql").read_text()
    for name in specs:
        assert name in lab_sql


def test_missing_table(pg: Any) -> None:
    url = pg.create_database("empty")
    with EventsStore(url) as empty:
        with pytest.raises(ProbeError, match="table 'events' does not exist"):
            empty.count_since(T0)
        with pytest.raises(ProbeError, match="does not exist"):
            empty.check_indexes()
        with pytest.raises(ProbeError, match="does not exist"):
            empty.account_keys(["a"])


def test_database_down_is_a_probe_error_without_the_password(pg: Any) -> None:
    dead = f"postgresql://gameday:{PASSWORD}@127.0.0.1:{_closed_port()}/gameday"
    store = EventsStore(dead, connect_timeout=2)
    with pytest.raises(ProbeError) as err:
        store.count_since(T0)
    assert err.value.probe == "events"
    assert "refused" in err.value.reason or "did not answer" in err.value.reason
    assert PASSWORD not in str(err.value) and PASSWORD not in repr(store)
    assert "127.0.0.1" in str(err.value)


def test_wrong_password_is_an_authentication_error(pg: Any) -> None:
    wrong = "not-the-" + PASSWORD
    store = EventsStore(pg.dsn("gameday", password=wrong))
    with pytest.raises(ProbeError, match="authentication failed") as err:
        store.window_stats(T0)
    assert wrong not in str(err.value) and PASSWORD not in str(err.value)


def test_reconnects_after_the_connection_was_killed(store: EventsStore, dsn: str) -> None:
    assert store.count_since(T0) == 4
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name = 'gameday-events-probe'")
    # the dead connection is noticed on use and the query runs again once on a new one (a server that
    # restarted or failed over between two readings is not an unreadable table)
    assert store.count_since(T0) == 4
    assert store.lookup_keys(["k1"])["k1"].count >= 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name = 'gameday-events-probe'")
    assert store.lookup_keys(["k1"])["k1"].count >= 0  # the set-based lookup too


def test_bad_dsn() -> None:
    with pytest.raises(ProbeError, match="not a valid"):
        EventsStore("this is = not a dsn '")


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
