"""Monitoring blind at pre-flight: the service readings (buffer, 5xx answers: what the stop conditions
judge) come from Prometheus; with Prometheus down the stop conditions cannot see, so nothing is
injected (exit 2, the input named). Its own lab: it kills that lab's Prometheus.

Combinations: Prometheus only and both (Alertmanager, when there, is killed too); with neither part
the services are scraped directly and there is no Prometheus to lose (skipped). Marked
``optional_parts``: `make test` runs it with each combination."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from runtools import combination
from safetytools import SHORT, LabHandle, gameday, params_args, read_journal, scorecard

pytestmark = [pytest.mark.slow, pytest.mark.optional_parts, pytest.mark.timeout(300)]

REQUIRED = "required_metrics=[rto_seconds, rpo_seconds, event_loss_count, user_facing_errors, alert_fire_seconds]"


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def test_prometheus_down_at_preflight_refuses_naming_the_input(lab: LabHandle, tmp_path: Path) -> None:
    """The service readings (buffer, 5xx answers: what the stop conditions judge) come from Prometheus;
    with Prometheus down the stop conditions are blind, so nothing is injected: exit 2, input named."""
    if combination(lab.state) == "neither":
        pytest.skip("combination 'neither': no Prometheus to lose (the services are scraped directly)")
    lab.settle()
    cuts = lab.partition()["cuts"]
    for name in ("prometheus", "alertmanager"):
        if lab.state.get(f"{name}_url"):
            _kill(lab.state["pids"][name])
    proc = gameday("run", "-p", f"lab_dir={lab.lab_dir}", *params_args(SHORT), "-p", REQUIRED,
                   "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    archive = Path(proc.stdout.strip().splitlines()[-1])
    entries = read_journal(archive)
    blind = [e for e in entries if e["kind"] == "check" and e["name"].startswith("stop condition input readable")]
    assert blind and all(not e["ok"] and e["fatal"] for e in blind)
    assert any("stop_buffer_fraction" in e["name"] and "Prometheus" in e["detail"] for e in blind), blind
    assert not any(e["kind"] in ("fault.requested", "fault.active") for e in entries)
    assert lab.partition()["cuts"] == cuts, "nothing was injected"
    card = scorecard(archive)
    assert card["verdict"] == "aborted" and "stop condition input readable" in card["reason"]
