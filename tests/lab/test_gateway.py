"""api-gateway ingest as a client sees it: good events are stored with their payload and accept time,
bad requests get a 4xx JSON error and nothing is stored, the SSE stream streams, metrics are named as
docs/ARCHITECTURE.md says."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest
from labtools import RunningLab, running_lab, wait_for

pytestmark = pytest.mark.timeout(180)

GATEWAY_METRICS = (
    "event_buffer_size", "event_buffer_capacity", "nats_retry_total", "nats_publish_errors_total",
    "nats_connected", "circuit_breaker_state", "events_accepted_total", "events_published_total",
    "events_dropped_total", "http_requests_total",
)
REPORTING_METRICS = ("nats_retry_total", "events_stored_total", "duplicate_events_total", "nats_connected")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with running_lab(tmp_path_factory, {"lab_event_rate": 5}) as lab:
        yield lab


def post(lab: RunningLab, body: bytes, content_type: str = "application/json") -> tuple[int, Any]:
    request = urllib.request.Request(lab.url("gateway_url") + "/v1/events", data=body,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def rows_for(lab: RunningLab, key: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(lab.state["events_dsn"]) as conn:
        return conn.execute(
            "SELECT type, payload, occurred_at, created_at FROM events WHERE idempotency_key = %s", (key,)
        ).fetchall()


def test_accepted_event_is_stored_with_payload_and_accept_time(lab: RunningLab) -> None:
    key = f"test-{uuid.uuid4().hex}"
    payload = {"match": 42, "note": "é" * 10, "blob": "x" * 50_000}  # big but under 64 KiB
    before = datetime.now(timezone.utc)
    code, answer = post(lab, json.dumps({"type": "buddy.match", "idempotency_key": key,
                                         "payload": payload}).encode())
    assert code == 202, answer
    rows = wait_for(lambda: rows_for(lab, key), 15, "the event in PostgreSQL")
    assert len(rows) == 1
    event_type, stored_payload, occurred_at, created_at = rows[0]
    assert event_type == "buddy.match" and stored_payload == payload
    assert before <= occurred_at <= created_at


def test_same_key_twice_is_stored_once(lab: RunningLab) -> None:
    key = f"test-{uuid.uuid4().hex}"
    body = json.dumps({"type": "report.generated", "idempotency_key": key, "payload": {}}).encode()
    assert post(lab, body)[0] == 202
    assert post(lab, body)[0] == 202
    wait_for(lambda: rows_for(lab, key), 15, "the event in PostgreSQL")
    published = lab.gateway("events_published_total")
    wait_for(lambda: lab.gateway("event_buffer_size") == 0, 10, "the buffer to empty")
    assert published > 0
    assert len(rows_for(lab, key)) == 1


BAD_REQUESTS = {
    "malformed json": (b'{"type": "page.view", "idempotency_key": ', 400),
    "not an object": (b'["page.view"]', 400),
    "missing type": (b'{"idempotency_key": "KEY", "payload": {}}', 422),
    "missing key": (b'{"type": "page.view", "payload": {}}', 422),
    "missing payload": (b'{"type": "page.view", "idempotency_key": "KEY"}', 422),
    "type not a string": (b'{"type": 7, "idempotency_key": "KEY", "payload": {}}', 422),
    "key not a string": (b'{"type": "page.view", "idempotency_key": 7, "payload": {}}', 422),
    "payload not an object": (b'{"type": "page.view", "idempotency_key": "KEY", "payload": "x"}', 422),
    "empty key": (b'{"type": "page.view", "idempotency_key": "", "payload": {}}', 422),
    "wildcard type": (b'{"type": "events.>", "idempotency_key": "KEY", "payload": {}}', 422),
    "oversized": (
        b'{"type": "page.view", "idempotency_key": "KEY", "payload": {"blob": "' + b"x" * 70_000 + b'"}}',
        413,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_gets_json_error_and_nothing_is_stored(lab: RunningLab, case: str) -> None:
    key = f"bad-{uuid.uuid4().hex}"
    body, expected = BAD_REQUESTS[case]
    code, answer = post(lab, body.replace(b"KEY", key.encode()))
    assert code == expected
    assert isinstance(answer, dict) and answer["error"]
    # a good event posted after it is stored: had the bad one been taken, it would be there too
    marker = f"marker-{uuid.uuid4().hex}"
    assert post(lab, json.dumps({"type": "page.view", "idempotency_key": marker, "payload": {}}).encode())[0] == 202
    wait_for(lambda: rows_for(lab, marker), 15, "the marker event")
    assert rows_for(lab, key) == []


def test_sse_stream_sends_live_numbers_every_second(lab: RunningLab) -> None:
    started = datetime.now(timezone.utc)
    events = []
    with urllib.request.urlopen(lab.url("gateway_url") + "/v1/metrics/stream", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        while len(events) < 3:
            line = response.readline().decode()
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    elapsed = (datetime.now(timezone.utc) - started).total_seconds()
    assert 1.5 <= elapsed <= 6
    assert events[-1]["accepted"] >= events[0]["accepted"]
    for event in events:
        assert event["connected"] is True and event["buffer_capacity"] == 10000
        assert {"buffer_size", "accepted", "published", "circuit_breaker"} <= set(event)


def test_metrics_are_exposed_under_the_documented_names(lab: RunningLab) -> None:
    for name in GATEWAY_METRICS:
        lab.gateway(name)
    for name in REPORTING_METRICS:
        lab.reporting(name)
    replicas = lab.state["knobs"]["lab_service_replicas"]
    assert lab.gateways("event_buffer_capacity") == [10000] * replicas  # one buffer per replica
    assert lab.gateways("nats_connected") == [1] * replicas
    wait_for(lambda: lab.reporting("events_stored_total") > 0, 15, "events stored")
    with urllib.request.urlopen(lab.url("gateway_url") + "/healthz", timeout=5) as response:
        assert response.status == 200


def publish_raw(lab: RunningLab, messages: list[tuple[str, bytes]]) -> None:
    """Publish straight to JetStream (no Nats-Msg-Id), bypassing the gateway."""
    import asyncio

    import nats

    async def go() -> None:
        nc = await nats.connect(lab.url("nats_url"))
        js = nc.jetstream()
        for subject, data in messages:
            await js.publish(subject, data)
        await nc.close()

    asyncio.run(go())


def test_reporting_stores_a_redelivered_event_once_and_logs_the_repeat(lab: RunningLab) -> None:
    key = f"repeat-{uuid.uuid4().hex}"
    event = json.dumps({"idempotency_key": key, "type": "kintell.session", "payload": {"n": 1},
                        "occurred_at": datetime.now(timezone.utc).isoformat()}).encode()
    before = lab.reporting("duplicate_events_total")
    publish_raw(lab, [("events.kintell.session", event)] * 3)
    wait_for(lambda: lab.log("reporting").count(f"duplicate_event key={key}") == 2, 15,
             "two duplicate_event lines for the key")
    assert len(rows_for(lab, key)) == 1
    assert lab.reporting("duplicate_events_total") >= before + 2


def test_reporting_discards_a_malformed_message_and_keeps_going(lab: RunningLab) -> None:
    key = f"after-poison-{uuid.uuid4().hex}"
    good = json.dumps({"idempotency_key": key, "type": "page.view", "payload": {},
                       "occurred_at": datetime.now(timezone.utc).isoformat()}).encode()
    publish_raw(lab, [("events.page.view", b"not json at all"), ("events.page.view", b'{"type": 1}'),
                      ("events.page.view", good)])
    wait_for(lambda: rows_for(lab, key), 15, "the good event after the poison ones")
    # two replicas share the consumer: each poison message is discarded by whichever got it
    wait_for(lambda: lab.log("reporting").count("discarding malformed message") >= 2, 15,
             "both poison messages discarded")


def test_ground_truth_records_every_user_answer_and_skips_a_torn_last_line(
    lab: RunningLab, tmp_path: Any
) -> None:
    answers = wait_for(lambda: lab.answers() if len(lab.answers()) >= 5 else None, 15, "five user answers")
    for answer in answers:
        assert set(answer) == {"ts", "idempotency_key", "type", "status", "error", "gateway"}
        assert answer["idempotency_key"].startswith("user-")
        assert answer["gateway"] in {f"gateway-{i}" for i in range(lab.state["knobs"]["lab_service_replicas"])}
    assert {a["status"] for a in answers} == {202}
    wait_for(lambda: all(lab.stored()[a["idempotency_key"]] == 1 for a in answers), 15, "user events stored")

    from gamedaylib.exceptions import LabError
    from gamedaylib.lab.truth import read_answers

    (tmp_path / "truth").mkdir()
    good = json.dumps({"ts": "t", "idempotency_key": "k", "type": "page.view", "status": 202, "error": None})
    (tmp_path / "truth" / "answers.jsonl").write_text(good + "\n" + good[:20])
    assert read_answers(tmp_path) == [json.loads(good)]
    (tmp_path / "truth" / "answers.jsonl").write_text(good[:20] + "\n" + good + "\n")
    with pytest.raises(LabError):
        read_answers(tmp_path)
    assert read_answers(tmp_path / "nowhere") == []
