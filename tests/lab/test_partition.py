"""A healthy lab (3 NATS nodes, 2 replicas of each service) through a partition: the cut isolates the
services from every NATS node at once (nothing reaches any node's stream or consumer while it lasts),
nothing accepted is lost or doubled, the backlog drains, the gateways show their retries and their
open circuit breakers, the SSE stream keeps answering; cuts heal at their deadline; reset mode resets
the services' connections."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from labtools import RunningLab, running_lab, wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with running_lab(tmp_path_factory, {"lab_event_rate": 20}) as lab:
        yield lab


def read_sse_events(url: str, count: int, timeout: float) -> list[str]:
    """The first ``count`` ``data:`` lines of an SSE stream."""
    lines: list[str] = []
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        while len(lines) < count:
            line = response.readline().decode()
            if not line:
                break
            if line.startswith("data:"):
                lines.append(line)
    return lines


def node_views(lab: RunningLab) -> list[tuple[int, int]]:
    """(stream EVENTS last_seq, consumer delivered stream_seq) as each NATS node sees them."""
    views = []
    for url in lab.state["nats_monitor_urls"]:
        with urllib.request.urlopen(url + "/jsz?consumers=true", timeout=5) as response:
            jsz = json.loads(response.read())
        streams = [s for a in jsz.get("account_details") or [] for s in a.get("stream_detail") or []]
        stream = next(s for s in streams if s["name"] == "EVENTS")
        consumer = next(c for c in stream.get("consumer_detail") or [] if c["name"] == "reporting")
        views.append((stream["state"]["last_seq"], consumer["delivered"]["stream_seq"]))
    return views


def test_ten_second_partition_loses_nothing_and_doubles_nothing(healthy: RunningLab) -> None:
    wait_for(lambda: healthy.gateway("events_published_total") > 20, 30, "events to flow")
    retries_before = healthy.gateway("nats_retry_total")
    status = healthy.partition(True, 10)
    assert status["active"] and status["mode"] == "blackhole" and status["deadline"]
    cut_at = time.monotonic()

    sse: list[str] = []
    reader = threading.Thread(
        target=lambda: sse.extend(read_sse_events(healthy.url("gateway_url") + "/v1/metrics/stream", 3, 8)),
    )
    time.sleep(2)
    reader.start()
    breaker_states, buffer_sizes, connected = set(), [], set()
    seen_by_nodes: list[list[tuple[int, int]]] = []  # (stream last_seq, consumer delivered) per node
    while time.monotonic() - cut_at < 9.5:
        if time.monotonic() - cut_at > 2.0:  # what was on the wire at the cut has landed by now
            seen_by_nodes.append(node_views(healthy))
        breaker_states.update(healthy.gateways("circuit_breaker_state"))
        buffer_sizes.append(healthy.gateway("event_buffer_size"))
        connected.update(healthy.gateways("nats_connected"))
        time.sleep(0.5)
    reader.join(10)
    assert len(sse) == 3, "the SSE stream must keep answering during the cut"
    assert '"buffer_size"' in sse[0] and '"connected"' in sse[0]
    assert 2.0 in breaker_states, "the circuit breaker never showed open during the cut"
    assert max(buffer_sizes) > 20, "events should pile up in the gateway's buffer"
    assert 0.0 in connected, "the gateway never noticed the blackholed connection"
    assert healthy.gateway("nats_retry_total") > retries_before
    assert len(seen_by_nodes) >= 5 and len(seen_by_nodes[0]) == len(healthy.state["nats_monitor_urls"])
    assert all(view == seen_by_nodes[0] for view in seen_by_nodes), (
        "a node's stream or consumer moved during the cut: some service reached NATS around the proxy"
    )

    healthy.wait_partition_over(10)  # healed by its own deadline
    healthy.wait_drained(timeout=60)  # every gateway's buffer back to empty, the backlog stored
    assert set(healthy.gateways("circuit_breaker_state")) == {0}

    stored = healthy.stored()
    answers = healthy.answers(older_than=2)
    accepted = [a["idempotency_key"] for a in answers if a["status"] == 202]
    assert len(accepted) > 150
    assert all(a["status"] == 202 for a in answers), "a healthy lab answers every user with 202"
    missing = [key for key in accepted if stored[key] == 0]
    doubled = [key for key, count in stored.items() if count > 1]
    assert missing == [], f"{len(missing)} accepted events lost"
    assert doubled == [], f"{len(doubled)} events stored more than once"
    assert healthy.reporting("events_stored_total") >= len(accepted)


def test_cut_with_five_second_deadline_heals_by_itself(healthy: RunningLab) -> None:
    status = healthy.partition(True, 5)
    assert status["active"]
    published = healthy.gateway("events_published_total")
    time.sleep(3)
    assert healthy.partition_status()["active"]
    wait_for(lambda: not healthy.partition_status()["active"], 5, "the 5 s deadline to heal the cut")
    healed = healthy.partition_status()
    assert healed["deadline"] is None and healed["since"] is None
    wait_for(lambda: healthy.gateway("events_published_total") > published + 10, 30,
             "events to flow again after the self-heal")
    healthy.wait_drained(timeout=60)


def test_reset_mode_resets_the_services_connections(healthy: RunningLab) -> None:
    before = healthy.log("gateway").count("nats disconnected")
    status = healthy.partition(True, 8, mode="reset")
    assert status["mode"] == "reset"
    # a reset is noticed at once, not after missed pings
    wait_for(lambda: healthy.log("gateway").count("nats disconnected") > before, 4,
             "the gateway to see its connection reset")
    assert set(healthy.gateways("nats_connected")) == {0}
    healthy.wait_partition_over(10)
    healthy.wait_drained(timeout=60)
    stored = healthy.stored()
    assert not [key for key, count in stored.items() if count > 1]
