"""Shared helpers of the benchmark scripts: a throwaway PostgreSQL, timing, the machine, the table.

Benchmarks measure and print; they are scripts, not tests. Each script has ``main(argv)`` and prints
one ``name | value | target | status`` table; with ``--json FILE`` it also writes its figures as JSON
(the small versions in ``tests/test_benchmarks_small.py`` read that file).
"""

from __future__ import annotations

import json
import os
import platform
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from a fresh clone
    sys.path.insert(0, str(REPO))

PG_SYSTEM_USER = "gameday"  # PostgreSQL refuses to run as root: servers run as this system user


# --------------------------------------------------------------------------------------------- figures
@dataclass
class Figure:
    """One measured figure: what, how much, the target it is held to, and whether it met it."""

    name: str
    value: float | None
    unit: str
    target: float | None = None  # value must be < target (None = reported only)
    note: str = ""

    @property
    def status(self) -> str:
        if self.value is None:
            return "not measured"
        if self.target is None:
            return "-"
        return "ok" if self.value < self.target else "MISS"


@dataclass
class Report:
    """A benchmark's figures plus anything else worth keeping (plans, row counts)."""

    benchmark: str
    figures: list[Figure] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)

    def add(self, name: str, value: float | None, unit: str, target: float | None = None,
            note: str = "") -> Figure:
        fig = Figure(name, value, unit, target, note)
        self.figures.append(fig)
        return fig

    def to_dict(self) -> dict[str, object]:
        return {
            "benchmark": self.benchmark,
            "machine": machine(),
            "figures": [asdict(f) | {"status": f.status} for f in self.figures],
            "extra": self.extra,
        }

    def write_json(self, path: str | Path | None) -> None:
        if path:
            Path(path).write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")

    def print_table(self) -> None:
        print_figures(self.figures)


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("rows", "keys", "count", "streams", "consumers", "samples"):
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


def print_figures(figures: list[Figure], title: str | None = None) -> None:
    """Print figures as an aligned table; this is what `make bench` shows."""
    rows = [("figure", "value", "target", "status", "note")]
    for f in figures:
        target = "-" if f.target is None else f"< {fmt_value(f.target, f.unit)}"
        rows.append((f.name, fmt_value(f.value, f.unit), target, f.status, f.note))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    if title:
        print(title)
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(widths[j]) for j, c in enumerate(r[:4])) + ("  " + r[4] if r[4] else ""))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------- machine
def machine() -> dict[str, object]:
    """The machine a figure was measured on (reported beside every table)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_1min": round(load, 2) if load is not None else None,
    }


def machine_line() -> str:
    m = machine()
    return (f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['os']}, "
            f"Python {m['python']}, load(1 min) {m['load_1min']}")


# --------------------------------------------------------------------------------------------- timing
def time_ms(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> tuple[float, object]:
    """Median wall time of ``fn`` in milliseconds over ``repeat`` runs (after ``warmup``), and its result."""
    result: object = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times), result


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open within {timeout:.0f}s")


# --------------------------------------------------------------------------------------------- postgres
def pg_bindir() -> Path:
    """Where initdb/postgres live: PATH first, then the pgserver wheel's own build."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(found).resolve().parent
    try:
        import pgserver  # noqa: PLC0415  (optional: only when PostgreSQL is not on PATH)
    except ImportError as exc:
        raise RuntimeError("no PostgreSQL: neither initdb/postgres on PATH nor the pgserver wheel") from exc
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                              check=False, capture_output=True, text=True)
        try:
            return pwd.getpwnam(name)  # also when a concurrent useradd won the race
        except KeyError:
            raise RuntimeError(f"cannot create system user {name!r}: {made.stderr.strip()}") from None


