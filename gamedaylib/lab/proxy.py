"""The partition proxy: every service connection to NATS passes through it, so the lab can cut the
network the way an iptables DROP (``blackhole``) or REJECT with TCP reset (``reset``) would.

``python -m gamedaylib.lab.proxy --lab-config <lab_dir>/config.json`` listens on ``ports.proxy``
(forwarding to ``127.0.0.1:ports.nats``) and serves the control API on ``ports.proxy_control``
(ARCHITECTURE.md "Partition proxy control"):

- ``GET /partition`` -> ``{"active", "mode", "since", "deadline", "cuts"}``
- ``POST /partition`` ``{"active": true, "duration_seconds": S, "mode": "blackhole"|"reset"}`` cuts;
  the deadline is mandatory and at most ``max_partition_seconds``; the proxy heals itself at the
  deadline, whoever cut it. ``{"active": false}`` heals. Both answer the status.
- ``GET /healthz``, ``GET /metrics`` (``proxy_partition_active``, ``proxy_connections``,
  ``proxy_cuts_total``).

While cut: blackhole = open connections stay open, bytes both ways are read and discarded, new
connections are accepted and hang; reset = every connection is reset (RST, SO_LINGER 0) and new ones
are reset at once. On heal every connection that lived through a blackhole is closed, so clients
reconnect and no half-delivered byte stream is resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from gamedaylib.lab.knobs import PARTITION_MODES
from gamedaylib.lab.service import LabConfig, main_for, metrics_routes, start_http

log = logging.getLogger("gamedaylib.lab.proxy")

CHUNK = 64 * 1024


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST rather than a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


@dataclass(eq=False)
class _Link:
    """One client connection, and its upstream once connected."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    blackholed: bool = False  # lived through a blackhole: closed on heal
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self, *, reset: bool) -> None:
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            if reset:
                _reset(writer)
            else:
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class PartitionProxy:
    """The TCP proxy and its partition state."""

    def __init__(self, upstream_port: int, default_mode: str, max_partition_seconds: float) -> None:
        self.upstream_port = upstream_port
        self.default_mode = default_mode
        self.max_partition_seconds = max_partition_seconds
        self.active = False
        self.mode = default_mode
        self.since: datetime | None = None
        self.deadline: datetime | None = None
        self.cuts = 0
        self.links: set[_Link] = set()
        self._heal_timer: asyncio.TimerHandle | None = None
        self.registry = CollectorRegistry()
        self.m_active = Gauge("proxy_partition_active", "1 while the network to NATS is cut",
                              registry=self.registry)
        self.m_connections = Gauge("proxy_connections", "Client connections through the proxy",
                                   registry=self.registry)
        self.m_cuts = Counter("proxy_cuts", "Partitions applied", registry=self.registry)

    # -- status and control ---------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "mode": self.mode,
            "since": _iso(self.since),
            "deadline": _iso(self.deadline),
            "cuts": self.cuts,
        }

    def cut(self, duration_seconds: float, mode: str) -> None:
        now = datetime.now(timezone.utc)
        if self._heal_timer is not None:
            self._heal_timer.cancel()
        self._heal_timer = asyncio.get_running_loop().call_later(duration_seconds, self._deadline_reached)
        if not self.active:
            self.since = now
            self.cuts += 1
            self.m_cuts.inc()
        self.active = True
        self.mode = mode
        self.deadline = now + timedelta(seconds=duration_seconds)
        self.m_active.set(1)
        log.warning("partition ON mode=%s for %.1fs (deadline %s)", mode, duration_seconds, _iso(self.deadline))
        for link in list(self.links):
            if mode == "reset":
                self._drop(link, reset=True)
            else:
                link.blackholed = True

    def _deadline_reached(self) -> None:
        self._heal_timer = None
        log.warning("partition deadline reached")
        self.heal()

    def heal(self) -> None:
        if self._heal_timer is not None:
            self._heal_timer.cancel()
            self._heal_timer = None
        was_active = self.active
        self.active = False
        self.since = None
        self.deadline = None
        self.mode = self.default_mode
        self.m_active.set(0)
        closed = 0
        for link in list(self.links):
            if link.blackholed:
                self._drop(link, reset=False)
                closed += 1
        if was_active:
            log.warning("partition OFF (healed); closed %d blackholed connection(s)", closed)

    def _drop(self, link: _Link, *, reset: bool) -> None:
        self.links.discard(link)
        self.m_connections.set(len(self.links))
        link.close(reset=reset)

    # -- data path ------------------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active and self.mode == "reset":
            _reset(writer)
            return
        link = _Link(client=writer)
        self.links.add(link)
        self.m_connections.set(len(self.links))
        try:
            if self.active:  # blackhole: accepted, then nothing gets through until heal closes it
                link.blackholed = True
                await self._discard(reader)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError as exc:
                log.warning("upstream NATS unreachable: %r", exc)
                return
            link.upstream = up_writer
            if link not in self.links:  # cut (reset) or healed-and-closed while connecting
                up_writer.transport.abort()
                return
            if self.active:
                link.blackholed = True
            link.tasks = [
                asyncio.create_task(self._pump(reader, up_writer, link)),
                asyncio.create_task(self._pump(up_reader, writer, link)),
            ]
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if link in self.links:
                self._drop(link, reset=False)

    async def _discard(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(CHUNK):
            pass

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    return
                if self.active or link.blackholed:
                    continue  # blackhole: bytes vanish in both directions
                writer.write(data)
                await writer.drain()


def _parse_request(body: Any, proxy: PartitionProxy) -> tuple[bool, float | None, str]:
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    active = body.get("active")
    if not isinstance(active, bool):
        raise ValueError("'active' must be true or false")
    mode = body.get("mode", proxy.default_mode)
    if mode not in PARTITION_MODES:
        raise ValueError(f"'mode' must be one of {', '.join(PARTITION_MODES)}")
    if not active:
        return False, None, mode
    duration = body.get("duration_seconds")
    if isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise ValueError("'duration_seconds' is mandatory when cutting (a partition always has a deadline)")
    if not 0 < duration <= proxy.max_partition_seconds:
        raise ValueError(f"'duration_seconds' must be in (0, {proxy.max_partition_seconds:g}]")
    return True, float(duration), mode


def control_app(proxy: PartitionProxy) -> web.Application:
    app = web.Application()

    async def get_partition(_request: web.Request) -> web.Response:
        return web.json_response(proxy.status())

    async def post_partition(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
            active, duration, mode = _parse_request(body, proxy)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            return web.json_response({"error": str(exc)}, status=400)
        if active:
            assert duration is not None
            proxy.cut(duration, mode)
        else:
            proxy.heal()
        return web.json_response(proxy.status())

    app.router.add_get("/partition", get_partition)
    app.router.add_post("/partition", post_partition)
    metrics_routes(app, proxy.registry, lambda: True)
    return app


async def serve(config: LabConfig, stop: asyncio.Event) -> None:
    proxy = PartitionProxy(
        upstream_port=config.port("nats"),
        default_mode=config.knobs["lab_partition_mode"],
        max_partition_seconds=config.max_partition_seconds,
    )
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", config.port("proxy"), reuse_address=True)
    runner = await start_http(control_app(proxy), config.port("proxy_control"))
    log.info("proxy 127.0.0.1:%d -> 127.0.0.1:%d, control on %d",
             config.port("proxy"), config.port("nats"), config.port("proxy_control"))
    try:
        await stop.wait()
    finally:
        server.close()
        for link in list(proxy.links):
            proxy._drop(link, reset=False)
        await runner.cleanup()
        await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    return main_for("proxy", serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
