"""Loss and duplicate accounting of 1,000,000 keys against the events table: set-based vs naive.

    python benchmarks/accounting.py                        # 1M keys against 10M rows
    python benchmarks/accounting.py --rows 20000 --keys 5000 --naive-sample 200 --json out.json

Set-based = ``EventsStore.account_keys`` / ``lookup_keys``: one COPY into a temporary table and one
(anti-)join. Naive = one ``SELECT ... WHERE idempotency_key = %s`` per key, timed on a sample and
extrapolated to every key. Both run in the same process against the same table; the ratio is printed.

The keys are those of the last ``--keys`` sequence numbers of the table (see
``common.create_events_table``): one in a thousand was never stored, one in a thousand twice.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import common

TARGET_S = 3.0


def expected(rows: int, keys: int) -> tuple[int, int]:
    """(lost, duplicated) among the keys of sequence numbers rows-keys+1 .. rows."""
    seqs = range(rows - keys + 1, rows + 1)
    lost = sum(1 for g in seqs if g % 1000 == 0)
    dup = sum(1 for g in seqs if g % 1000 == 999 and g + 1 <= rows)
    return lost, dup


def measure(dsn: str, rows: int, nkeys: int, report: common.Report, *, repeat: int, naive_sample: int) -> None:
    import psycopg  # noqa: PLC0415

    from gamedaylib.probes.events import EventsStore  # noqa: PLC0415

    keys = [common.bench_key(g) for g in range(rows - nkeys + 1, rows + 1)]
    want_lost, want_dup = expected(rows, nkeys)
    store = EventsStore(dsn, statement_timeout=600)
    explaining = common.explaining_store(dsn)
    try:
        ms, acc = common.time_ms(lambda: store.account_keys(keys), repeat=repeat)
        ok = acc.lost == want_lost and acc.duplicated == want_dup and acc.keys == nkeys  # type: ignore[attr-defined]
        explaining.plans.clear()
        explaining.account_keys(keys)
        flat = [p for ps in explaining.plans.values() for p in ps]
        how = "; ".join(dict.fromkeys(common.plan_summary(p) for p in flat))
        seq = sum(common.seq_scans_on(p) for p in flat)
        set_based = ms / 1000
        report.add(f"account_keys {nkeys:,} keys vs {rows:,} rows", set_based, "s", TARGET_S,
                   note=f"lost {acc.lost} dup {acc.duplicated} "  # type: ignore[attr-defined]
                        f"({'correct' if ok else f'WRONG: want {want_lost}/{want_dup}'}); "
                        + ("FULL SCAN of events; " if seq else "") + how)
        report.extra["account"] = {
            "seconds": set_based, "keys": acc.keys, "stored": acc.stored, "lost": acc.lost,  # type: ignore[attr-defined]
            "duplicated": acc.duplicated, "correct": ok, "reads_events_by": how,  # type: ignore[attr-defined]
            "seq_scans_on_events": seq,
        }
        ms, info = common.time_ms(lambda: store.lookup_keys(keys), repeat=max(1, repeat - 1))
        lost = sum(1 for i in info.values() if i.count == 0)  # type: ignore[attr-defined]
        dup = sum(1 for i in info.values() if i.count > 1)  # type: ignore[attr-defined]
        report.add(f"lookup_keys {nkeys:,} keys (per-key dict with first/last created_at)", ms / 1000, "s", None,
                   note=f"lost {lost} dup {dup}; returns {len(info):,} KeyInfo")  # type: ignore[arg-type]
        report.extra["lookup_keys"] = {"seconds": ms / 1000, "lost": lost, "duplicated": dup}

        # naive: one query per key on a sample, extrapolated
        step = max(1, nkeys // naive_sample)
        sample = keys[::step][:naive_sample]
        with psycopg.connect(dsn) as conn:
            t = time.perf_counter()
            naive_lost = naive_dup = 0
            for key in sample:
                n, _first, _last = conn.execute(
                    "SELECT count(*), min(created_at), max(created_at) FROM events WHERE idempotency_key = %s",
                    (key,)).fetchone()
                naive_lost += n == 0
                naive_dup += n > 1
            per_key = (time.perf_counter() - t) / len(sample)
        naive_total = per_key * nkeys
        report.add(f"naive: one query per key, {nkeys:,} keys (extrapolated)", naive_total, "s", None,
                   note=f"{per_key * 1e6:.0f} us/key measured on {len(sample):,} keys")
        best = set_based
        report.add("ratio naive / set-based", naive_total / best, "x", None,
                   note="naive extrapolated / account_keys")
        report.extra.update({"rows": rows, "keys": nkeys, "naive_per_key_us": per_key * 1e6,
                             "naive_sample": len(sample), "naive_extrapolated_s": naive_total,
                             "ratio": naive_total / best, "expected": {"lost": want_lost, "duplicated": want_dup}})
    finally:
        store.close()
        explaining.close()


def main(argv: list[str] | None = None) -> int:
    parser = common.base_argparser(__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--naive-sample", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg-dir", default=str(common.BENCH_PG_DIR))
    args = parser.parse_args(argv)
    if args.keys > args.rows:
        parser.error("--keys must not exceed --rows")
    report = common.Report("accounting")
    with common.postgres(Path(args.pg_dir), settings=common.BENCH_SETTINGS) as pg:
        dsn = pg.create_database(f"events_{args.rows}")
        common.create_events_table(dsn, args.rows, log=lambda m: print(m, file=sys.stderr))
        measure(dsn, args.rows, args.keys, report, repeat=args.repeat, naive_sample=args.naive_sample)
    report.print_table()
    report.write_json(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
