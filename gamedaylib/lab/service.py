"""What every lab service shares: reading ``config.json``, connecting to NATS through the partition
proxy, ensuring the JetStream stream, serving ``/healthz`` and ``/metrics``, and stopping on SIGTERM.

A service module (``gateway``, ``reporting``, ``users``, ``proxy``, ``sink``, ``exporter``) defines
``async def serve(config, stop)`` and ends with ``main()``, which calls ``main_for(name, serve)``.
A replicated service (``gateway``, ``reporting``) is started once per replica with ``--replica N``
(``config.replica``), and names itself ``<name>-N``.

Ports (``config.json`` ``ports``, a flat ``{name: port}``): a name with a ``_<i>`` suffix belongs to
node or replica ``i`` (``nats_0``, ``nats_monitor_0``, ``nats_cluster_0``, ``proxy_0``,
``exporter_0``, ``gateway_admin_0``, ``reporting_0``, ...); ``LabConfig.indexed(name)`` lists them.
``gateway`` is the one ingest port every gateway replica listens on (``SO_REUSEPORT``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, disable_created_metrics, generate_latest

from gamedaylib.exceptions import LabError
from gamedaylib.lab.knobs import jetstream_replicas, validate_knobs
from gamedaylib.lab.layout import indexed_ports, replica_name

STREAM_SUBJECTS = ["events.>"]
DUPLICATE_WINDOW_MARGIN_SECONDS = 3600.0  # beyond the longest partition the lab allows
# setting up (stream, consumer) while a new cluster elects its leaders: ask often, give up on an
# answer soon (a JetStream request without a meta leader is not answered at all)
SETUP_TIMEOUT_SECONDS = 1.0
SETUP_RETRY_MAX_SECONDS = 1.0
# what a NATS or JetStream operation raises while the link is cut, reset or slow: retried, never fatal
NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError, OSError)

log = logging.getLogger("gamedaylib.lab")

STREAM_NAME = "EVENTS"  # the stream every gateway publishes to
CONSUMER_NAME = "reporting"  # the durable pull consumer the reporting replicas share

__all__ = [
    "CONSUMER_NAME",
    "NATS_ERRORS",
    "SETUP_RETRY_MAX_SECONDS",
    "SETUP_TIMEOUT_SECONDS",
    "STREAM_NAME",
    "LabConfig",
    "connect_nats",
    "ensure_stream",
    "load_config",
    "main_for",
    "serve_app",
]


@dataclass(frozen=True)
class LabConfig:
    """``<lab_dir>/config.json`` as the services read it (ARCHITECTURE.md), plus this process's
    ``replica`` index (``--replica``; 0 for a service that is not replicated)."""

    lab_dir: Path
    knobs: dict[str, Any]
    ports: dict[str, int]
    events_dsn: str
    max_partition_seconds: float = 3600.0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    replica: int = 0

    @property
    def nats_urls(self) -> list[str]:
        """Services reach NATS through the partition proxy, never directly: one proxy listener per
        NATS node, all cut at once."""
        return [f"nats://127.0.0.1:{port}" for port in self.indexed("proxy")]

    def port(self, name: str) -> int:
        try:
            return int(self.ports[name])
        except KeyError as exc:
            raise LabError(f"config.json has no port {name!r}") from exc

    def indexed(self, name: str) -> list[int]:
        """The ports ``<name>_0``, ``<name>_1``, ... (one per node or replica), in order."""
        return indexed_ports(self.ports, name)

    def replica_port(self, name: str) -> int:
        """This replica's own ``<name>_<replica>`` port."""
        return self.port(f"{name}_{self.replica}")


