"""reporting: the durable JetStream pull consumer that writes events to PostgreSQL.

``python -m gamedaylib.lab.reporting --lab-config <lab_dir>/config.json --replica N``: ensures stream
``EVENTS`` and the durable pull consumer ``reporting`` (explicit ack, replicated like the stream;
every replica of this service pulls from the same durable consumer), fetches batches, writes each batch in one
transaction and acks its messages only after the commit. With ``lab_idempotency`` (default) the write
is ``INSERT ... ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key`` and every repeat
(also within a batch) logs one line ``duplicate_event key=<key>``; without it, a plain INSERT stores
repeats (the staged flaw). Fetch timeouts are normal; a partition is ridden out by the NATS client's
reconnects, never by a restart. ``GET /healthz`` and ``GET /metrics`` on ``ports.reporting_<N>``:
``nats_retry_total``, ``events_stored_total``, ``duplicate_events_total``, ``nats_connected``.

Writing through a failover (GAMEDAY-002): a write that fails (the primary died, no primary yet) is
retried with backoff on a new connection, its messages unacknowledged meanwhile; a write still running
after ``WRITE_TIMEOUT_SECONDS`` is cancelled on the client and retried the same way (a connection to a
dead or orphaned primary can hang: a commit waiting for a synchronous standby that is gone never ends,
and PostgreSQL's ``statement_timeout`` does not cover that wait), and so is a commit whose wait for the
standby was cut short (committed on that server only: it may be rewound away). The staged flaw
``lab_reporting_ack=before_commit`` acknowledges each batch before writing it and writes it once: what
a failed write held is lost (ground truth: accepted by the gateway, never in ``events``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime
from typing import Any

import nats.js.errors
import psycopg
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Header
from prometheus_client import CollectorRegistry, Counter, Gauge

from gamedaylib.lab.knobs import jetstream_replicas
from gamedaylib.lab.layout import replica_name
from gamedaylib.lab.pgclient import SYNC_WAIT_CANCELLED
from gamedaylib.lab.service import (
    CONSUMER_NAME,
    NATS_ERRORS,
    SETUP_RETRY_MAX_SECONDS,
    SETUP_TIMEOUT_SECONDS,
    STREAM_NAME,
    LabConfig,
    connect_nats,
    ensure_stream,
    main_for,
    metrics_routes,
    start_http,
)

log = logging.getLogger("gamedaylib.lab.reporting")

FETCH_BATCH = 4000
FETCH_TIMEOUT_SECONDS = 1.0
MIN_BATCH = 200  # fewer waiting than this: gather for LINGER_SECONDS before writing
LINGER_SECONDS = 0.05
ACK_WAIT_SECONDS = 15.0  # a batch is written in well under a second
MAX_ACK_PENDING = 20000
WRITE_TIMEOUT_SECONDS = 10.0  # a write still running then is cancelled and retried (under ACK_WAIT_SECONDS)
CONNECT_TIMEOUT_SECONDS = 5
RETRY_MAX_SECONDS = 5.0
BEFORE_COMMIT = "before_commit"  # lab_reporting_ack: the staged flaw

# A batch goes in with one COPY of the raw messages into a temporary table, then one statement that
# extracts the columns in PostgreSQL and inserts them: Python never parses the events on the fast
# path. EXCEPT ALL leaves the keys of the batch that were not inserted, i.e. every repeat (also two
# copies within one batch) -- one duplicate_event line each.
CREATE_BATCH_TABLE = "CREATE TEMP TABLE IF NOT EXISTS reporting_batch (d jsonb NOT NULL) ON COMMIT DELETE ROWS"
COPY_BATCH = "COPY reporting_batch (d) FROM STDIN"
_COLUMNS = """
SELECT d->>'idempotency_key', d->>'type', coalesce(d->'payload', '{}'::jsonb), (d->>'occurred_at')::timestamptz
FROM reporting_batch
"""
INSERT_IDEMPOTENT = f"""
WITH inserted AS (
    INSERT INTO events (idempotency_key, type, payload, occurred_at) {_COLUMNS}
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING idempotency_key
)
SELECT d->>'idempotency_key' FROM reporting_batch
EXCEPT ALL
SELECT idempotency_key FROM inserted
"""
INSERT_PLAIN = f"INSERT INTO events (idempotency_key, type, payload, occurred_at) {_COLUMNS}"


def copy_line(data: bytes) -> bytes:
    """One message as a line of COPY text format (one column)."""
    return (
        data.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r").replace(b"\t", b"\\t")
        + b"\n"
    )


def parse_message(data: bytes) -> None:
    """Check that one message is an event as the gateway writes it; ``ValueError`` when not."""
    body = json.loads(data)
    if not isinstance(body, dict):
        raise ValueError("message is not a JSON object")
    for name in ("idempotency_key", "type", "occurred_at"):
        if not isinstance(body.get(name), str):
            raise ValueError(f"message lacks a string {name!r}")
    datetime.fromisoformat(body["occurred_at"])
    text = data.decode("utf-8")
    if "\x00" in text or "\\u0000" in text:
        raise ValueError("message holds a NUL character (jsonb cannot store it)")


class Puller:
    """A lean pull fetcher for the durable consumer: one inbox, messages collected by a callback.

    nats-py's ``PullSubscription.fetch`` spends a task and a timer per message; at drain speed that
    is most of the cost. A fetch first asks without waiting (``no_wait``) -- the backlog case: a full
    batch returns at once. With less than ``MIN_BATCH`` there, it gathers for a moment rather than
    write a tiny batch (each batch costs a transaction and a pull request): a long poll that ends
    ``LINGER_SECONDS`` after the first message, or at ``expires`` when nothing comes. A message that
    arrives late (after its fetch returned) is handed out by the next fetch of this puller: nothing
    is lost, it is only later.
    """

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.inbox = nc.new_inbox()
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM_NAME}.{CONSUMER_NAME}"
        self.msgs: list[Msg] = []
        self.wanted = 0
        self.done = asyncio.Event()
        self.gathering = False  # a long poll: the first message starts the linger
        self.linger: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        await self.nc.subscribe(self.inbox, cb=self._on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1)

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get(Header.STATUS) if msg.headers else None
        if status:
            if status != "100":  # 404 no messages, 408 expired, 409 ...: this request is over
                self.done.set()
            return
        self.msgs.append(msg)
        if len(self.msgs) >= self.wanted:
            self.done.set()
        elif self.gathering and self.linger is None:
            self.linger = asyncio.get_running_loop().call_later(LINGER_SECONDS, self.done.set)

    async def _request(self, batch: int, timeout: float, no_wait: bool) -> None:
        self.wanted = batch
        self.done.clear()
        if len(self.msgs) >= batch:
            return
        request: dict[str, Any] = {"batch": batch - len(self.msgs)}
        if no_wait:
            request["no_wait"] = True
        else:
            request["expires"] = int(timeout * 1e9)
            self.gathering = True
            if self.msgs:  # some are here already: the others get the linger, no more
                self.linger = asyncio.get_running_loop().call_later(LINGER_SECONDS, self.done.set)
        await self.nc.publish(self.subject, json.dumps(request).encode(), reply=self.inbox)
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.done.wait(), timeout + 0.5)
        finally:
            self.gathering = False
            if self.linger is not None:
                self.linger.cancel()
                self.linger = None

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        await self._request(batch, timeout, no_wait=True)
        if len(self.msgs) < min(batch, MIN_BATCH):
            await self._request(batch, LINGER_SECONDS if self.msgs else timeout, no_wait=False)
        msgs, self.msgs = self.msgs, []
        return msgs


class WriteFailed(psycopg.OperationalError):
    """A write whose outcome cannot be trusted (timed out, or committed on one server only): retried."""


class Reporting:
    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.idempotency: bool = config.knobs["lab_idempotency"]
        self.ack_before_commit = config.knobs.get("lab_reporting_ack") == BEFORE_COMMIT
        self.connected = False
        self.db: psycopg.AsyncConnection[Any] | None = None
        self.notices: list[str] = []
        self.registry = r = CollectorRegistry()
        Gauge("nats_connected", "1 while the NATS connection is up", registry=r).set_function(
            lambda: 1 if self.connected else 0)
        self.m_retries = Counter("nats_retry", "NATS operations retried (fetch/ack failures)", registry=r)
        self.m_stored = Counter("events_stored", "Rows inserted into events", registry=r)
        self.m_duplicates = Counter("duplicate_events", "Deliveries whose key was already stored",
                                    registry=r)

    def _on_nats_state(self, connected: bool) -> None:
        self.connected = connected

    async def _database(self) -> psycopg.AsyncConnection[Any]:
        if self.db is None or self.db.closed:
            self.db = await psycopg.AsyncConnection.connect(self.config.events_dsn,
                                                            connect_timeout=CONNECT_TIMEOUT_SECONDS)
            self.db.add_notice_handler(lambda diag: self.notices.append(diag.message_primary or ""))
            await self.db.execute(CREATE_BATCH_TABLE)
            await self.db.commit()
        return self.db

    async def _close_database(self) -> None:
        if self.db is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await self.db.close()
        self.db = None

    async def write(self, payloads: list[bytes]) -> tuple[int, list[str]]:
        """Insert the events (raw messages) in one transaction, within ``WRITE_TIMEOUT_SECONDS``;
        return (rows stored, repeated keys). Raises ``psycopg.DataError`` or ``psycopg.IntegrityError``
        (a NOT NULL column) when a message is not an event, nothing stored then; ``WriteFailed`` when
        the write timed out or its commit was confirmed by this server only (a synchronous standby's
        wait cut short); ``psycopg.OperationalError`` when the database cannot be reached."""
        try:
            return await asyncio.wait_for(self._write(payloads), WRITE_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            await self._close_database()
            raise WriteFailed(f"the write did not finish within {WRITE_TIMEOUT_SECONDS:g}s (cancelled)") from None

    async def _write(self, payloads: list[bytes]) -> tuple[int, list[str]]:
        db = await self._database()
        self.notices.clear()
        async with db.transaction():
            cursor = db.cursor()
            async with cursor.copy(COPY_BATCH) as copy:
                await copy.write(b"".join(copy_line(data) for data in payloads))
            if not self.idempotency:
                await cursor.execute(INSERT_PLAIN)
                return cursor.rowcount, []
            await cursor.execute(INSERT_IDEMPOTENT)
            repeats = [key for (key,) in await cursor.fetchall()]
        self._check_replicated()
        return len(payloads) - len(repeats), repeats

    def _check_replicated(self) -> None:
        if any(SYNC_WAIT_CANCELLED in notice for notice in self.notices):
            raise WriteFailed("the commit's wait for the synchronous standby was cancelled: committed on this "
                              "server only")

    def _stored(self, stored: int, repeats: list[str]) -> None:
        self.m_stored.inc(stored)
        for key in repeats:
            log.warning("duplicate_event key=%s", key)
        self.m_duplicates.inc(len(repeats))

    async def write_until_done(self, payloads: list[bytes], stop: asyncio.Event) -> bool:
        """Write, reconnecting to PostgreSQL on failure; False if stopped before it succeeded."""
        delay = 0.2
        while not stop.is_set():
            try:
                stored, repeats = await self.write(payloads)
            except psycopg.OperationalError as exc:
                log.error("database write failed (%r); retrying in %.1fs", exc, delay)
                await self._close_database()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            self._stored(stored, repeats)
            return True
        return False

    async def write_once(self, payloads: list[bytes]) -> None:
        """The flaw ``lab_reporting_ack=before_commit``: the batch was acknowledged already; one write,
        and what a failed write held is gone."""
        try:
            stored, repeats = await self.write(payloads)
        except (psycopg.DataError, psycopg.IntegrityError):
            raise
        except psycopg.Error as exc:
            log.error("events_lost count=%d: the batch was acknowledged before its write, which failed (%r)",
                      len(payloads), exc)
            await self._close_database()
            return
        self._stored(stored, repeats)

    async def ensure_consumer(self, js: Any) -> None:
        try:
            await js.consumer_info(STREAM_NAME, CONSUMER_NAME)
            return
        except nats.js.errors.NotFoundError:
            pass
        config = ConsumerConfig(
            durable_name=CONSUMER_NAME,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ACK_WAIT_SECONDS,
            max_ack_pending=MAX_ACK_PENDING,
            max_deliver=-1,
            num_replicas=jetstream_replicas(self.config.knobs),
        )
        try:
            await js.add_consumer(STREAM_NAME, config)
            log.info("consumer %s created", CONSUMER_NAME)
        except nats.js.errors.BadRequestError:
            await js.consumer_info(STREAM_NAME, CONSUMER_NAME)  # created meanwhile by someone else

    async def run(self, stop: asyncio.Event) -> None:
        nc = await connect_nats(
            self.config, replica_name("reporting", self.config.replica), on_state=self._on_nats_state, stop=stop
        )
        js = nc.jetstream(timeout=SETUP_TIMEOUT_SECONDS)
        delay = 0.2
        while not stop.is_set():
            try:
                await ensure_stream(js, self.config)
                await self.ensure_consumer(js)
                pullers = [Puller(nc), Puller(nc)]
                for puller in pullers:
                    await puller.start()
                break
            except NATS_ERRORS as exc:
                log.warning("cannot bind consumer yet (%r); retrying", exc)
                self.m_retries.inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, SETUP_RETRY_MAX_SECONDS)
        else:
            await nc.close()
            return

        async def fetch(puller: Puller) -> list[Msg]:
            try:
                msgs = await puller.fetch(FETCH_BATCH, FETCH_TIMEOUT_SECONDS)
            except NATS_ERRORS as exc:
                self.m_retries.inc()
                log.warning("fetch failed (%r); retrying", exc)
                await asyncio.sleep(0.5)
                return []
            if not msgs and not nc.is_connected:
                self.m_retries.inc()
            return msgs

        # Two pullers take turns: the next batch is fetched while the current one is written, so
        # the drain after a partition is bounded by the slower of the two, not by their sum.
        turn = 0
        ahead = asyncio.create_task(fetch(pullers[turn]))
        try:
            while not stop.is_set():
                msgs = await ahead
                turn ^= 1
                ahead = asyncio.create_task(fetch(pullers[turn]))
                if msgs:
                    await self.handle(msgs, stop)
        finally:
            ahead.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ahead
            await nc.close()
            await self._close_database()

    async def handle(self, msgs: list[Msg], stop: asyncio.Event) -> None:
        if self.ack_before_commit:
            await self.handle_acked_first(msgs)
            return
        try:
            written = await self.write_until_done([msg.data for msg in msgs], stop)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            # slow path: find the messages that are not events, discard them (ack: never redeliver
            # poison), write the rest
            log.error("batch rejected by the database (%s); checking message by message", exc)
            good = []
            for msg in msgs:
                try:
                    parse_message(msg.data)
                    good.append(msg)
                except (ValueError, UnicodeDecodeError) as bad:
                    log.error("discarding malformed message on %s: %s", msg.subject, bad)
                    await self._ack(msg)
            msgs = good
            written = not msgs or await self.write_until_done([msg.data for msg in msgs], stop)
        if not written:
            return  # stopped before the commit: not acked, JetStream redelivers
        for msg in msgs:
            await self._ack(msg)

    async def handle_acked_first(self, msgs: list[Msg]) -> None:
        """The staged flaw: ack the batch, then write it once (JetStream will not deliver it again)."""
        for msg in msgs:
            await self._ack(msg)
        try:
            await self.write_once([msg.data for msg in msgs])
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            log.error("batch rejected by the database (%s); writing the events among it once", exc)
            good = []
            for msg in msgs:
                try:
                    parse_message(msg.data)
                    good.append(msg.data)
                except (ValueError, UnicodeDecodeError) as bad:
                    log.error("discarding malformed message on %s: %s", msg.subject, bad)
            if good:
                await self.write_once(good)

    async def _ack(self, msg: Msg) -> None:
        try:
            await msg.ack()
        except NATS_ERRORS as exc:
            self.m_retries.inc()
            log.warning("ack failed (%r); the message will be redelivered", exc)


async def serve(config: LabConfig, stop: asyncio.Event) -> None:
    reporting = Reporting(config)
    app = web.Application()
    metrics_routes(app, reporting.registry, lambda: True)
    runner = await start_http(app, config.replica_port("reporting"))
    log.info("reporting replica %d on 127.0.0.1:%d knobs=%s%s", config.replica, config.replica_port("reporting"),
             config.knobs, " (acks each batch BEFORE writing it)" if reporting.ack_before_commit else "")
    worker = asyncio.create_task(reporting.run(stop))
    try:
        await asyncio.wait([worker, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if worker.done():
            worker.result()  # a crash is a crash: re-raise it
        else:
            await asyncio.wait_for(worker, timeout=5)
    finally:
        if not worker.done():
            worker.cancel()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    return main_for("reporting", serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
