"""api-gateway: takes user events over HTTP, buffers them, publishes them to JetStream.

``python -m gamedaylib.lab.gateway --lab-config <lab_dir>/config.json --replica N`` serves on
``ports.gateway``, the one ingest port every replica binds with ``SO_REUSEPORT`` (the kernel spreads
new connections over the replicas, as a Kubernetes Service spreads them over pods), and on its own
``ports.gateway_admin_<N>`` (the same routes; Prometheus scrapes each replica there). Each replica
has its own buffer: what a replica holds dies with it.

- ``POST /v1/events`` ``{"type": str, "idempotency_key": str, "payload": {...}}`` -> 202 once the
  event is in the buffer (the gateway has taken responsibility); every answer names the replica that
  gave it in header ``X-Gateway-Replica`` (``gateway-N``); 400 malformed JSON, 413 body over
  64 KiB, 422 missing or wrong-typed field, all with ``{"error": ...}``; 503 when the buffer is full
  and ``lab_overflow=reject``. With ``lab_overflow=drop`` a full buffer silently discards its oldest
  waiting event (``events_dropped_total``) and answers 202.
- ``GET /v1/metrics/stream``: Server-Sent Events, one ``data: {json}`` about every second (buffer
  size, accepted, published, connected, ...); served from memory, so it keeps answering while NATS is
  cut off.
- ``GET /healthz``, ``GET /metrics`` (ARCHITECTURE.md "Service metrics").

One publisher task drains the buffer to subject ``events.<type>`` in pipelined batches, with header
``Nats-Msg-Id: <idempotency_key>`` (not with ``lab_idempotency=false``), and removes an event only
after its PubAck. A failed publish is retried (same Msg-Id: a timed-out publish may still be stored
later, the stream's duplicate window absorbs the repeat) with exponential backoff and full jitter; a
circuit breaker opens after consecutive failures, stays open for a cool-down, then half-opens and lets
one probe through; success closes it. ``lab_retry=false`` stages the flaw: a failed publish is dropped
and only counted in ``nats_publish_errors_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import random
import re
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry, Counter, Gauge

from gamedaylib.lab.layout import replica_name
from gamedaylib.lab.service import (
    NATS_ERRORS,
    SETUP_RETRY_MAX_SECONDS,
    SETUP_TIMEOUT_SECONDS,
    LabConfig,
    connect_nats,
    ensure_stream,
    main_for,
    metrics_routes,
    start_http,
)

log = logging.getLogger("gamedaylib.lab.gateway")

MAX_BODY_BYTES = 64 * 1024
REPLICA_HEADER = "X-Gateway-Replica"
MAX_KEY_LENGTH = 256
TYPE_PATTERN = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")  # one or more NATS subject tokens
MAX_TYPE_LENGTH = 128

BATCH_SIZE = 2000  # publishes in flight at once
PUBLISH_TIMEOUT_SECONDS = 1.0
BACKOFF_BASE_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 3.0
BREAKER_FAILURE_THRESHOLD = 3  # consecutive failed publish rounds
BREAKER_COOLDOWN_SECONDS = 3.0
SSE_INTERVAL_SECONDS = 1.0


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass
class CircuitBreaker:
    """Closed -> (threshold consecutive failures) -> open -> (cool-down) -> half-open -> closed/open."""

    threshold: int = BREAKER_FAILURE_THRESHOLD
    cooldown: float = BREAKER_COOLDOWN_SECONDS
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0

    def remaining_cooldown(self) -> float:
        """Seconds before a publish may be attempted (0 when closed or half-open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        left = self.opened_at + self.cooldown - time.monotonic()
        if left <= 0:
            self.state = BreakerState.HALF_OPEN
            log.info("circuit breaker half-open: probing")
            return 0.0
        return left

    def reconnected(self) -> None:
        """The connection came back: no need to sit out the cool-down, probe at once."""
        if self.state is BreakerState.OPEN:
            self.state = BreakerState.HALF_OPEN
            log.info("circuit breaker half-open: NATS reconnected, probing")

    def success(self) -> None:
        if self.state is not BreakerState.CLOSED:
            log.info("circuit breaker closed")
        self.state = BreakerState.CLOSED
        self.failures = 0

    def failure(self) -> None:
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self.failures >= self.threshold
        ):
            self.state = BreakerState.OPEN
            self.opened_at = time.monotonic()
            log.warning("circuit breaker OPEN after %d consecutive failure(s)", self.failures)


