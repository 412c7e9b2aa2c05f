"""The replication relay: a node's replication address, in front of its PostgreSQL port, that the lab
can stall the way an iptables DROP on the replication network would.

``python -m gamedaylib.lab.pgrelay --listen P --upstream U --control C [--max-stall-seconds S]``
forwards TCP ``127.0.0.1:P`` to ``127.0.0.1:U`` and serves the partition proxy's control API on ``C``
(``GET``/``POST /partition``, ``/healthz``, ``/metrics``; see ``gamedaylib.lab.proxy``). Patroni
advertises the relay as the node's ``connect_address``, so replicas stream (and ``pg_basebackup`` and
``pg_rewind`` read) through it; clients connect to PostgreSQL directly or through HAProxy.

A stall is the proxy's ``blackhole``: the connections stay open, bytes both ways are dropped, so WAL
written on the primary meanwhile never reaches the replica, and the primary hears nothing back; at the
deadline (always one) the stalled connections are closed and the replica reconnects from what it has.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from gamedaylib.lab.proxy import PartitionProxy, client_factory, control_app
from gamedaylib.lab.service import start_http

log = logging.getLogger("gamedaylib.lab.pgrelay")


async def serve(listen: int, upstream: int, control: int, max_stall_seconds: float) -> None:
    relay = PartitionProxy(default_mode="blackhole", max_partition_seconds=max_stall_seconds)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(client_factory(relay, upstream), "127.0.0.1", listen, reuse_address=True)
    runner = await start_http(control_app(relay), control)
    log.info("relay 127.0.0.1:%d -> 127.0.0.1:%d, control on %d", listen, upstream, control)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        relay.heal()
        relay.close()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gamedaylib.lab.pgrelay", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--upstream", type=int, required=True)
    parser.add_argument("--control", type=int, required=True)
    parser.add_argument("--max-stall-seconds", type=float, default=3600.0)
    parser.add_argument("--cluster-dir", help="the cluster folder (names the process for cleanup)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s relay %(levelname)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    asyncio.run(serve(args.listen, args.upstream, args.control, args.max_stall_seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
