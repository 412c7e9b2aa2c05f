"""GAMEDAY-002's failover cluster (etcd + two Patroni nodes + HAProxy or a multi-host DSN): start time,
failover time, rejoin time and confirmed writes lost, with synchronous and asynchronous replication.

    python benchmarks/pg_failover.py                      # sync, then async with a 2 s replication stall
    python benchmarks/pg_failover.py --modes sync --json out.json

For each mode a fresh cluster starts (``PgClusterRunner``: initdb, clone, healthy); a writer commits
through the read-write endpoint at ``--rate`` commits per second; with ``async`` the replication network
is stalled ``--stall`` seconds before the kill (the staged flaw); the primary is SIGKILLed like a pod
kill (Patroni and every PostgreSQL process). Failover = kill -> a write acknowledged through the
endpoint; rejoin = the killed node's Patroni started again -> it streams as a replica (after pg_rewind);
lost = acknowledged commits missing afterwards. Targets are the playbook's (failover <= 60 s, rejoin
within 10 minutes, nothing lost with synchronous replication).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import common

from gamedaylib.lab.pgcluster import default_endpoint, plan_cluster
from gamedaylib.lab.pgrunner import PgClusterRunner
from gamedaylib.lab.pgwriter import CommitWriter

FAILOVER_TARGET_S = 60.0
REJOIN_TARGET_S = 600.0


def wait_acks(writer: CommitWriter, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(writer.snapshot()) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the writer got fewer than {count} acknowledgements: {writer.last_error}")
        time.sleep(0.05)


def one_mode(report: common.Report, mode: str, endpoint: str, workdir: Path, rate: float, stall: float) -> None:
    label = f"{mode}, {endpoint}"
    plan = plan_cluster(workdir / f"cluster-{mode}", {"lab_pg_replication": mode, "lab_pg_endpoint": endpoint})
    with PgClusterRunner(plan) as runner:
        t0 = time.monotonic()
        client = runner.start()
        report.add(f"cluster start ({label})", time.monotonic() - t0, "s", None,
                   note="etcd, relays, initdb, clone, " + ("sync standby recorded, " if mode == "sync" else "")
                   + "a write through the endpoint")
        writer = CommitWriter(client.rw_dsn, rate=rate).start()
        try:
            wait_acks(writer, int(rate))
            old = client.primary()
            assert old is not None
            if mode == "async" and stall > 0:
                client.stall_replication(stall + 120)
                time.sleep(stall)
            killed = client.kill(old)
            writable = client.wait_writable(timeout=120)
            client.resume_replication()
            wait_acks(writer, len(writer.snapshot()) + int(rate))
            restarted = client.restart_killed(old)
            rejoined = client.wait_streaming(old, REJOIN_TARGET_S)
            wait_acks(writer, len(writer.snapshot()) + int(rate))
        finally:
            writer.stop()
            client.resume_replication()
        lost = writer.lost(client.rw_dsn)
        acks = len(writer.snapshot())
        report.add(f"failover: kill -> write acknowledged through the endpoint ({label})",
                   (writable - killed).total_seconds(), "s", FAILOVER_TARGET_S,
                   note=f"Patroni ttl {plan.ttl} s, loop_wait {plan.loop_wait} s")
        report.add(f"rejoin: Patroni restarted -> streaming replica ({label})",
                   (rejoined - restarted).total_seconds(), "s", REJOIN_TARGET_S, note="pg_rewind when diverged")
        stall_note = f"replication stalled {stall:g} s before the kill" if mode == "async" and stall > 0 else ""
        report.add(f"confirmed writes lost ({label})", float(len(lost)), "count",
                   1.0 if mode == "sync" else None,
                   note=f"of {acks:,} acknowledged at {rate:g}/s" + (f"; {stall_note}" if stall_note else ""))
        report.extra[mode] = {
            "endpoint": endpoint, "startup_seconds": runner.startup_seconds,
            "failover_seconds": (writable - killed).total_seconds(),
            "rejoin_seconds": (rejoined - restarted).total_seconds(),
            "lost": len(lost), "acknowledged": acks, "unconfirmed": len(writer.unconfirmed),
            "stall_seconds": stall if mode == "async" else 0,
        }


def main(argv: list[str] | None = None) -> int:
    parser = common.base_argparser(__doc__.splitlines()[0])
    parser.add_argument("--modes", default="sync,async", help="comma-separated: sync, async")
    parser.add_argument("--endpoint", choices=("proxy", "multihost"), default=None,
                        help="default: proxy when HAProxy is installed, else multihost")
    parser.add_argument("--rate", type=float, default=200.0, help="writer commits per second")
    parser.add_argument("--stall", type=float, default=2.0, help="seconds of replication stall (async)")
    args = parser.parse_args(argv)
    report = common.Report("pg_failover")
    endpoint = args.endpoint or default_endpoint()
    with tempfile.TemporaryDirectory(prefix="gameday-bench-pgfailover-") as tmp:
        for mode in args.modes.split(","):
            one_mode(report, mode.strip(), endpoint, Path(tmp), args.rate, args.stall)
    report.print_table()
    report.write_json(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
