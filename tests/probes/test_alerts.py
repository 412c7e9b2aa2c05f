"""The alert probe against a real Prometheus evaluating a rule and a real Alertmanager receiving it."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gamedaylib.exceptions import ProbeError
from gamedaylib.lab.processes import find_binary
from gamedaylib.probes import http_request
from gamedaylib.probes.alerts import AlertEvent, AlertProbe, seconds_after

pytestmark = pytest.mark.timeout(90)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(*names: str) -> str:
    """An optional part's binary, by the lab's own lookup (``GAMEDAY_LAB_WITHOUT`` honoured): the test
    needs that part and is skipped on a machine without it."""
    found = find_binary(*names)
    if found is None:
        pytest.skip(f"none of {names} available (not installed, or hidden by GAMEDAY_LAB_WITHOUT)")
    return found


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_http(url: str, proc: subprocess.Popen[bytes], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, f"{url}: process exited"
        try:
            if http_request(url, probe="test", timeout=0.5).status == 200:
                return
        except ProbeError:
            pass
        assert time.monotonic() < deadline, f"{url} not ready within {seconds} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def alerting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, datetime]]:
    """Alertmanager + Prometheus with NATSUnreachable firing at once and a never-firing rule."""
    prometheus = _binary("prometheus")
    alertmanager = _binary("prometheus-alertmanager", "alertmanager")
    tmp = tmp_path_factory.mktemp("alerting")
    am_port, prom_port = _free_port(), _free_port()
    (tmp / "am.yml").write_text("route: {receiver: sink}\nreceivers: [{name: sink}]\n")
    (tmp / "rules.yml").write_text(
        "groups:\n"
        "  - name: gameday\n"
        "    rules:\n"
        "      - alert: NATSUnreachable\n        expr: vector(1)\n        for: 0s\n"
        "        labels: {severity: critical}\n"
        "      - alert: EventBufferGrowing\n        expr: vector(0) > 1\n        for: 0s\n"
        # the same alert in two environments of a shared Prometheus
        "      - alert: NATSCircuitBreakerOpen\n"
        "        expr: label_replace(vector(2), 'namespace', 'teei-prod', '', '')"
        " or label_replace(vector(2), 'namespace', 'teei-staging', '', '')\n"
        "        for: 0s\n"
    )
    (tmp / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{tmp / 'rules.yml'}']\n"
        "alerting:\n  alertmanagers:\n"
        f"    - static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]\n"
    )
    am = subprocess.Popen(
        [
            alertmanager,
            f"--config.file={tmp / 'am.yml'}",
            f"--storage.path={tmp / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    before = datetime.now(timezone.utc)
    prom = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            # Prometheus finds Alertmanager ~5 s after start and by default re-sends a firing alert
            # only once a minute: the first send would be lost and the next come 60 s later.
            "--rules.alert.resend-delay=1s",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        am_url, prom_url = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"
        _wait_http(f"{am_url}/-/ready", am)
        _wait_http(f"{prom_url}/-/ready", prom)
        yield am_url, prom_url, before
    finally:
        _stop(prom)
        _stop(am)


def _wait_for(
    probe: AlertProbe, t0: datetime, seconds: float = 20, source: str | None = None
) -> AlertEvent | None:
    deadline = time.monotonic() + seconds
    while True:
        event = probe.first_fire_after(t0)
        if (event is not None and source in (None, event.source)) or time.monotonic() > deadline:
            return event
        time.sleep(0.25)


def test_first_fire_seen_via_alertmanager(alerting: tuple[str, str, datetime]) -> None:
    am_url, prom_url, before = alerting
    probe = AlertProbe(am_url, prom_url)
    assert probe.available()
    event = _wait_for(probe, before, source="alertmanager")
    assert event is not None, "NATSUnreachable never reached Alertmanager"
    assert event.name == "NATSUnreachable"
    assert event.source == "alertmanager"
    assert event.labels.get("severity") == "critical"
    assert before - timedelta(seconds=1) <= event.starts_at <= datetime.now(timezone.utc)
    assert 0 <= (seconds_after(event, before) or -1) < 30
    # Prometheus's own view of the same firing (activeAt + for) agrees with Alertmanager's startsAt.
    seen_by_prometheus = AlertProbe(None, prom_url).first_fire_after(before)
    assert seen_by_prometheus is not None
    assert abs((seen_by_prometheus.starts_at - event.starts_at).total_seconds()) < 1.5
    # The rule that never fires is never reported; a window after the alert began finds nothing.
    assert all(e.name != "EventBufferGrowing" for e in probe.timeline(before))
    assert probe.first_fire_after(datetime.now(timezone.utc) + timedelta(seconds=5)) is None


def test_first_fire_seen_via_prometheus_fallback(alerting: tuple[str, str, datetime]) -> None:
    _, prom_url, before = alerting
    probe = AlertProbe(None, prom_url)
    assert probe.available()
    event = _wait_for(probe, before)
    assert event is not None and event.name == "NATSUnreachable"
    assert event.source == "prometheus"
    assert before - timedelta(seconds=1) <= event.starts_at <= datetime.now(timezone.utc)


def test_unreachable_alertmanager_falls_back_to_prometheus(alerting: tuple[str, str, datetime]) -> None:
    _, prom_url, before = alerting
    probe = AlertProbe(f"http://127.0.0.1:{_free_port()}", prom_url, timeout=0.5)
    event = _wait_for(probe, before)
    assert event is not None and event.source == "prometheus"


def test_alertmanager_that_never_got_the_alert_falls_back_to_prometheus(
    alerting: tuple[str, str, datetime], tmp_path: Path
) -> None:
    """Prometheus fires but its alerts never reach this Alertmanager (a misrouted pipeline)."""
    _, prom_url, before = alerting
    port = _free_port()
    (tmp_path / "am.yml").write_text("route: {receiver: sink}\nreceivers: [{name: sink}]\n")
    lonely = subprocess.Popen(
        [
            _binary("prometheus-alertmanager", "alertmanager"),
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/-/ready", lonely)
        probe = AlertProbe(f"http://127.0.0.1:{port}", prom_url)
        event = _wait_for(probe, before)
        assert event is not None and event.source == "prometheus"
        assert probe.timeline(before) == []  # Alertmanager answered: its (empty) view is the timeline
    finally:
        _stop(lonely)


def test_poll_remembers_alerts_after_sources_forget_them(alerting: tuple[str, str, datetime]) -> None:
    am_url, _, before = alerting
    probe = AlertProbe(am_url, None)
    assert _wait_for(probe, before) is not None
    probe.alertmanager_url = f"http://127.0.0.1:{_free_port()}"  # the source is gone
    probe.timeout = 0.5
    remembered = probe.first_fire_after(before)
    assert remembered is not None and remembered.name == "NATSUnreachable"


def test_absent_sources_are_not_available() -> None:
    assert AlertProbe(None, None).available() is False
    dead = f"http://127.0.0.1:{_free_port()}"
    probe = AlertProbe(dead, dead, timeout=0.5)
    assert probe.available() is False
    with pytest.raises(ProbeError, match="unreachable"):
        probe.timeline(datetime.now(timezone.utc))


@pytest.mark.parametrize("source", ["alertmanager", "prometheus"])
def test_namespace_keeps_other_environments_alerts_out(
    alerting: tuple[str, str, datetime], source: str
) -> None:
    """A shared Prometheus/Alertmanager holds staging's alert of the same name: only the gameday's
    namespace counts."""
    am_url, prom_url, before = alerting
    names = ("NATSCircuitBreakerOpen",)
    everyone = AlertProbe(am_url if source == "alertmanager" else None, prom_url)
    deadline = time.monotonic() + 20
    while True:
        seen = {
            e.labels.get("namespace")
            for e in everyone.timeline(before)
            if e.name in names and e.source == source
        }
        if seen == {"teei-prod", "teei-staging"} or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert seen == {"teei-prod", "teei-staging"}, "without a namespace both environments' alerts count"
    for namespace in ("teei-prod", "teei-staging"):
        probe = AlertProbe(am_url if source == "alertmanager" else None, prom_url, namespace=namespace)
        event = probe.first_fire_after(before, names)
        assert event is not None and event.source == source and event.labels["namespace"] == namespace
        assert {e.labels.get("namespace") for e in probe.timeline(before)} == {namespace}
    # the lab's alerts carry no namespace: a probe given one sees none of them
    lab_like = AlertProbe(am_url if source == "alertmanager" else None, prom_url, namespace="teei-prod")
    assert all(e.name != "NATSUnreachable" for e in lab_like.timeline(before))
