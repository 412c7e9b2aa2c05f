"""Helpers for tests that run `gameday` as a user would (imported as `runtools`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from gamedaylib.lab.processes import monitoring_binaries
from gamedaylib.probes.metrics import scrape
from gamedaylib.probes.nats import NatsMonitor

ROOT = Path(__file__).resolve().parent.parent
GAMEDAY = str(Path(sys.executable).with_name("gameday"))


def run_gameday(*args: str, cwd: Path | None = None, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    """Run the `gameday` console script as a user would; returns the finished process."""
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    return subprocess.run(
        [GAMEDAY, *args], capture_output=True, text=True, timeout=timeout, cwd=str(cwd or ROOT), env=env,
        check=False,
    )


def archive_of(proc: subprocess.CompletedProcess[str]) -> Path:
    """The archive folder: the last line on stdout."""
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"no stdout; stderr:\n{proc.stderr[-3000:]}"
    return Path(lines[-1].strip())


def scorecard(archive: Path) -> dict[str, Any]:
    return json.loads((archive / "scorecard.json").read_text(encoding="utf-8"))


def journal(archive: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (archive / "journal.jsonl").read_text(encoding="utf-8").splitlines()]


def metrics(card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in card["metrics"]}


def cluster_endpoints(state: dict[str, Any]) -> dict[str, Any]:
    """The URL parameters of a Kubernetes-target run whose services are a lab's (``lab status --json``):
    every NATS server's monitoring, Prometheus for the service readings (or, in a lab without it, the
    services' /metrics scraped directly), the ingest path and the SSE stream."""
    params: dict[str, Any] = {
        "nats_monitor_urls": state.get("nats_monitor_urls") or [state["nats_monitor_url"]],
        "ingest_url": state["gateway_url"] + "/v1/events",
        "stream_url": state["gateway_url"] + "/v1/metrics/stream",
    }
    if state.get("prometheus_url"):
        params["prometheus_url"] = state["prometheus_url"]
    else:
        params["service_metrics"] = {"api-gateway": state["gateway_metrics_url"],
                                     "reporting": state["reporting_metrics_url"]}
    if state.get("alertmanager_url"):
        params["alertmanager_url"] = state["alertmanager_url"]
    return params


# The combinations of optional parts the README allows: what each measures
COMBINATIONS = ("neither", "prometheus", "both")


def machine_combination() -> str:
    """The optional parts a lab started now runs, by the lab's own lookup
    (``processes.monitoring_binaries``: ``GAMEDAY_LAB_WITHOUT`` honoured): ``"both"``, ``"prometheus"``
    (Prometheus only) or ``"neither"``."""
    prometheus, alertmanager = monitoring_binaries()
    return "both" if alertmanager else "prometheus" if prometheus else "neither"


def combination(state: dict[str, Any]) -> str:
    """The optional parts a running lab has (``lab status --json``: ``prometheus_url``, ``alertmanager_url``)."""
    if not state.get("prometheus_url"):
        assert not state.get("alertmanager_url"), "no Alertmanager without Prometheus"
        return "neither"
    return "both" if state.get("alertmanager_url") else "prometheus"


def expected_alert_status(state: dict[str, Any]) -> str:
    """``alert_fire_seconds`` on a healthy run against this lab: measured (``pass``) through Alertmanager,
    or Prometheus's ``ALERTS`` series without it; ``not_measured`` with neither."""
    return "not_measured" if combination(state) == "neither" else "pass"


def settle(state: dict[str, Any], timeout: float = 120, calm_polls: int = 3,
           gateways: list[str] | None = None) -> datetime:
    """Wait until a new gameday's pre-flight would pass on a running lab (``lab status --json``) and
    what was accepted is processed: the consumer's lag (``num_pending``, read from its leader among
    every NATS node) and the gateway replicas' buffers back to what a healthy pipeline holds at the
    lab's rate (events between two publishes, awaiting their PubAck: one per replica plus a quarter of
    a second's events), then the consumer's ack floor past the stream's last sequence of that moment
    (a message delivered into a partition waits for its redelivery), on ``calm_polls`` polls in a row. ``gateways``: the replicas' metrics URLs to
    read (default: every replica's). Returns a moment before which every event a gateway accepted is
    either stored or lost for good (2 s before the buffers were first found empty)."""
    monitor = NatsMonitor(state.get("nats_monitor_urls") or [state["nats_monitor_url"]])
    gateways = gateways or state.get("gateway_metrics_urls") or [state["gateway_metrics_url"]]
    rate = float((state.get("knobs") or {}).get("lab_event_rate") or 0)
    deadline = time.monotonic() + timeout
    calm, lag, buffered = 0, None, None
    mark: int | None = None
    mark_at: datetime | None = None
    while calm < calm_polls:
        assert time.monotonic() < deadline, f"lab never settled: {lag}, buffers {buffered}, ack floor target {mark}"
        lag = monitor.consumer_lag("EVENTS", "reporting")
        buffered = [scrape(url).value("event_buffer_size") or 0 for url in gateways]
        quiet = lag.num_pending < 5 + rate * 0.05 and sum(buffered) <= len(gateways) + rate * 0.25
        if quiet and mark_at is None:
            mark, mark_at = lag.stream_last_seq, datetime.now(timezone.utc) - timedelta(seconds=2)
        processed = mark_at is not None and (mark is None or (lag.ack_floor_stream_seq or 0) >= mark)
        calm = calm + 1 if quiet and processed else 0
        time.sleep(0.5)
    assert mark_at is not None
    return mark_at