@dataclass
class BufferedEvent:
    key: str
    type: str
    data: bytes


class BadRequest(Exception):
    """A request the gateway will not take (answered with ``status`` and a JSON error)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def parse_event(raw: bytes) -> tuple[str, str, dict[str, Any]]:
    """Validate an ingest body; return (type, idempotency_key, payload) or raise ``BadRequest``."""
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"malformed JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest(400, "body must be a JSON object")
    problems = []
    event_type = body.get("type")
    key = body.get("idempotency_key")
    payload = body.get("payload")
    if not isinstance(event_type, str) or not event_type:
        problems.append("'type' must be a non-empty string")
    elif len(event_type) > MAX_TYPE_LENGTH or not TYPE_PATTERN.match(event_type):
        problems.append("'type' must be dot-separated words of letters, digits, '_' or '-'")
    if not isinstance(key, str) or not key.strip():
        problems.append("'idempotency_key' must be a non-empty string")
    elif len(key) > MAX_KEY_LENGTH:
        problems.append(f"'idempotency_key' longer than {MAX_KEY_LENGTH} characters")
    if not isinstance(payload, dict):
        problems.append("'payload' must be a JSON object")
    if problems:
        raise BadRequest(422, "; ".join(problems))
    assert isinstance(event_type, str) and isinstance(key, str) and isinstance(payload, dict)
    return event_type, key, payload


class Gateway:
    """The buffer, the publisher and the metrics of one api-gateway."""

    def __init__(self, config: LabConfig) -> None:
        knobs = config.knobs
        self.config = config
        self.capacity: int = knobs["lab_buffer_capacity"]
        self.overflow: str = knobs["lab_overflow"]
        self.retry: bool = knobs["lab_retry"]
        self.idempotency: bool = knobs["lab_idempotency"]
        self.waiting: deque[BufferedEvent] = deque()
        self.inflight: list[BufferedEvent] = []
        self.wakeup = asyncio.Event()
        self.breaker = CircuitBreaker()
        self.connected = False
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None

        self.totals = {"accepted": 0, "published": 0, "dropped": 0, "publish_errors": 0, "retries": 0}
        self.registry = r = CollectorRegistry()
        Gauge("event_buffer_size", "Events held by the gateway, not yet acknowledged by JetStream",
              registry=r).set_function(lambda: self.buffer_size)
        Gauge("event_buffer_capacity", "Capacity of the gateway's buffer", registry=r).set(self.capacity)
        Gauge("nats_connected", "1 while the NATS connection is up", registry=r).set_function(
            lambda: 1 if self.connected else 0)
        Gauge("circuit_breaker_state", "0 closed, 1 half-open, 2 open", registry=r).set_function(
            lambda: int(self.breaker.state))
        self.m_retries = Counter("nats_retry", "Publish retry rounds", registry=r)
        self.m_errors = Counter("nats_publish_errors", "Failed publish attempts (events)", registry=r)
        self.m_accepted = Counter("events_accepted", "Events answered 202", registry=r)
        self.m_published = Counter("events_published", "Events acknowledged by JetStream", registry=r)
        self.m_dropped = Counter("events_dropped", "Accepted events discarded by overflow=drop", registry=r)
        self.m_requests = Counter("http_requests", "HTTP answers by status code", ["code"], registry=r)

    def _count(self, total: str, counter: Counter, amount: int = 1) -> None:
        self.totals[total] += amount
        counter.inc(amount)

    @property
    def buffer_size(self) -> int:
        return len(self.waiting) + len(self.inflight)

    def snapshot(self) -> dict[str, Any]:
        """The live numbers of the SSE stream."""
        return {
            "ts": datetime.now(timezone.utc).isoformat(),
            "buffer_size": self.buffer_size,
            "buffer_capacity": self.capacity,
            "accepted": self.totals["accepted"],
            "published": self.totals["published"],
            "dropped": self.totals["dropped"],
            "publish_errors": self.totals["publish_errors"],
            "retries": self.totals["retries"],
            "connected": self.connected,
            "circuit_breaker": self.breaker.state.name.lower(),
        }

    def _on_nats_state(self, connected: bool) -> None:
        self.connected = connected
        if connected:
            self.breaker.reconnected()
            self.wakeup.set()

    # -- ingest ---------------------------------------------------------------------------------
    def accept(self, event_type: str, key: str, payload: dict[str, Any]) -> bool:
        """Buffer one event; False when the buffer is full and overflow=reject."""
        if self.buffer_size >= self.capacity:
            if self.overflow == "reject":
                return False
            # drop: the oldest event not already in flight goes (an in-flight one may yet be stored);
            # with nothing waiting, the incoming event is the oldest droppable one.
            self._count("dropped", self.m_dropped)
            if not self.waiting:
                log.warning("buffer full: dropped event key=%s", key)
                self._count("accepted", self.m_accepted)
                return True
            dropped = self.waiting.popleft()
            log.warning("buffer full: dropped oldest event key=%s", dropped.key)
        data = json.dumps(
            {
                "idempotency_key": key,
                "type": event_type,
                "payload": payload,
                "occurred_at": datetime.now(timezone.utc).isoformat(),
            },
            separators=(",", ":"),
        ).encode()
        self.waiting.append(BufferedEvent(key=key, type=event_type, data=data))
        self._count("accepted", self.m_accepted)
        self.wakeup.set()
        return True

    # -- publisher ------------------------------------------------------------------------------
    async def _publish_batch(self, batch: list[BufferedEvent]) -> list[bool]:
        """Publish every event of ``batch`` at once (pipelined) and wait up to the publish timeout for
        their PubAcks; True for each event JetStream acknowledged (as stored or as a duplicate)."""
        assert self.js is not None
        futures: list[asyncio.Future[Any] | None] = []
        for event in batch:
            headers = {"Nats-Msg-Id": event.key} if self.idempotency else None
            try:
                future = await self.js.publish_async(
                    f"events.{event.type}", event.data, headers=headers
                )
            except NATS_ERRORS:
                future = None
            futures.append(future)
        live = [future for future in futures if future is not None]
        if live:
            _, pending = await asyncio.wait(live, timeout=PUBLISH_TIMEOUT_SECONDS)
            for future in pending:
                future.cancel()  # timed out; it may still be stored later: the retry reuses the Msg-Id
        return [
            future is not None and not future.cancelled() and future.exception() is None
            for future in futures
        ]

    async def _ensure_stream(self, stop: asyncio.Event) -> None:
        assert self.nc is not None
        js = self.nc.jetstream(timeout=SETUP_TIMEOUT_SECONDS)
        delay = 0.2
        while not stop.is_set():
            try:
                await ensure_stream(js, self.config)
                return
            except NATS_ERRORS as exc:
                log.warning("cannot ensure stream yet (%r); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, SETUP_RETRY_MAX_SECONDS)

    async def publisher(self, stop: asyncio.Event) -> None:
        self.nc = await connect_nats(
            self.config, replica_name("api-gateway", self.config.replica), on_state=self._on_nats_state, stop=stop
        )
        self.js = self.nc.jetstream(timeout=5)
        await self._ensure_stream(stop)
        attempt = 0
        while not stop.is_set():
            if not self.inflight and not self.waiting:
                self.wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), timeout=1.0)
                continue
            wait = self.breaker.remaining_cooldown()
            if wait > 0:
                await asyncio.sleep(min(wait, 0.5))
                continue
            while len(self.inflight) < BATCH_SIZE and self.waiting:
                self.inflight.append(self.waiting.popleft())
            probing = self.breaker.state is BreakerState.HALF_OPEN
            batch = self.inflight[:1] if probing else list(self.inflight)
            results = await self._publish_batch(batch)
            failed = [event for event, ok in zip(batch, results, strict=True) if not ok]
            done = len(batch) - len(failed)
            if done:
                published = {id(event) for event, ok in zip(batch, results, strict=True) if ok}
                self.inflight = [event for event in self.inflight if id(event) not in published]
                self._count("published", self.m_published, done)
            if not failed:
                self.breaker.success()
                attempt = 0
                continue
            self._count("publish_errors", self.m_errors, len(failed))
            self.breaker.failure()
            if not self.retry:
                lost = {id(event) for event in failed}
                self.inflight = [event for event in self.inflight if id(event) not in lost]
                log.error("publish failed, not retried (lab_retry=false): %d event(s) lost", len(failed))
                continue
            attempt += 1
            backoff = random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** attempt))
            self._count("retries", self.m_retries)
            log.warning(
                "publish failed for %d of %d event(s) (connected=%s); retry attempt=%d in %.2fs",
                len(failed), len(batch), self.connected, attempt, backoff,
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()


def make_app(gateway: Gateway, stop: asyncio.Event) -> web.Application:
    served_by = replica_name("gateway", gateway.config.replica)

    @web.middleware
    async def count_answers(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            gateway.m_requests.labels(code=str(exc.status)).inc()
            exc.headers[REPLICA_HEADER] = served_by
            raise
        gateway.m_requests.labels(code=str(response.status)).inc()
        if not response.prepared:
            response.headers[REPLICA_HEADER] = served_by
        return response

    app = web.Application(middlewares=[count_answers], client_max_size=4 * MAX_BODY_BYTES)

    async def post_event(request: web.Request) -> web.Response:
        try:
            if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
                raise BadRequest(413, f"body larger than {MAX_BODY_BYTES} bytes")
            raw = await request.content.read(MAX_BODY_BYTES + 1)
            event_type, key, payload = parse_event(raw)
        except BadRequest as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        if not gateway.accept(event_type, key, payload):
            return web.json_response(
                {"error": f"buffer full ({gateway.capacity} events); try again later"}, status=503
            )
        return web.json_response({"accepted": key}, status=202)

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", REPLICA_HEADER: served_by}
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while not stop.is_set():
                line = f"event: metrics\ndata: {json.dumps(gateway.snapshot())}\n\n"
                await response.write(line.encode())
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=SSE_INTERVAL_SECONDS)
        return response

    app.router.add_post("/v1/events", post_event)
    app.router.add_get("/v1/metrics/stream", stream)
    metrics_routes(app, gateway.registry, lambda: True)
    return app


async def serve(config: LabConfig, stop: asyncio.Event) -> None:
    gateway = Gateway(config)
    runner = await start_http(
        make_app(gateway, stop), config.replica_port("gateway_admin"), shared=config.port("gateway")
    )
    log.info(
        "gateway replica %d on 127.0.0.1:%d (shared) and :%d (own) knobs=%s",
        config.replica, config.port("gateway"), config.replica_port("gateway_admin"), config.knobs,
    )
    publisher = asyncio.create_task(gateway.publisher(stop))

    def publisher_ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("publisher crashed: %r; stopping the gateway", task.exception())
            stop.set()  # never keep answering 202 with nobody publishing

    publisher.add_done_callback(publisher_ended)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        if gateway.buffer_size:
            log.warning("stopping with %d unpublished event(s) in the buffer", gateway.buffer_size)
        await gateway.close()


def main(argv: list[str] | None = None) -> int:
    return main_for("gateway", serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
