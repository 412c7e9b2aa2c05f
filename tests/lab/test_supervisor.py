"""The lab supervisor with real processes, in the default shape (3 NATS nodes, 2 replicas of each
service): up, status, up twice, partition with a deadline, Prometheus scraping every replica and every
node, the exporter and the sink, and `down` leaving nothing behind, also after a partition and after
`kill -9` of the supervisor or of the process that ran `lab up`.

The module's lab runs with the richest combination of optional parts this machine allows
(``COMBINATION``: both on CI); the two tests that depend on it say what each combination shows (the
other combinations are tests/lab/test_optional_parts.py's)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labtools import PARTS, best_combination, optional_parts

from gamedaylib.exceptions import LabAlreadyRunning
from gamedaylib.lab import processes as proc
from gamedaylib.lab.client import Lab
from gamedaylib.lab.supervisor import SCRAPE_JOBS

pytestmark = pytest.mark.timeout(240)

STATUS_FIELDS = (
    "gateway_url",
    "events_dsn",
    "nats_url",
    "nats_monitor_url",
    "prometheus_url",
    "alertmanager_url",
    "partition_active",
    "proxy_control_url",
    "gateway_metrics_url",
    "reporting_metrics_url",
    "exporter_metrics_url",
    "sink_url",
    "truth_file",
    "nats_urls",
    "nats_monitor_urls",
    "gateway_metrics_urls",
    "reporting_metrics_urls",
    "exporter_metrics_urls",
    "supervisor_pid",
    "started_at",
    "pids",
    "ports",
    "knobs",
    "up",
)
CORE_PROCESSES = {
    "nats-0", "nats-1", "nats-2", "postgres", "sink", "exporter", "proxy",
    "gateway-0", "gateway-1", "reporting-0", "reporting-1", "users",
}  # fmt: skip


def gameday(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gamedaylib.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def lab_processes(lab: Lab) -> list[int]:
    """Every live process of the lab: the recorded ones and the whole supervisor session."""
    pids = json.loads(lab.pids_path.read_text())
    sup = pids["supervisor"]["pid"]
    recorded = [c["pid"] for c in pids["children"].values()]
    return sorted({sup, *recorded, *proc.session_members(sup)})


def assert_all_gone(pids: list[int], lab: Lab, supervisor_pid: int) -> None:
    alive = [p for p in pids if proc.is_alive(p)]
    assert alive == [], f"processes left behind: {alive}"
    assert proc.session_members(supervisor_pid) == []
    assert not lab.state_path.exists()
    assert not lab.pids_path.exists()


@contextlib.contextmanager
def scratch_lab() -> Iterator[Lab]:
    """A lab in a fresh folder under the system temp dir, stopped and removed afterwards. Not under
    pytest's tmp_path: every pytest session started meanwhile (other suites on this machine) resets
    /tmp/pytest-of-<user> to 0700, which locks the unprivileged PostgreSQL out of its folder."""
    folder = Path(tempfile.mkdtemp(prefix="gameday-test-lab-"))
    lab = Lab(folder / "lab")
    try:
        yield lab
    finally:
        try:
            lab.down()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


COMBINATION = best_combination()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with optional_parts(COMBINATION), scratch_lab() as lab:
        lab.up()
        yield lab


def test_status_json_has_every_field_and_every_process_alive(lab: Lab) -> None:
    result = gameday("lab", "status", "--json", "--lab-dir", str(lab.lab_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    status = json.loads(result.stdout)
    missing = [f for f in STATUS_FIELDS if f not in status]
    assert missing == []
    assert status["up"] is True
    assert status["partition_active"] is False
    assert status["nats_url"].startswith("nats://127.0.0.1:")
    assert status["events_dsn"].startswith("postgresql://gameday@127.0.0.1:")
    monitoring = PARTS[COMBINATION]
    for part in ("prometheus", "alertmanager"):
        url = status[f"{part}_url"]
        assert url.startswith("http://127.0.0.1:") if part in monitoring else url is None, (COMBINATION, part)
    expected = CORE_PROCESSES | monitoring
    assert set(status["processes"]) == expected
    assert {n: p["alive"] for n, p in status["processes"].items()} == {n: True for n in expected}
    # one URL per node and per replica, the singular field being the first
    assert len(status["nats_urls"]) == len(status["nats_monitor_urls"]) == len(status["exporter_metrics_urls"]) == 3
    assert len(status["gateway_metrics_urls"]) == len(status["reporting_metrics_urls"]) == 2
    for single, many in (("nats_url", "nats_urls"), ("nats_monitor_url", "nats_monitor_urls"),
                         ("gateway_metrics_url", "gateway_metrics_urls"),
                         ("reporting_metrics_url", "reporting_metrics_urls"),
                         ("exporter_metrics_url", "exporter_metrics_urls")):
        assert status[single] == status[many][0] and len(set(status[many])) == len(status[many])
    assert status["nats_servers"] == ["nats-0", "nats-1", "nats-2"] and status["nats_cluster"] == "nats"
    assert set(status["hidden_parts"]) == PARTS["both"] - monitoring
    # every listed URL answers
    assert get_json(status["gateway_url"] + "/healthz")
    for url in status["nats_monitor_urls"]:
        assert get_json(url + "/healthz") == {"status": "ok"}
    for url in status["gateway_metrics_urls"] + status["reporting_metrics_urls"] + status["exporter_metrics_urls"]:
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200
    assert len(set(status["ports"].values())) == len(status["ports"])  # distinct ports


def test_human_status_names_every_process(lab: Lab) -> None:
    result = gameday("lab", "status", "--lab-dir", str(lab.lab_dir))
    assert result.returncode == 0
    assert f"lab up in {lab.lab_dir}" in result.stdout
    for name in CORE_PROCESSES:
        assert name in result.stdout


def test_events_flow_into_postgres(lab: Lab) -> None:
    import psycopg

    status = lab.status()
    deadline = time.monotonic() + 20
    count = 0
    while time.monotonic() < deadline and count == 0:
        with psycopg.connect(status["events_dsn"]) as conn:
            count = conn.execute("SELECT count(*) FROM events").fetchone()[0]  # type: ignore[index]
        time.sleep(0.5)
    assert count > 0


def test_up_twice_says_already_up_and_starts_nothing(lab: Lab) -> None:
    before = lab.status()
    with pytest.raises(LabAlreadyRunning):
        lab.up()
    result = gameday("lab", "up", "--lab-dir", str(lab.lab_dir))
    assert result.returncode == 0, result.stderr
    assert "already up" in result.stdout
    after = lab.status()
    assert after["supervisor_pid"] == before["supervisor_pid"]
    assert after["pids"] == before["pids"]


def test_up_with_other_knobs_than_the_running_lab_is_refused(lab: Lab) -> None:
    result = gameday("lab", "up", "-p", "lab_retry=false", "--lab-dir", str(lab.lab_dir))
    assert result.returncode == 2
    assert "lab_retry" in result.stderr


def test_exporter_serves_consumer_lag_under_the_exporter_names(lab: Lab) -> None:
    with urllib.request.urlopen(lab.status()["exporter_metrics_url"], timeout=5) as resp:
        text = resp.read().decode()
    lines = [line for line in text.splitlines() if line.startswith("jetstream_consumer_num_pending{")]
    assert any('stream_name="EVENTS"' in line and 'consumer_name="reporting"' in line for line in lines), text
    assert "jetstream_consumer_num_ack_pending{" in text
    assert "gameday_exporter_nats_up 1.0" in text


def test_sink_records_posts(lab: Lab) -> None:
    sink = lab.status()["sink_url"]
    req = urllib.request.Request(
        sink + "/slack/hook", data=b'{"text": "hello"}', headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
    posts = get_json(sink + "/posts?path=/slack")
    assert posts[-1]["path"] == "/slack/hook"
    assert posts[-1]["body"] == {"text": "hello"}
    assert (lab.lab_dir / "sink" / "posts.jsonl").read_text().count("/slack/hook") == 1


def prometheus_targets(prometheus_url: str, expected: dict[str, int], timeout: float = 20) -> dict[str, list[str]]:
    """``{job: [pod or instance of each target that is up]}`` once Prometheus scrapes as many targets
    per job as ``expected`` says, every one up (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = get_json(prometheus_url + "/api/v1/query?" + urllib.parse.urlencode({"query": "up"}))
        up: dict[str, list[str]] = {}
        for r in answer["data"]["result"]:
            if r["value"][1] == "1":
                up.setdefault(r["metric"]["job"], []).append(r["metric"].get("pod", r["metric"]["instance"]))
        if {job: len(targets) for job, targets in up.items()} == expected or time.monotonic() > deadline:
            return {job: sorted(targets) for job, targets in up.items()}
        time.sleep(0.5)


def test_prometheus_scrapes_every_replica_and_every_node_as_its_own_target(lab: Lab) -> None:
    if "prometheus" not in PARTS[COMBINATION]:
        pytest.skip(f"combination {COMBINATION!r}: no Prometheus (see test_optional_parts.py)")
    expected = {"api-gateway": 2, "reporting": 2, "nats-exporter": 3, "partition-proxy": 1,
                "prometheus": 1, "alertmanager": 1}
    assert set(expected) == set(SCRAPE_JOBS)
    if "alertmanager" not in PARTS[COMBINATION]:
        del expected["alertmanager"]
    targets = prometheus_targets(lab.status()["prometheus_url"], expected)
    assert {job: len(t) for job, t in targets.items()} == expected, targets
    assert targets["api-gateway"] == ["api-gateway-0", "api-gateway-1"]
    assert targets["reporting"] == ["reporting-0", "reporting-1"]
    assert targets["nats-exporter"] == ["nats-0", "nats-1", "nats-2"]


def test_partition_on_for_5_seconds_heals_by_itself(lab: Lab) -> None:
    result = gameday("lab", "partition", "on", "--for", "5", "--lab-dir", str(lab.lab_dir))
    assert result.returncode == 0, result.stderr
    assert "ACTIVE" in result.stdout
    cut = time.monotonic()
    assert lab.status()["partition_active"] is True
    while lab.status()["partition_active"] and time.monotonic() - cut < 15:
        time.sleep(0.2)
    healed_after = time.monotonic() - cut
    assert lab.status()["partition_active"] is False
    assert 4.0 <= healed_after <= 8.0


def test_partition_off_heals(lab: Lab) -> None:
    assert gameday("lab", "partition", "on", "--for", "60", "--lab-dir", str(lab.lab_dir)).returncode == 0
    assert lab.status()["partition_active"] is True
    result = gameday("lab", "partition", "off", "--lab-dir", str(lab.lab_dir))
    assert result.returncode == 0
    assert lab.status()["partition_active"] is False


def test_down_after_a_partition_leaves_no_process(lab: Lab) -> None:
    lab.partition(True, 60)
    time.sleep(1.0)
    pids = lab_processes(lab)
    sup = lab.status()["supervisor_pid"]
    assert len(pids) >= len(CORE_PROCESSES) + 1
    result = gameday("lab", "down", "--lab-dir", str(lab.lab_dir))
    assert result.returncode == 0, result.stderr
    assert_all_gone(pids, lab, sup)
    assert lab.status()["up"] is False
    assert gameday("lab", "status", "--lab-dir", str(lab.lab_dir)).returncode == 1


def test_dead_service_is_reported_and_down_works_after_kill_9_of_the_supervisor() -> None:
    with optional_parts("neither"), scratch_lab() as lab:  # the monitoring parts play no role here
        status = lab.up()
        pids = lab_processes(lab)
        # a dead service is reported, not restarted
        os.kill(status["pids"]["users"], signal.SIGKILL)
        assert proc.wait_gone([status["pids"]["users"]], 5) == []
        time.sleep(1.0)
        after = lab.status()
        assert after["up"] is True
        assert after["processes"]["users"] == {"pid": status["pids"]["users"], "alive": False}
        assert after["processes"]["gateway-0"]["alive"] is True
        described = gameday("lab", "status", "--lab-dir", str(lab.lab_dir))
        assert described.returncode == 1 and "DEAD" in described.stdout
        assert json.loads(lab.pids_path.read_text())["children"]["users"]["pid"] == status["pids"]["users"]
        os.kill(status["supervisor_pid"], signal.SIGKILL)
        assert proc.wait_gone([status["supervisor_pid"]], 5) == []
        assert lab.status()["up"] is False
        orphans = [p for p in pids if proc.is_alive(p)]
        assert orphans, "killing the supervisor alone should leave its children running"
        lab.down()
        assert_all_gone(pids, lab, status["supervisor_pid"])


def test_down_after_kill_9_of_lab_up_mid_start() -> None:
    with optional_parts("neither"), scratch_lab() as lab:
        _kill_lab_up_mid_start_then_down(lab)


def _kill_lab_up_mid_start_then_down(lab: Lab) -> None:
    up = subprocess.Popen(
        [sys.executable, "-m", "gamedaylib.cli", "lab", "up", "--lab-dir", str(lab.lab_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the supervisor has started a few children
            pids = json.loads(lab.pids_path.read_text()) if lab.pids_path.exists() else {}
            if len(pids.get("children") or {}) >= 3:
                break
            time.sleep(0.05)
        up.kill()
        up.wait()
        sup = json.loads(lab.pids_path.read_text())["supervisor"]["pid"]
        pids_before = lab_processes(lab)
        assert len(pids_before) >= 4
        result = gameday("lab", "down", "--lab-dir", str(lab.lab_dir))
        assert result.returncode == 0, result.stderr
        assert_all_gone(pids_before, lab, sup)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
