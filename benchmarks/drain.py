"""Benchmark: drain rate of a JetStream backlog into PostgreSQL by the lab's reporting service, beside
the raw ``COPY`` rate of the same rows into a scratch table of the same shape, in one run.

0. ``Lab.up()`` in a temporary folder (users post at 1 event/s); cut the network, post M events to
   the gateway (they wait in its buffer), heal, and time until the buffer is empty and all M are in
   PostgreSQL: the end-to-end drain after a partition (reconnect and circuit breaker included);
1. stop the lab's ``reporting`` process;
2. publish N events straight to JetStream (stream ``EVENTS``), the backlog;
3. start ``python -m gamedaylib.lab.reporting`` again and time until all N rows are stored
   ("drain, steady" = from the first to the last stored row; "drain, wall" includes its start-up);
4. ``COPY`` the same N rows into ``events_copy_bench`` (``LIKE events INCLUDING ALL``: same indexes);
5. print both rates and their ratio (aim: at least 30 %); ``--json FILE`` also writes them.

    .venv/bin/python benchmarks/drain.py [--events 50000] [--partition-events 20000] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python benchmarks/drain.py` from a fresh clone
    sys.path.insert(0, str(REPO))

import nats
import psycopg

from gamedaylib.lab import processes as proc
from gamedaylib.lab.client import Lab

TYPES = ("buddy.match", "kintell.session", "report.generated", "user.login", "page.view")


async def publish_backlog(nats_url: str, count: int) -> float:
    """Publish ``count`` events (keys ``bench-<i>``) with Nats-Msg-Id, pipelined; return seconds."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    started = time.perf_counter()
    futures = []
    for i in range(count):
        event_type = TYPES[i % len(TYPES)]
        key = f"bench-{i}"
        body = {
            "idempotency_key": key,
            "type": event_type,
            "payload": {"user": f"u{i % 500}", "seq": i, "note": "backlog"},
            "occurred_at": datetime.now(timezone.utc).isoformat(),
        }
        futures.append(await js.publish_async(f"events.{event_type}", json.dumps(body).encode(),
                                              headers={"Nats-Msg-Id": key}))
        if len(futures) >= 2000:
            await asyncio.gather(*futures)
            futures.clear()
    await asyncio.gather(*futures)
    elapsed = time.perf_counter() - started
    await nc.close()
    return elapsed


async def post_events(gateway_url: str, count: int) -> float:
    """POST ``count`` events (keys ``gw-<i>``) to the gateway, 100 at a time; return seconds."""
    import aiohttp

    semaphore = asyncio.Semaphore(100)
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            body = {"type": TYPES[i % len(TYPES)], "idempotency_key": f"gw-{i}", "payload": {"seq": i}}
            async with semaphore, session.post(gateway_url + "/v1/events", json=body) as response:
                if response.status != 202:
                    raise SystemExit(f"the gateway answered {response.status} to event {i}")

        await asyncio.gather(*(one(i) for i in range(count)))
    return time.perf_counter() - started


