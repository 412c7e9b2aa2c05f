"""Simulated users: post events to the gateway at ``lab_event_rate`` per second and record every
answer as the lab's ground truth (``gamedaylib.lab.truth``).

``python -m gamedaylib.lab.users --lab-config <lab_dir>/config.json``. Event types are drawn from the
playbook's critical types and a few ordinary ones; every event has a fresh idempotency key
``user-<uuid hex>``. Posts are scheduled on a fixed clock (a slow answer does not slow the rate) with a
short client timeout; each answer is appended to ``<lab_dir>/truth/answers.jsonl`` and flushed, with
the gateway replica that gave it (header ``X-Gateway-Replica``).

Spreading over the gateway replicas as a Kubernetes Service does: every simulated user session opens
its own connection to the one ``gateway_url``, posts at most ``POSTS_PER_CONNECTION`` events on it
(HTTP/1.1 keep-alive) and closes it; the kernel (``SO_REUSEPORT``) hands each new connection to one of
the gateway replicas. Many short sessions, never one long keep-alive socket pinned to one replica.
A connection that breaks (a replica killed) answers its post with no status and is not reused.

The HTTP client is a small asyncio protocol rather than aiohttp's: at 500 posts per second the
client's own CPU matters on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from gamedaylib.lab.gateway import REPLICA_HEADER
from gamedaylib.lab.service import LabConfig, main_for
from gamedaylib.lab.truth import answers_path

log = logging.getLogger("gamedaylib.lab.users")

CRITICAL_EVENT_TYPES = ("buddy.match", "kintell.session", "report.generated")  # the playbook's critical events
OTHER_EVENT_TYPES = ("user.login", "page.view", "profile.updated")
EVENT_TYPES = CRITICAL_EVENT_TYPES + OTHER_EVENT_TYPES
CLIENT_TIMEOUT_SECONDS = 2.0
MAX_IN_FLIGHT = 1000
POSTS_PER_CONNECTION = 20  # one user session; then a new connection (and maybe another replica)
MAX_HEADER_BYTES = 64 * 1024
TICK_SECONDS = 0.01  # at high rates, the posts due are started together every 10 ms


class HttpError(Exception):
    """The connection broke, timed out or answered something that is not HTTP/1.1."""


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection to the gateway: one request at a time, keep-alive, answers parsed just
    enough (status, ``X-Gateway-Replica``, a body when ``Content-Length`` says so)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, dict[str, str], bytes]] | None = None
        self.lost = False
        self.posts = 0

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEADER_BYTES:
                self._fail(HttpError("answer headers too long"))
            return
        try:
            status, headers = _parse_head(bytes(self.buffer[:end]))
            length = int(headers.get("content-length", "0"))
        except ValueError as exc:
            self._fail(HttpError(f"not an HTTP answer: {exc}"))
            return
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        if headers.get("connection", "").lower() == "close":
            self.close()
        self.waiter.set_result((status, headers, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(HttpError(f"connection lost: {exc!r}" if exc else "connection closed by the gateway"))

    # -- the client side ----------------------------------------------------------------------------
    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.close()

    @property
    def usable(self) -> bool:
        return not self.lost and self.posts < POSTS_PER_CONNECTION and self.transport is not None

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    async def request(self, head: bytes, body: bytes, timeout: float) -> tuple[int, dict[str, str], bytes]:
        """Send one request and wait for its answer; ``HttpError`` when none comes in ``timeout``."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.posts += 1
        self.transport.write(head + body)
        timer = loop.call_later(timeout, self._fail, HttpError(f"no answer within {timeout:g}s"))
        try:
            return await self.waiter
        finally:
            timer.cancel()


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """(status, lower-cased headers) of an HTTP/1.1 answer head; ValueError when it is not one."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"status line {lines[0][:80]!r}")
    status = int(rest[:3])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


class Users:
    def __init__(self, config: LabConfig, truth: IO[str]) -> None:
        self.port = config.port("gateway")
        self.rate: float = config.knobs["lab_event_rate"]
        self.truth = truth
        self.seq = itertools.count(1)
        self.in_flight: set[asyncio.Task[None]] = set()
        self.idle: list[Connection] = []
        self.head = (
            f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n"
        )

    def record(
        self, key: str, event_type: str, status: int | None, error: str | None, gateway: str | None
    ) -> None:
        line = json.dumps({
            "ts": datetime.now(timezone.utc).isoformat(),
            "idempotency_key": key,
            "type": event_type,
            "status": status,
            "error": error,
            "gateway": gateway,
        })
        self.truth.write(line + "\n")
        self.truth.flush()

    async def _connection(self) -> Connection:
        while self.idle:
            conn = self.idle.pop()
            if conn.usable:
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(Connection, "127.0.0.1", self.port), CLIENT_TIMEOUT_SECONDS
        )
        return conn

    async def post(self) -> None:
        seq = next(self.seq)
        key = f"user-{uuid.uuid4().hex}"
        event_type = random.choice(EVENT_TYPES)
        body = json.dumps({
            "type": event_type,
            "idempotency_key": key,
            "payload": {"user": f"u{random.randint(1, 500)}", "seq": seq},
        }).encode()
        status: int | None = None
        error: str | None = None
        gateway: str | None = None
        conn: Connection | None = None
        try:
            conn = await self._connection()
            status, headers, answer = await conn.request(
                self.head.format(len(body)).encode(), body, CLIENT_TIMEOUT_SECONDS
            )
            gateway = headers.get(REPLICA_HEADER.lower())
            if status >= 300:
                error = _error_of(answer)
        except (HttpError, OSError, asyncio.TimeoutError) as exc:
            status = None
            error = repr(exc)
        self.record(key, event_type, status, error, gateway)
        if conn is not None:
            if status is not None and conn.usable:
                self.idle.append(conn)
            else:
                conn.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Post on a fixed clock: every tick starts the posts that are due (one task each)."""
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        tick = max(interval, TICK_SECONDS)
        next_at = loop.time()
        try:
            while not stop.is_set():
                now = loop.time()
                if next_at < now - 1.0:  # fell far behind (a stalled machine): do not burst
                    next_at = now
                while next_at <= now:
                    if len(self.in_flight) < MAX_IN_FLIGHT:
                        task = asyncio.create_task(self.post())
                        self.in_flight.add(task)
                        task.add_done_callback(self.in_flight.discard)
                    next_at += interval
                wait = max(0.0, min(next_at - loop.time(), tick))
                if wait > 0.05:  # a long wait (a slow rate) ends at once on stop
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=wait)
                else:
                    await asyncio.sleep(wait)
            if self.in_flight:
                await asyncio.wait(self.in_flight, timeout=CLIENT_TIMEOUT_SECONDS + 1)
        finally:
            for conn in self.idle:
                conn.close()


def _error_of(answer: bytes) -> str:
    """The ``error`` of a gateway's JSON error body, else the body itself."""
    try:
        data = json.loads(answer)
    except ValueError:
        return answer.decode("utf-8", "replace")[:500]
    return str(data.get("error")) if isinstance(data, dict) else str(data)


async def serve(config: LabConfig, stop: asyncio.Event) -> None:
    path: Path = answers_path(config.lab_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("posting %.1f events/s to the gateway; answers in %s", config.knobs["lab_event_rate"], path)
    with path.open("a", encoding="utf-8") as truth:
        await Users(config, truth).run(stop)


def main(argv: list[str] | None = None) -> int:
    return main_for("users", serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
