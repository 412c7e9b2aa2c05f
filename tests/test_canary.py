"""Canaries against a real HTTP ingest server that answers 202 / 503 / nothing on a schedule."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp import web

from gamedaylib.canary import CANARY_TYPE, CanaryResult, CanarySender, account, canary_key
from gamedaylib.exceptions import InvalidParameters

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class KeyInfo:
    count: int
    first_created_at: datetime | None
    last_created_at: datetime | None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Ingest:
    """A gateway stand-in: seq 4-5 get 503, seq 6 gets no answer in time, the rest 202."""

    def __init__(self) -> None:
        self.received: dict[str, tuple[int, datetime, dict]] = {}
        self.port = _free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        seq = int(body["payload"]["seq"])
        if seq in (4, 5):
            return web.json_response({"error": "buffer full"}, status=503)
        if seq == 6:
            await asyncio.sleep(1.5)  # longer than the sender's timeout: no answer
        self.received[body["idempotency_key"]] = (seq, datetime.now(timezone.utc), body)
        return web.json_response({"accepted": True}, status=202)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/events", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def __enter__(self) -> Ingest:  # noqa: PYI034 - Python 3.10 has no typing.Self
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/events"


@pytest.fixture()
def ingest() -> Iterator[Ingest]:
    with Ingest() as server:
        yield server


def test_sender_posts_numbered_canaries_and_records_answers(ingest: Ingest) -> None:
    sender = CanarySender(ingest.url, "RUN1", rate_per_second=10.0, timeout=0.5)
    sender.start()
    deadline = time.monotonic() + 10
    while sender.counts()["sent"] < 12:
        assert time.monotonic() < deadline, "sender too slow"
        time.sleep(0.05)
    sender.stop()
    results = sender.results()
    assert not sender.running

    by_seq = {r.seq: r for r in results}
    assert sorted(by_seq) == list(range(1, len(results) + 1))  # no gap, no repeat
    assert by_seq[1].key == "canary-RUN1-000001"
    assert by_seq[1].status == 202 and by_seq[1].accepted
    assert by_seq[4].status == 503 and "buffer full" in (by_seq[4].error or "")
    assert by_seq[6].status is None and "no answer" in (by_seq[6].error or "")
    assert 400 <= by_seq[6].latency_ms < 1400
    counts = sender.counts()
    assert counts["failed"] == 3 and counts["sent"] == len(results)
    # The rate is held although seq 6 hung for 0.5 s.
    span = (results[-1].sent_at - results[0].sent_at).total_seconds()
    assert span == pytest.approx((len(results) - 1) / 10.0, abs=0.25)
    _, _, body = ingest.received["canary-RUN1-000001"]
    assert body["type"] == CANARY_TYPE
    assert body["payload"]["run_id"] == "RUN1" and body["payload"]["seq"] == 1
    assert datetime.fromisoformat(body["payload"]["sent_at"]) == by_seq[1].sent_at

    while "canary-RUN1-000006" not in ingest.received:  # its answer was given up on, not the event
        assert time.monotonic() < deadline + 5
        time.sleep(0.05)

    # The table lost seq 3 and 8-9 (accepted all the same) and stored seq 10 twice.
    lookups: list[list[str]] = []

    def lookup(keys: list[str]) -> dict[str, KeyInfo]:
        lookups.append(keys)
        table = {}
        for key, (seq, at, _) in ingest.received.items():
            if seq in (3, 8, 9) or key not in keys:
                continue
            created = at + timedelta(milliseconds=20)
            table[key] = KeyInfo(2 if seq == 10 else 1, created, created)
        return table

    report = account(results, lookup, interval_seconds=sender.interval_seconds)
    assert len(lookups) == 1 and len(lookups[0]) == len(results)  # one set-based lookup
    assert report.sent == len(results)
    assert report.rejected == 3  # two 503s and one unanswered post: user-facing errors
    assert report.lost == 3 and report.duplicated == 1
    assert report.stored == len(results) - 3 - 3 - 1
    # seq 6 was stored although its answer never came: counted, but as a user-facing error.
    assert report.rejected_but_stored == 1
    assert [(a, b) for a, b in report.loss_windows] == [
        (by_seq[3].sent_at, by_seq[3].sent_at),
        (by_seq[8].sent_at, by_seq[9].sent_at),
    ]
    expected_rpo = (by_seq[9].sent_at - by_seq[8].sent_at).total_seconds() + 0.1
    assert report.rpo_seconds == pytest.approx(expected_rpo, abs=0.002)
    assert report.latency_p50_s is not None and 0.0 < report.latency_p50_s < 0.5
    assert report.latency_max_s is not None and report.latency_max_s >= report.latency_p95_s  # type: ignore[operator]


def _results(statuses: list[int | None], start: datetime, interval: float = 0.5) -> list[CanaryResult]:
    return [
        CanaryResult(i + 1, canary_key("R", i + 1), start + timedelta(seconds=i * interval), s, None, 1.0)
        for i, s in enumerate(statuses)
    ]


def test_single_lost_canary_is_one_interval_of_loss() -> None:
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    results = _results([202] * 5, t)
    stored = {r.key: KeyInfo(1, r.sent_at + timedelta(seconds=1), r.sent_at) for r in results if r.seq != 3}
    report = account(results, lambda keys: stored)
    assert report.lost == 1
    assert report.rpo_seconds == pytest.approx(0.5)  # inferred interval
    assert report.rpo_upper_bound_seconds == pytest.approx(1.0)  # seq 2 .. seq 4
    assert report.latency_p50_s == pytest.approx(1.0)


def test_rejections_inside_a_loss_window_do_not_split_it() -> None:
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    results = _results([202, 202, 503, 202, 202, 202], t, interval=1.0)
    stored = {r.key: KeyInfo(1, r.sent_at, r.sent_at) for r in results if r.seq in (1, 6)}
    report = account(results, lambda keys: stored, interval_seconds=1.0)
    assert report.rejected == 1 and report.lost == 3
    assert report.loss_windows == [(results[1].sent_at, results[4].sent_at)]
    assert report.rpo_seconds == pytest.approx(4.0)  # seq 2..5 = 3 s + one interval


def test_nothing_lost_means_rpo_zero_and_no_canaries_is_empty() -> None:
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    results = _results([202, 202], t)
    stored = {r.key: KeyInfo(1, r.sent_at, r.sent_at) for r in results}
    report = account(results, lambda keys: stored)
    assert (report.lost, report.rpo_seconds, report.loss_windows) == (0, 0.0, [])
    empty = account([], lambda keys: pytest.fail("no lookup without keys"))  # type: ignore[arg-type,return-value]
    assert empty.sent == 0 and empty.latency_p50_s is None


def test_rate_and_url_are_checked() -> None:
    with pytest.raises(InvalidParameters, match="canary_rate"):
        CanarySender("http://127.0.0.1:1/v1/events", "R", rate_per_second=0)
    with pytest.raises(InvalidParameters, match="ingest_url"):
        CanarySender("", "R")


def test_unreachable_ingest_counts_every_canary_as_a_user_facing_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1/events"
    sender = CanarySender(dead, "R", rate_per_second=20.0, timeout=0.5)
    with sender:
        time.sleep(0.3)
    results = sender.results()
    assert results and all(r.status is None and "no answer" in (r.error or "") for r in results)
    assert sender.counts()["failed"] == len(results)