def partition_drain(lab: Lab, state: dict[str, Any], count: int) -> dict[str, float]:
    """Backlog ``count`` events in the gateway during a cut, heal, time the drain into PostgreSQL."""
    import urllib.request

    def buffered() -> float:
        with urllib.request.urlopen(state["gateway_metrics_url"], timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("event_buffer_size "):
                    return float(line.split()[1])
        raise SystemExit("event_buffer_size missing from the gateway's metrics")

    lab.partition(True, 300)
    post_seconds = asyncio.run(post_events(state["gateway_url"], count))
    backlog = buffered()
    with psycopg.connect(state["events_dsn"]) as poll:
        started = time.perf_counter()
        lab.partition(False)
        while buffered() > 0:
            time.sleep(0.05)
        buffer_empty = time.perf_counter() - started
        while True:
            row = poll.execute("SELECT count(*) FROM events WHERE idempotency_key LIKE 'gw-%'").fetchone()
            poll.commit()
            if row and row[0] >= count:
                break
            if time.perf_counter() - started > 300:
                raise SystemExit(f"partition backlog not stored in 300 s ({row} of {count})")
            time.sleep(0.05)
        stored = time.perf_counter() - started
    return {"partition_events": count, "partition_backlog": backlog, "partition_post_seconds": post_seconds,
            "partition_buffer_empty_seconds": buffer_empty, "partition_all_stored_seconds": stored,
            "partition_drain_rate": count / stored}


def bench_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM events WHERE idempotency_key LIKE 'bench-%'").fetchone()
    conn.commit()
    return int(row[0]) if row else 0


def copy_rate(dsn: str) -> tuple[int, float]:
    """COPY the bench rows into a scratch table with the same indexes; return (rows, seconds)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT idempotency_key, type, payload::text, occurred_at FROM events "
            "WHERE idempotency_key LIKE 'bench-%' ORDER BY id"
        ).fetchall()
        conn.execute("DROP TABLE IF EXISTS events_copy_bench")
        conn.execute("CREATE TABLE events_copy_bench (LIKE events INCLUDING ALL)")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(
            "COPY events_copy_bench (idempotency_key, type, payload, occurred_at) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE events_copy_bench")
        conn.commit()
    return len(rows), elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50000)
    parser.add_argument("--partition-events", type=int, default=None,
                        help="events backlogged in the gateway during a cut (default: events/2, at most 20000)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    count: int = args.events
    if args.partition_events is None:
        args.partition_events = min(20000, max(1, count // 2))

    lab_dir = Path(tempfile.mkdtemp(prefix="gameday-drain-"))
    proc.make_traversable(lab_dir)
    lab = Lab(lab_dir)
    reporting: subprocess.Popen[bytes] | None = None
    figures: dict[str, Any] = {"events": count}
    try:
        # one reporting replica: the figure is one consumer process's drain rate (the stream and the
        # consumer are replicated on the 3-node cluster, as in production)
        state = lab.up({"lab_event_rate": 1, "lab_buffer_capacity": max(10000, 2 * args.partition_events),
                        "lab_service_replicas": 1})
        dsn = state["events_dsn"]
        if args.partition_events:
            figures.update(partition_drain(lab, state, args.partition_events))
        os.kill(state["pids"]["reporting-0"], signal.SIGTERM)
        proc.wait_gone([state["pids"]["reporting-0"]], 10)

        figures["publish_seconds"] = asyncio.run(publish_backlog(state["nats_url"], count))
        with open(lab_dir / "logs" / "reporting-bench.log", "wb") as log, psycopg.connect(dsn) as poll:
            started = time.perf_counter()
            reporting = subprocess.Popen(
                [sys.executable, "-m", "gamedaylib.lab.reporting", "--lab-config", str(lab_dir / "config.json"),
                 "--replica", "0"],
                stdout=log, stderr=subprocess.STDOUT,
            )
            first_at = None
            while True:
                stored = bench_count(poll)
                now = time.perf_counter()
                if stored and first_at is None:
                    first_at = now
                if stored >= count:
                    break
                if now - started > 600:
                    raise SystemExit(f"drain did not finish in 600 s ({stored}/{count} stored)")
                time.sleep(0.1)
            wall = time.perf_counter() - started
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM max(created_at) - min(created_at)), count(DISTINCT created_at) "
                "FROM events WHERE idempotency_key LIKE 'bench-%'"
            ).fetchone()
        assert row is not None
        span, batches = float(row[0]), int(row[1])
        # created_at is the transaction's start: the span misses the last batch; add its mean share
        steady = span * batches / max(batches - 1, 1)
        copied, copy_seconds = copy_rate(dsn)
        figures.update(
            drain_wall_seconds=wall,
            drain_wall_rate=count / wall,
            drain_steady_seconds=steady,
            drain_steady_rate=count / steady if steady > 0 else None,
            transactions=batches,
            copy_rows=copied,
            copy_seconds=copy_seconds,
            copy_rate=copied / copy_seconds,
        )
        figures["ratio_wall"] = figures["drain_wall_rate"] / figures["copy_rate"]
        if figures["drain_steady_rate"]:
            figures["ratio_steady"] = figures["drain_steady_rate"] / figures["copy_rate"]
    finally:
        if reporting is not None:
            reporting.terminate()
            try:
                reporting.wait(10)
            except subprocess.TimeoutExpired:
                reporting.kill()
                reporting.wait()
        lab.down()
        shutil.rmtree(lab_dir, ignore_errors=True)

    if "partition_drain_rate" in figures:
        print(f"after a partition: {figures['partition_backlog']:.0f} events buffered in the gateway; from heal, "
              f"buffer empty in {figures['partition_buffer_empty_seconds']:.2f} s, all stored in "
              f"{figures['partition_all_stored_seconds']:.2f} s = {figures['partition_drain_rate']:.0f} events/s "
              f"(reconnect included)")
    print(f"backlog of {count} events published to JetStream in {figures['publish_seconds']:.2f} s")
    print(f"drain into PostgreSQL (wall, incl. start-up): {figures['drain_wall_rate']:>10.0f} events/s "
          f"({figures['drain_wall_seconds']:.2f} s)")
    if figures.get("drain_steady_rate"):
        print(f"drain into PostgreSQL (steady):              {figures['drain_steady_rate']:>10.0f} events/s "
              f"({figures['transactions']} transactions)")
    print(f"raw COPY of the same rows:                   {figures['copy_rate']:>10.0f} rows/s "
          f"({figures['copy_seconds']:.2f} s)")
    print(f"drain / COPY: wall {figures['ratio_wall']:.0%}"
          + (f", steady {figures['ratio_steady']:.0%}" if "ratio_steady" in figures else "")
          + " (aim >= 30%)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
