"""Helpers for tests that run `gameday` as a user would (imported as `runtools`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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
