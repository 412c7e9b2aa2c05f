"""The partition proxy: every service connection to NATS passes through it, so the lab can cut the
network the way an iptables DROP (``blackhole``) or REJECT with TCP reset (``reset``) would.

``python -m gamedaylib.lab.proxy --lab-config <lab_dir>/config.json`` listens on ``ports.proxy_<i>``
for every NATS node ``i`` (forwarding to ``127.0.0.1:ports.nats_<i>``) and serves the control API on
``ports.proxy_control`` (ARCHITECTURE.md "Partition proxy control"). One cut applies to every node at
once, as a NetworkChaos partition between the services and every NATS pod does:

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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from gamedaylib.exceptions import LabError
from gamedaylib.lab.knobs import PARTITION_MODES
from gamedaylib.lab.service import LabConfig, main_for, metrics_routes, start_http

log = logging.getLogger("gamedaylib.lab.proxy")



def _reset(transport: asyncio.Transport) -> None:
    """Close with a TCP RST rather than a FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


class _End(asyncio.Protocol):
    """One end of a link (the client's connection or the upstream one): what it receives goes to the
    other end, unless the link is cut; when its outgoing buffer fills, the other end stops reading."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.link.forward(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.lost()

    def pause_writing(self) -> None:
        other = self.link.other(self)
        if other is not None and other.transport is not None:
            other.transport.pause_reading()

    def resume_writing(self) -> None:
        other = self.link.other(self)
        if other is not None and other.transport is not None and not other.transport.is_closing():
            other.transport.resume_reading()


class _Client(_End):
    """A service's connection to the proxy: opens the upstream one to its NATS node."""

    def __init__(self, proxy: PartitionProxy, upstream_port: int) -> None:
        super().__init__(_Link(proxy))
        self.upstream_port = upstream_port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.link.client = self
        self.link.proxy.accepted(self.link, self.upstream_port)


@dataclass(eq=False)
class _Link:
    """One client connection, and its upstream once connected."""

    proxy: PartitionProxy
    client: _End | None = None
    upstream: _End | None = None
    blackholed: bool = False  # lived through a blackhole: closed on heal
    pending: list[bytes] = field(default_factory=list)  # from the client before the upstream is up
    closed: bool = False

    def other(self, end: _End) -> _End | None:
        return self.upstream if end is self.client else self.client

    def forward(self, end: _End, data: bytes) -> None:
        if self.closed or self.blackholed or self.proxy.active:
            return  # blackhole: bytes vanish in both directions
        other = self.other(end)
        if other is None or other.transport is None:
            self.pending.append(data)
            return
        other.transport.write(data)

    def upstream_ready(self, upstream: _End) -> None:
        self.upstream = upstream
        assert upstream.transport is not None
        if self.pending and not (self.blackholed or self.proxy.active):
            upstream.transport.write(b"".join(self.pending))
        self.pending.clear()

    def lost(self) -> None:
        """One end closed: close the other, forget the link."""
        if not self.closed:
            self.proxy.drop(self, reset=False)

    def close(self, *, reset: bool) -> None:
        self.closed = True
        for end in (self.client, self.upstream):
            if end is None or end.transport is None:
                continue
            if reset:
                _reset(end.transport)
            else:
                end.transport.abort()


class PartitionProxy:
    """The TCP proxy and its partition state."""

    def __init__(self, default_mode: str, max_partition_seconds: float) -> None:
        self.default_mode = default_mode
        self.max_partition_seconds = max_partition_seconds
        self.active = False
        self.mode = default_mode
        self.since: datetime | None = None
        self.deadline: datetime | None = None
        self.cuts = 0
        self.links: set[_Link] = set()
        self._connecting: set[asyncio.Task[None]] = set()
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
                self.drop(link, reset=True)
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
                self.drop(link, reset=False)
                closed += 1
        if was_active:
            log.warning("partition OFF (healed); closed %d blackholed connection(s)", closed)

    def drop(self, link: _Link, *, reset: bool) -> None:
        self.links.discard(link)
        self.m_connections.set(len(self.links))
        link.close(reset=reset)

    def close(self) -> None:
        """Drop every link (the proxy is stopping)."""
        for task in list(self._connecting):
            task.cancel()
        for link in list(self.links):
            self.drop(link, reset=False)

    # -- data path ------------------------------------------------------------------------------
    def accepted(self, link: _Link, upstream_port: int) -> None:
        """A new client connection: reset it, let it hang (blackhole), or connect it upstream."""
        assert link.client is not None and link.client.transport is not None
        if self.active and self.mode == "reset":
            link.closed = True
            _reset(link.client.transport)
            return
        self.links.add(link)
        self.m_connections.set(len(self.links))
        if self.active:  # blackhole: accepted, then nothing gets through until heal closes it
            link.blackholed = True
            return
        task = asyncio.get_running_loop().create_task(self._connect(link, upstream_port))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, link: _Link, upstream_port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(lambda: _End(link), "127.0.0.1", upstream_port)
        except OSError as exc:
            log.warning("upstream NATS unreachable: %r", exc)
            self.drop(link, reset=False)
            return
        if link.closed or link not in self.links:  # cut (reset) or healed-and-closed while connecting
            assert upstream.transport is not None
            upstream.transport.abort()
            return
        if self.active:
            link.blackholed = True
        link.upstream_ready(upstream)


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


def client_factory(proxy: PartitionProxy, upstream_port: int) -> Callable[[], _Client]:
    return lambda: _Client(proxy, upstream_port)


async def serve(config: LabConfig, stop: asyncio.Event) -> None:
    proxy = PartitionProxy(
        default_mode=config.knobs["lab_partition_mode"],
        max_partition_seconds=config.max_partition_seconds,
    )
    listeners, upstreams = config.indexed("proxy"), config.indexed("nats")
    if not listeners or len(listeners) != len(upstreams):
        raise LabError(f"config.json needs one proxy_<i> port per nats_<i> port, got {config.ports}")
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(client_factory(proxy, upstream), "127.0.0.1", port, reuse_address=True)
        for port, upstream in zip(listeners, upstreams, strict=False)
    ]
    runner = await start_http(control_app(proxy), config.port("proxy_control"))
    for port, upstream in zip(listeners, upstreams, strict=False):
        log.info("proxy 127.0.0.1:%d -> 127.0.0.1:%d", port, upstream)
    log.info("control on 127.0.0.1:%d", config.port("proxy_control"))
    try:
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        proxy.close()
        await runner.cleanup()
        for server in servers:
            await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    return main_for("proxy", serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