def load_config(path: str | Path) -> LabConfig:
    """Read and check ``config.json``; raise ``LabError`` if it is missing or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read lab config {path}: {exc}") from exc
    try:
        return LabConfig(
            lab_dir=Path(data.get("lab_dir") or path.parent),
            knobs=validate_knobs(data.get("knobs") or {}),
            ports={str(k): int(v) for k, v in data["ports"].items()},
            events_dsn=str(data.get("events_dsn", "")),
            max_partition_seconds=float(data.get("max_partition_seconds", 3600)),
            raw=data,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LabError(f"malformed lab config {path}: {exc!r}") from exc


async def connect_nats(
    config: LabConfig,
    name: str,
    *,
    on_state: Callable[[bool], None] | None = None,
    stop: asyncio.Event | None = None,
) -> NATS:
    """Connect through the proxy with options that ride out a partition: unlimited reconnects, a
    short reconnect wait, pings every 2 s (a blackholed link is noticed within seconds), a connect
    timeout. The first connection is retried until it succeeds or ``stop`` is set."""

    async def disconnected() -> None:
        log.warning("nats disconnected")
        if on_state:
            on_state(False)

    async def reconnected() -> None:
        log.info("nats reconnected")
        if on_state:
            on_state(True)

    async def error(exc: Exception) -> None:
        log.info("nats client: %r", exc)

    async def closed() -> None:
        if on_state:
            on_state(False)

    delay = 0.2
    while True:
        try:
            nc = await nats.connect(
                servers=config.nats_urls,
                name=name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                ping_interval=2,
                max_outstanding_pings=2,
                pending_size=64 * 1024 * 1024,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
                closed_cb=closed,
            )
        except (OSError, asyncio.TimeoutError, nats.errors.Error) as exc:
            if stop is not None and stop.is_set():
                raise LabError(f"{name}: stopped before NATS answered") from exc
            log.warning("nats connect to %s failed (%r); retrying", ", ".join(config.nats_urls), exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, SETUP_RETRY_MAX_SECONDS)
            continue
        if on_state:
            on_state(True)
        log.info("nats connected to %s", nc.connected_url.netloc if nc.connected_url else "?")
        return nc


def stream_config(config: LabConfig) -> StreamConfig:
    return StreamConfig(
        name=STREAM_NAME,
        subjects=list(STREAM_SUBJECTS),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        num_replicas=jetstream_replicas(config.knobs),
        duplicate_window=config.max_partition_seconds + DUPLICATE_WINDOW_MARGIN_SECONDS,
    )


async def ensure_stream(js: JetStreamContext, config: LabConfig) -> None:
    """Create stream ``EVENTS`` if missing; widen its duplicate window if it is too short. Idempotent
    (several services, and the supervisor, may call it at the same time)."""
    wanted = stream_config(config)
    try:
        info = await js.stream_info(STREAM_NAME)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(wanted)
            log.info("stream %s created", STREAM_NAME)
            return
        except nats.js.errors.BadRequestError:
            info = await js.stream_info(STREAM_NAME)  # created meanwhile by someone else
    window = info.config.duplicate_window or 0
    assert wanted.duplicate_window is not None
    if window < wanted.duplicate_window:
        info.config.duplicate_window = wanted.duplicate_window
        await js.update_stream(info.config)
        log.info("stream %s duplicate window widened to %ss", STREAM_NAME, wanted.duplicate_window)


def metrics_routes(app: web.Application, registry: CollectorRegistry, healthy: Callable[[], bool]) -> None:
    """Add ``GET /metrics`` (Prometheus text of ``registry``) and ``GET /healthz`` to ``app``."""

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        ok = healthy()
        return web.json_response({"ok": ok}, status=200 if ok else 503)

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)


async def start_http(app: web.Application, *ports: int, shared: int | None = None) -> web.AppRunner:
    """Serve ``app`` on 127.0.0.1 at each of ``ports``, and at ``shared`` with ``SO_REUSEPORT`` (a port
    every replica of the service binds: the kernel spreads new connections over them)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    for port in ports:
        await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    if shared is not None:
        await web.TCPSite(runner, "127.0.0.1", shared, reuse_address=True, reuse_port=True).start()
    return runner


async def serve_app(app: web.Application, port: int, stop: asyncio.Event) -> None:
    """Serve ``app`` on ``127.0.0.1:port`` until ``stop`` is set."""
    runner = await start_http(app, port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


Serve = Callable[[LabConfig, asyncio.Event], Awaitable[None]]


def main_for(name: str, serve: Serve, argv: list[str] | None = None) -> int:
    """Entry point of ``python -m gamedaylib.lab.<service> --lab-config PATH [--replica N]``: log to
    stderr, run ``serve`` until SIGTERM/SIGINT sets ``stop``, return the exit status."""
    parser = argparse.ArgumentParser(prog=f"python -m gamedaylib.lab.{name}")
    parser.add_argument("--lab-config", required=True, help="<lab_dir>/config.json")
    parser.add_argument("--replica", type=int, default=None, help="replica index of a replicated service")
    args = parser.parse_args(argv)
    who = name if args.replica is None else replica_name(name, args.replica)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s {who} %(levelname)s %(message)s",
        force=True,  # a service forked from the supervisor inherits its logging set-up
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    disable_created_metrics()  # no *_created series: the lab's scrape stays small and readable
    config = replace(load_config(args.lab_config), replica=args.replica or 0)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    asyncio.run(runner())
    log.info("%s stopped", who)
    return 0
