"""Readings: one typed snapshot per tick, from real parts. Service readings come from a real Prometheus
(Debian's) scraping two gateway and two reporting replicas (real ``prometheus_client`` endpoints),
aggregated with PromQL; without Prometheus the same replicas are scraped directly and aggregated the
same way. The consumer lag comes from a real nats-server's ``/jsz``. An input that cannot be read is
``None`` with the reason, never an exception."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from gamedaylib.exceptions import ProbeError, TargetError
from gamedaylib.lab.processes import find_binary
from gamedaylib.probes.alerts import AlertEvent
from gamedaylib.probes.nats import NatsMonitor
from gamedaylib.readings import SERVICE_READINGS, PipelineReader, Reading, ServiceReading, baseline
from gamedaylib.targets.base import Endpoints, FaultStatus

pytestmark = pytest.mark.timeout(90)

SERVICE_FIELDS = ("buffer_size", "buffer_capacity", "buffer_fraction_max", "dropped_total", "published_total",
                  "requests_total", "requests_5xx", "publish_errors_total", "retries_total", "gateway_connected",
                  "reporting_connected", "breaker", "gateway_instances", "reporting_instances", "stored_total")
# what the four replicas below add up to
EXPECTED = {
    "buffer_size": 23.0, "buffer_capacity": 40.0, "buffer_fraction_max": 0.9,  # replica b holds 18 of 20
    "dropped_total": 7.0, "published_total": 150.0, "requests_total": 132.0, "requests_5xx": 2.0,
    "publish_errors_total": 3.0, "retries_total": 13.0,  # gateways 4 + 6, reporting 1 + 2
    "gateway_connected": 0.0,  # replica b lost NATS: min over replicas
    "reporting_connected": 1.0, "breaker": 2.0,  # replica b's breaker is open: max over replicas
    "gateway_instances": 2.0, "reporting_instances": 2.0, "stored_total": 65.0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway(buffer: float, dropped: float, published: float, answers: dict[str, float], publish_errors: float,
            retries: float, connected: float, breaker: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    Gauge("event_buffer_size", "", registry=registry).set(buffer)
    Gauge("event_buffer_capacity", "", registry=registry).set(20)
    Counter("events_dropped", "", registry=registry).inc(dropped)
    Counter("events_published", "", registry=registry).inc(published)
    codes = Counter("http_requests", "", ["code"], registry=registry)
    for code, n in answers.items():
        codes.labels(code=code).inc(n)
    Counter("nats_publish_errors", "", registry=registry).inc(publish_errors)
    Counter("nats_retry", "", registry=registry).inc(retries)
    Gauge("nats_connected", "", registry=registry).set(connected)
    Gauge("circuit_breaker_state", "", registry=registry).set(breaker)
    return registry


def reporting(stored: float, retries: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("events_stored", "", registry=registry).inc(stored)
    Counter("nats_retry", "", registry=registry).inc(retries)
    Gauge("nats_connected", "", registry=registry).set(1)
    return registry


@dataclass
class Replicas:
    urls: dict[str, list[str]]  # job -> every replica's /metrics URL


@pytest.fixture(scope="module")
def replicas() -> Iterator[Replicas]:
    registries = {
        "api-gateway": [gateway(5, 3, 100, {"202": 90, "503": 2}, 1, 4, 1, 0),
                        gateway(18, 4, 50, {"202": 40}, 2, 6, 0, 2)],
        "reporting": [reporting(30, 1), reporting(35, 2)],
        "quiet-gateway": [gateway(0, 0, 10, {"202": 10}, 0, 0, 1, 0)],  # no 5xx answer yet
    }
    servers, urls = [], {}
    for job, regs in registries.items():
        for registry in regs:
            port = free_port()
            servers.append(start_http_server(port, addr="127.0.0.1", registry=registry))
            urls.setdefault(job, []).append(f"http://127.0.0.1:{port}/metrics")
    try:
        yield Replicas(urls)
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(5)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as answer:
        return json.loads(answer.read())


@pytest.fixture(scope="module")
def prometheus(replicas: Replicas, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus scraping every replica as its own instance of its job."""
    binary = find_binary("prometheus")  # needs Prometheus (the lab's lookup: GAMEDAY_LAB_WITHOUT honoured)
    if binary is None:
        pytest.skip("prometheus not available (Debian package prometheus; or hidden by GAMEDAY_LAB_WITHOUT)")
    folder = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "500ms", "scrape_timeout": "500ms"},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [u.split("/")[2] for u in urls]}]}
                           for job, urls in replicas.urls.items()],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder}/data",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 45
        while True:  # every replica scraped at least once
            assert proc.poll() is None, "prometheus exited"
            try:
                answer = _get_json(f"{url}/api/v1/query?query=count(up%20%3D%3D%201)")
                if answer["data"]["result"] and answer["data"]["result"][0]["value"][1] == "5":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus never scraped every replica"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real nats-server with JetStream: stream EVENTS, durable consumer ``reporting``, 12 messages
    not yet delivered. Yields its monitoring URL."""
    binary = Path(sys.executable).parent / "nats-server"
    found = str(binary) if binary.exists() else shutil.which("nats-server")
    if not found:
        pytest.skip("nats-server not installed")
    port, monitor = free_port(), free_port()
    proc = subprocess.Popen([found, "-js", "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor),
                             "-sd", str(tmp_path_factory.mktemp("js"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{monitor}"
    try:
        deadline = time.monotonic() + 20
        while not NatsMonitor(url, timeout=0.5).healthz():
            assert proc.poll() is None and time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.05)

        async def setup() -> None:
            import nats as nats_py
            from nats.js.api import ConsumerConfig

            nc = await nats_py.connect(f"nats://127.0.0.1:{port}")
            js = nc.jetstream()
            await js.add_stream(name="EVENTS", subjects=["events.>"])
            await js.add_consumer("EVENTS", ConsumerConfig(durable_name="reporting"))
            for _ in range(12):
                await js.publish("events.x", b"{}")
            await nc.close()

        asyncio.run(setup())
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


class Canaries:
    def counts(self) -> dict[str, int]:
        return {"sent": 9, "accepted": 7, "failed": 2}


def read_once(endpoints: Endpoints, **kwargs: Any) -> Reading:
    reader = PipelineReader(endpoints, **kwargs)
    try:
        return reader.read()
    finally:
        reader.close()


# -- the reading's shape ------------------------------------------------------------------------------


def test_a_reading_is_typed_and_lists_its_numeric_inputs() -> None:
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    r = Reading(at=at, lag_pending=3, fault_active=True, errors={"buffer_size": "down"})
    columns = Reading.columns()
    assert columns[:2] == ("lag_pending", "lag_ack_pending")
    assert "at" not in columns and "errors" not in columns and "sources" not in columns
    assert set(SERVICE_FIELDS) <= set(columns)
    values = r.values()
    assert values["lag_pending"] == 3.0 and values["fault_active"] == 1.0 and values["buffer_size"] is None
    assert r.readable("lag_pending") and not r.readable("buffer_size") and not r.readable("no_such_input")


def test_service_readings_as_promql() -> None:
    assert ServiceReading("buffer_size", "api-gateway", "sum", "event_buffer_size").promql('job="gw"') == \
        'sum(event_buffer_size{job="gw"})'
    assert ServiceReading("gateway_instances", "api-gateway", "count", "up").promql('job="gw"') == \
        'count(up{job="gw"} == 1)'
    fivexx = ServiceReading("requests_5xx", "api-gateway", "sum", "http_requests_total", 'code=~"5.."')
    assert fivexx.promql('job="gw"') == \
        '(sum(http_requests_total{code=~"5..",job="gw"}) or 0 * count(up{job="gw"} == 1))'
    assert {r.service for r in SERVICE_READINGS} == {"api-gateway", "reporting"}


# -- real Prometheus, real nats-server ----------------------------------------------------------------


def test_every_input_through_prometheus_aggregated_over_every_instance(prometheus: str, nats: str) -> None:
    endpoints = Endpoints(prometheus_url=prometheus, nats_monitor_urls=(nats,), nats_monitor_url=nats)
    r = read_once(endpoints, canaries=Canaries(), fault_status=lambda: FaultStatus(active=True))
    assert {name: getattr(r, name) for name in SERVICE_FIELDS} == pytest.approx(EXPECTED)
    assert (r.lag_pending, r.lag_ack_pending) == (12, 0)  # pending; in flight beside it, never added
    assert (r.canaries_sent, r.canaries_failed, r.fault_active) == (9, 2, True)
    assert set(r.errors) == {"alerts_firing"}  # no Alertmanager nor Prometheus alert probe was given
    assert all(r.sources[name] == f"Prometheus {prometheus}" for name in SERVICE_FIELDS)
    assert r.sources["lag_pending"].startswith("/jsz of the consumer leader")
    assert r.at.tzinfo is not None


def test_prometheus_selectors_pick_the_instances_and_an_uncounted_label_reads_zero(prometheus: str) -> None:
    """``http_requests_total{code=~"5.."}`` has no series before the first 5xx answer: while the service
    is up that is 0, not "unreadable"."""
    endpoints = Endpoints(prometheus_url=prometheus, prometheus_selectors={"api-gateway": 'job="quiet-gateway"'})
    r = read_once(endpoints)
    assert (r.requests_5xx, r.requests_total, r.gateway_instances, r.buffer_fraction_max) == (0, 10, 1, 0)
    assert r.stored_total == 65  # reporting keeps its default selector (job="reporting")
    assert "requests_5xx" not in r.errors


def test_without_prometheus_the_replicas_are_scraped_directly_and_agree(prometheus: str, replicas: Replicas) -> None:
    direct = read_once(Endpoints(service_metrics={"api-gateway": tuple(replicas.urls["api-gateway"]),
                                                  "reporting": tuple(replicas.urls["reporting"])}))
    assert {name: getattr(direct, name) for name in SERVICE_FIELDS} == pytest.approx(EXPECTED)
    assert "scraped directly" in direct.sources["buffer_size"]
    via_prometheus = read_once(Endpoints(prometheus_url=prometheus))
    assert {n: getattr(direct, n) for n in SERVICE_FIELDS} == {n: getattr(via_prometheus, n) for n in SERVICE_FIELDS}


def test_a_replica_that_does_not_answer_is_missing_from_the_count(replicas: Replicas) -> None:
    r = read_once(Endpoints(service_metrics={"api-gateway": tuple(replicas.urls["api-gateway"]),
                                             "reporting": (replicas.urls["reporting"][0], dead_url() + "/metrics")}),
                  timeout=1.0)
    assert (r.reporting_instances, r.stored_total, r.gateway_instances) == (1, 30, 2)


def test_the_lag_is_read_from_the_server_that_leads_the_consumer(nats: str) -> None:
    """Finding the consumer leader across ``nats_monitor_urls`` is the probe's job: a first server
    that does not answer (a restarting pod) must not blind the reading while another one leads."""
    r = read_once(Endpoints(nats_monitor_urls=(dead_url(), nats)), timeout=1.0)
    assert r.lag_pending == 12, r.errors.get("lag_pending")


def test_an_unreadable_input_is_none_with_its_reason_never_an_exception() -> None:
    def broken_fault() -> FaultStatus:
        raise TargetError("the API server answered 503")

    started = time.monotonic()
    r = read_once(Endpoints(prometheus_url=dead_url(), nats_monitor_urls=(dead_url(),)), fault_status=broken_fault,
                  timeout=1.0)
    assert time.monotonic() - started < 10
    assert all(getattr(r, name) is None for name in (*SERVICE_FIELDS, "lag_pending", "fault_active"))
    assert r.errors["lag_pending"].startswith("NATS monitoring:")
    assert all(r.errors[name].startswith("Prometheus:") for name in SERVICE_FIELDS if name != "retries_total")
    assert r.errors["fault_active"] == "the API server answered 503"
    nothing = read_once(Endpoints())
    assert nothing.errors["buffer_size"] == "no Prometheus and no service /metrics URL configured"
    assert nothing.errors["lag_pending"] == "no NATS monitoring URL (nats_monitor_urls)"


# -- alerts ---------------------------------------------------------------------------------------------


class Alerts:
    """An alert probe (``probes.alerts.AlertProbe``'s ``poll``) answering what it is given."""

    def __init__(self, events: list[AlertEvent] | ProbeError) -> None:
        self.events = events
        self.polled: list[datetime | None] = []

    def poll(self, since: datetime | None = None) -> list[AlertEvent]:
        self.polled.append(since)
        if isinstance(self.events, ProbeError):
            raise self.events
        return self.events


def test_alerts_firing_counts_the_gamedays_alerts_from_t0_on() -> None:
    t0 = datetime.now(timezone.utc) - timedelta(seconds=30)
    events = [AlertEvent("NATSUnreachable", t0 + timedelta(seconds=5), "alertmanager", {"job": "api-gateway"}),
              AlertEvent("NATSUnreachable", t0 + timedelta(seconds=6), "alertmanager", {"job": "reporting"}),
              AlertEvent("EventBufferGrowing", t0 + timedelta(seconds=7), "alertmanager",
                         ends_at=t0 + timedelta(seconds=20)),  # resolved
              AlertEvent("DiskFull", t0, "alertmanager")]  # not one of this gameday's
    probe = Alerts(events)
    names = ("NATSUnreachable", "EventBufferGrowing")
    before = read_once(Endpoints(), alerts=probe, alert_names=names, t0=lambda: None)
    assert before.alerts_firing is None and "alerts_firing" not in before.errors and probe.polled == []
    after = read_once(Endpoints(), alerts=probe, alert_names=names, t0=lambda: t0)
    assert (after.alerts_firing, after.sources["alerts_firing"], probe.polled) == (2, "Alertmanager", [t0])
    failing = read_once(Endpoints(), alerts=Alerts(ProbeError("alerts", "Alertmanager unreachable")),
                        alert_names=names, t0=lambda: t0)
    assert failing.alerts_firing is None and failing.errors["alerts_firing"] == "Alertmanager unreachable"


# -- baselines ------------------------------------------------------------------------------------------


def test_a_baseline_is_the_median_over_a_window_not_one_instant() -> None:
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    window = [Reading(at=at + timedelta(seconds=i), lag_pending=lag, buffer_size=0, fault_active=i == 4,
                      errors={"stored_total": f"down {i}"}, sources={"lag_pending": f"leader {i}"})
              for i, lag in enumerate([3, 40, 5, 4, 2])]  # one instant of a healthy busy system reads 40
    base = baseline(window)
    assert (base.lag_pending, base.buffer_size, base.fault_active) == (4, 0, True)
    assert base.at == window[-1].at and base.sources == {"lag_pending": "leader 4"}
    assert base.stored_total is None and base.errors == {"stored_total": "down 4"}
    with pytest.raises(ValueError):
        baseline([])