class PostgresServer:
    """A private PostgreSQL on 127.0.0.1 in ``data_dir``; run as an unprivileged user when we are root.

    ``init()`` is a no-op when the data dir already holds a cluster, so a big benchmark table survives
    between runs; ``start()`` picks a free port; ``stop()`` is safe to call twice.
    """

    def __init__(self, root: str | Path, *, user: str = "gameday", password: str = "gameday-bench",
                 settings: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.user, self.password = user, password
        self.settings = settings or {}
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._bindir = pg_bindir()
        self._run_as: pwd.struct_passwd | None = _ensure_system_user(PG_SYSTEM_USER) if os.geteuid() == 0 else None

    # -- helpers
    def _popen_kwargs(self) -> dict[str, object]:
        if self._run_as is None:
            return {}
        return {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}

    def _prepare_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # every parent must be traversable by the unprivileged user
        for parent in [self.root, *self.root.parents]:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o011)
        if self._run_as is not None:
            os.chown(self.root, self._run_as.pw_uid, self._run_as.pw_gid)

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def dsn(self, dbname: str = "postgres", *, password: str | None = None) -> str:
        pw = self.password if password is None else password
        return f"postgresql://{self.user}:{pw}@127.0.0.1:{self.port}/{dbname}"

    # -- lifecycle
    def init(self) -> None:
        self._prepare_dirs()
        if self.initialized:
            return
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._run_as is not None:
            os.chown(pwfile, self._run_as.pw_uid, self._run_as.pw_gid)
        try:
            subprocess.run(
                [str(self._bindir / "initdb"), "-D", str(self.data_dir), "-U", self.user,
                 f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
                check=True, capture_output=True, **self._popen_kwargs(),  # type: ignore[call-overload]
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self, timeout: float = 60.0) -> None:
        self.init()
        self.port = free_port()
        args = [str(self._bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "logging_collector=off"]
        for key, value in self.settings.items():
            args += ["-c", f"{key}={value}"]
        log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 (kept open for the child's life)
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     **self._popen_kwargs())  # type: ignore[call-overload]
        log.close()
        wait_for_port(self.port, timeout, self.proc)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import psycopg  # noqa: PLC0415

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # fast shutdown (SIGTERM = smart shutdown waits for clients)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def create_database(self, name: str) -> str:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def postgres(root: str | Path, **kwargs: object) -> Iterator[PostgresServer]:
    server = PostgresServer(root, **kwargs)  # type: ignore[arg-type]
    try:
        server.start()
        yield server
    finally:
        server.stop()


def base_argparser(description: str):  # noqa: ANN201
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    return parser


# --------------------------------------------------------------------------------------------- dataset
BENCH_PG_DIR = Path(os.environ.get("GAMEDAY_BENCH_PG_DIR", "/tmp/gameday-bench-pg"))
ROW_INTERVAL_MS = 120  # one row every 120 ms: 10 million rows span 13.9 days, 2 hours hold 60,000 rows
EVENT_TYPES = ("page.view", "user.login", "buddy.match", "message.sent",
               "kintell.session", "profile.update", "report.generated", "user.signup")
BENCH_SETTINGS = {
    "shared_buffers": "256MB", "work_mem": "32MB", "maintenance_work_mem": "512MB",
    "max_wal_size": "8GB", "wal_level": "minimal", "max_wal_senders": "0", "effective_cache_size": "4GB",
}


def bench_key(seq: int) -> str:
    """The idempotency key stored for sequence number ``seq`` (see ``create_events_table``)."""
    return f"evt-{seq}"


def window_rows(rows: int) -> int:
    """Rows in the benchmark's 'gameday window' (the last 2 hours of a 10M table)."""
    return max(100, min(60_000, rows // 10))


def create_events_table(dsn: str, rows: int, *, log: Callable[[str], None] = lambda _m: None) -> dict[str, float]:
    """Create ``events`` with ``rows`` rows and the runbook's indexes, unless it is already complete.

    Row ``g`` (1..rows) is stored at ``t0 + g * 120 ms`` with key ``evt-g``, except that every
    1000th row repeats the previous key: keys ``evt-(1000k-1)`` are stored twice and ``evt-1000k``
    never (1 duplicate and 1 loss per 1000). The table DDL is ``gamedaylib/sql/events.sql`` with a
    non-unique key index (the lab's ``lab_idempotency=false`` shape), so duplicates can exist.
    Returns the seconds each step took (empty when the table was already there).
    """
    import psycopg  # noqa: PLC0415

    from gamedaylib.probes.events import required_indexes  # noqa: PLC0415

    with psycopg.connect(dsn, autocommit=True) as conn:
        have = conn.execute(
            "SELECT to_regclass('bench_meta') IS NOT NULL AND "
            "EXISTS (SELECT 1 FROM bench_meta WHERE rows = %s AND complete)", (rows,),
        ).fetchone() if conn.execute("SELECT to_regclass('bench_meta')").fetchone()[0] else (False,)
        if have and have[0]:
            return {}
        timings: dict[str, float] = {}
        types = "ARRAY[" + ",".join(f"'{t}'" for t in EVENT_TYPES) + "]"
        conn.execute("DROP TABLE IF EXISTS events, bench_meta")
        t = time.perf_counter()
        with conn.transaction():  # created and filled in one transaction: no WAL with wal_level=minimal
            conn.execute(
                "CREATE TABLE events (id bigserial PRIMARY KEY, idempotency_key text NOT NULL, "
                "type text NOT NULL, payload jsonb NOT NULL DEFAULT '{}'::jsonb, "
                "occurred_at timestamptz NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.execute(
                "INSERT INTO events (idempotency_key, type, payload, occurred_at, created_at) "
                "SELECT 'evt-' || (CASE WHEN g %% 1000 = 0 THEN g - 1 ELSE g END), "
                f"({types})[1 + g %% {len(EVENT_TYPES)}], "
                "jsonb_build_object('seq', g, 'user', 'u' || (g %% 5000)), "
                "t0 + (g * %s - 40) * interval '1 millisecond', t0 + g * %s * interval '1 millisecond' "
                "FROM generate_series(1, %s) AS g, "
                "(SELECT date_trunc('second', now()) - %s * interval '1 millisecond' AS t0) AS base",
                (ROW_INTERVAL_MS, ROW_INTERVAL_MS, rows, rows * ROW_INTERVAL_MS),
            )
        timings["insert_s"] = time.perf_counter() - t
        log(f"  inserted {rows:,} rows in {timings['insert_s']:.1f}s")
        for spec in required_indexes():
            t = time.perf_counter()
            conn.execute(spec.ddl.replace(" CONCURRENTLY", ""))
            timings[f"index_{spec.name}_s"] = time.perf_counter() - t
            log(f"  {spec.name} in {timings[f'index_{spec.name}_s']:.1f}s")
        t = time.perf_counter()
        conn.execute("VACUUM (ANALYZE) events")
        timings["vacuum_analyze_s"] = time.perf_counter() - t
        conn.execute("CREATE TABLE bench_meta (rows bigint, complete boolean, created timestamptz DEFAULT now())")
        conn.execute("INSERT INTO bench_meta (rows, complete) VALUES (%s, true)", (rows,))
        return timings


def plan_nodes(plan: object) -> list[dict[str, object]]:
    """Every node of an ``EXPLAIN (FORMAT JSON)`` plan, depth first."""
    out: list[dict[str, object]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "Node Type" in node:
                out.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(plan)
    return out


def full_scans_on(plan: object, relation: str = "events") -> int:
    """Nodes that read all of ``relation``: a Seq Scan, or a scan of one of the runbook's indexes whose
    condition does not bound the index's leading column (a whole-index scan, e.g. (type, created_at)
    read for a condition on created_at only)."""
    from gamedaylib.probes.events import required_indexes  # noqa: PLC0415

    leading = {spec.name: spec.columns[0] for spec in required_indexes()}
    count = 0
    for n in plan_nodes(plan):
        kind = n.get("Node Type")
        if kind == "Seq Scan" and n.get("Relation Name") == relation:
            count += 1
        elif kind in ("Index Scan", "Index Only Scan", "Bitmap Index Scan") and n.get("Index Name") in leading:
            cond = str(n.get("Index Cond") or "")
            if leading[str(n["Index Name"])] not in cond:
                count += 1
    return count


seq_scans_on = full_scans_on  # the name the reports use


def plan_summary(plan: object, relation: str = "events") -> str:
    """Short description of how ``relation`` is read: 'Index Only Scan events_created_at_idx', ..."""
    from gamedaylib.probes.events import required_indexes  # noqa: PLC0415

    ours = {spec.name for spec in required_indexes()}
    parts = []
    for n in plan_nodes(plan):
        if n.get("Relation Name") == relation or n.get("Index Name") in ours:
            idx = n.get("Index Name")
            parts.append(f"{n['Node Type']}" + (f" {idx}" if idx else ""))
    return "; ".join(dict.fromkeys(parts)) or "-"


def explaining_store(dsn: str):  # noqa: ANN201
    """An ``EventsStore`` that records the ``EXPLAIN (FORMAT JSON)`` plan of every statement it runs."""
    from gamedaylib.probes.events import EventsStore  # noqa: PLC0415

    class ExplainingStore(EventsStore):
        def __init__(self, dsn: str) -> None:
            super().__init__(dsn)
            self.plans: dict[str, list[object]] = {}

        def _query(self, what, sql, params=()):  # type: ignore[no-untyped-def]
            if not sql.lstrip().upper().startswith("SELECT TO_REGCLASS") and "pg_index" not in sql:
                plan = super()._query(what, "EXPLAIN (FORMAT JSON) " + sql, params)
                self.plans.setdefault(what, []).append(plan[0][0])
            return super()._query(what, sql, params)

        def _with_keys(self, what, keys, statements):  # type: ignore[no-untyped-def]
            doubled = []
            for sql, params in statements:
                doubled += [("EXPLAIN (FORMAT JSON) " + sql, params), (sql, params)]
            results = super()._with_keys(what, keys, doubled)
            for i in range(0, len(results), 2):
                self.plans.setdefault(what, []).append(results[i][0][0])
            return results[1::2]

    return ExplainingStore(dsn)
