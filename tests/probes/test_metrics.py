"""Service scrapes against a real prometheus_client endpoint; PrometheusProbe against a real Prometheus."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from gamedaylib.exceptions import ProbeError
from gamedaylib.lab.processes import find_binary
from gamedaylib.probes.metrics import (
    ADMIN_API_NOTE,
    MetricsSnapshot,
    PrometheusProbe,
    ServiceMetrics,
    parse,
    scrape,
)

pytestmark = pytest.mark.timeout(60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def service() -> Iterator[tuple[str, CollectorRegistry]]:
    """A real HTTP /metrics endpoint shaped like the lab gateway's."""
    registry = CollectorRegistry()
    Gauge("event_buffer_size", "buffered", registry=registry).set(42)
    Gauge("event_buffer_capacity", "capacity", registry=registry).set(10000)
    requests = Counter("http_requests", "answers", ["code"], registry=registry)
    requests.labels(code="202").inc(100)
    requests.labels(code="503").inc(7)
    requests.labels(code="500").inc(2)
    Counter("nats_retry", "retries", registry=registry).inc(3)
    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{port}/metrics", registry
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_scrape_reads_values_and_sums(service: tuple[str, CollectorRegistry]) -> None:
    url, _ = service
    snap = scrape(url)
    assert isinstance(snap, MetricsSnapshot)
    assert snap.value("event_buffer_size") == 42
    assert snap.value("nats_retry_total") == 3
    assert snap.value("http_requests_total", code="503") == 7
    assert snap.sum("http_requests_total") == 109
    assert snap.sum("http_requests_total", code="5xx") == 9
    assert snap.value("no_such_metric") is None
    assert snap.sum("http_requests_total", code="404") is None


def test_service_metrics_reports_each_service_or_its_error(service: tuple[str, CollectorRegistry]) -> None:
    url, _ = service
    dead = f"http://127.0.0.1:{_free_port()}/metrics"
    metrics = ServiceMetrics({"api-gateway": url, "reporting": dead}, timeout=0.5)
    try:
        sampled = metrics.sample()
    finally:
        metrics.close()
    assert isinstance(sampled["api-gateway"], MetricsSnapshot)
    assert sampled["api-gateway"].value("event_buffer_capacity") == 10000
    assert isinstance(sampled["reporting"], ProbeError)
    assert "unreachable" in str(sampled["reporting"])


def test_garbage_is_not_metrics() -> None:
    with pytest.raises(ProbeError, match="not Prometheus text"):
        parse("this is { not metrics", "http://x/metrics")


# -- a real Prometheus ------------------------------------------------------------------------------


def _start_prometheus(tmp: Path, scrape_url: str, *, admin: bool) -> tuple[subprocess.Popen[bytes], str]:
    binary = find_binary("prometheus")  # needs Prometheus (the lab's lookup: GAMEDAY_LAB_WITHOUT honoured)
    if not binary:
        pytest.skip("prometheus not available (not installed, or hidden by GAMEDAY_LAB_WITHOUT)")
    target = scrape_url.split("//", 1)[1].split("/", 1)[0]
    config = tmp / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: api-gateway\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = _free_port()
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    if admin:
        args.append("--web.enable-admin-api")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_ready(probe: PrometheusProbe, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while not probe.ready():
        assert proc.poll() is None, "prometheus exited"
        assert time.monotonic() < deadline, "prometheus not ready within 20 s"
        time.sleep(0.1)


def test_prometheus_probe_queries_and_snapshots(
    tmp_path: Path, service: tuple[str, CollectorRegistry]
) -> None:
    url, _ = service
    proc, prom_url = _start_prometheus(tmp_path, url, admin=True)
    probe = PrometheusProbe(prom_url)
    try:
        _wait_ready(probe, proc)
        deadline = time.monotonic() + 15
        while probe.value('event_buffer_size{job="api-gateway"}') is None:
            assert time.monotonic() < deadline, "first scrape not seen within 15 s"
            time.sleep(0.2)
        assert probe.value('event_buffer_size{job="api-gateway"}') == 42
        assert probe.value('sum(http_requests_total{code=~"5.."})') == 9
        assert probe.value("1 + 1") == 2  # scalar
        assert probe.value("absent_metric_xyz") is None
        now = datetime.now(timezone.utc)
        series = probe.range_query("event_buffer_size", now - timedelta(seconds=30), now, "1s")
        assert series and all(float(v) == 42 for _, v in series[0]["values"])
        with pytest.raises(ProbeError, match="rejected"):
            probe.query("sum(")

        name = probe.snapshot()
        assert (tmp_path / "data" / "snapshots" / name).is_dir()
    finally:
        probe.close()
        _stop(proc)


def test_snapshot_without_admin_api_says_how_to_enable_it(
    tmp_path: Path, service: tuple[str, CollectorRegistry]
) -> None:
    url, _ = service
    proc, prom_url = _start_prometheus(tmp_path, url, admin=False)
    probe = PrometheusProbe(prom_url)
    try:
        _wait_ready(probe, proc)
        with pytest.raises(ProbeError) as caught:
            probe.snapshot()
        assert ADMIN_API_NOTE in str(caught.value)
    finally:
        probe.close()
        _stop(proc)


def test_unreachable_prometheus() -> None:
    probe = PrometheusProbe(f"http://127.0.0.1:{_free_port()}", timeout=0.5)
    try:
        assert probe.ready() is False
        with pytest.raises(ProbeError, match="unreachable"):
            probe.value("up")
    finally:
        probe.close()
