"""Every runbook query on the events table: its plan (no Seq Scan on events) and its time.

    python benchmarks/events_queries.py                 # 10,000,000 rows (created once, kept)
    python benchmarks/events_queries.py --rows 20000 --pg-dir /tmp/x --json out.json

The table lives in ``--pg-dir`` (default /tmp/gameday-bench-pg, env GAMEDAY_BENCH_PG_DIR) and is
built on first use (`INSERT ... SELECT generate_series`, then the indexes of gamedaylib/sql/indexes.sql).
The "gameday window" is the last 2 hours of data (60,000 rows at 10M rows).
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

import common

TARGET_MS = 200.0


def measure(dsn: str, rows: int, report: common.Report, *, repeat: int = 5) -> None:
    from gamedaylib.gamedays.nats_partition.playbook import PLAYBOOK  # noqa: PLC0415

    CRITICAL_EVENT_TYPES = PLAYBOOK.critical_event_types
    from gamedaylib.probes.events import EventsStore  # noqa: PLC0415

    store = EventsStore(dsn)
    explaining = common.explaining_store(dsn)
    try:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(dsn) as conn:
            last = conn.execute("SELECT max(created_at) FROM events").fetchone()[0]
        if last is None:
            raise RuntimeError("the events table is empty")
        since = last - timedelta(milliseconds=common.ROW_INTERVAL_MS * common.window_rows(rows)) + timedelta(
            milliseconds=1)
        until = last + timedelta(seconds=1)
        calls = {
            "count_since": lambda s: s.count_since(since),
            "per_minute": lambda s: s.per_minute(since, until),
            "duplicates": lambda s: s.duplicates(since, until),
            "critical_types": lambda s: s.critical_types(since, CRITICAL_EVENT_TYPES),
            "window_stats": lambda s: s.window_stats(since),
            "lookup_keys_100": lambda s: s.lookup_keys(
                [common.bench_key(rows - i) for i in range(100)]),
            "check_indexes": lambda s: s.check_indexes(),
        }
        results: dict[str, object] = {}
        plans: dict[str, dict[str, object]] = {}
        for name, call in calls.items():
            ms, result = common.time_ms(lambda call=call: call(store), repeat=repeat)
            results[name] = result
            explaining.plans.clear()
            call(explaining)
            flat = [p for ps in explaining.plans.values() for p in ps]
            seq = sum(common.seq_scans_on(p) for p in flat)
            how = "; ".join(dict.fromkeys(common.plan_summary(p) for p in flat)) or "catalog only"
            plans[name] = {"seq_scans_on_events": seq, "reads_events_by": how, "ms": ms, "plans": flat}
            report.add(f"{name} ({rows:,} rows)", ms, "ms", TARGET_MS,
                       note=("FULL SCAN of events! " if seq else "") + how)
        window = results["window_stats"]
        report.extra.update({
            "rows": rows,
            "window_rows": window[2],  # type: ignore[index]
            "window": [since.isoformat(), until.isoformat()],
            "duplicates_in_window": len(results["duplicates"]),  # type: ignore[arg-type]
            "critical_types": results["critical_types"],
            "per_minute_buckets": len(results["per_minute"]),  # type: ignore[arg-type]
            "missing_indexes": results["check_indexes"],
            "lookup_keys_100_lost": sum(1 for i in results["lookup_keys_100"].values() if i.count == 0),  # type: ignore[union-attr]
            "plans": plans,
        })
    finally:
        store.close()
        explaining.close()


def main(argv: list[str] | None = None) -> int:
    parser = common.base_argparser(__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--pg-dir", default=str(common.BENCH_PG_DIR))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-seqscan", action="store_true",
                        help="enable_seqscan=off: on a small table, shows whether each query CAN use an index")
    args = parser.parse_args(argv)
    report = common.Report("events_queries")
    settings = dict(common.BENCH_SETTINGS, **({"enable_seqscan": "off"} if args.no_seqscan else {}))
    with common.postgres(Path(args.pg_dir), settings=settings) as pg:
        dsn = pg.create_database(f"events_{args.rows}")
        t = time.perf_counter()
        timings = common.create_events_table(dsn, args.rows, log=lambda m: print(m, file=sys.stderr))
        if timings:
            report.add(f"build table ({args.rows:,} rows + indexes)", time.perf_counter() - t, "s",
                       note="once; kept in " + args.pg_dir)
        report.extra["build"] = timings
        measure(dsn, args.rows, report, repeat=args.repeat)
    report.print_table()
    report.write_json(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
