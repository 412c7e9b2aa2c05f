"""The lab in each combination of optional parts the README allows, made with ``GAMEDAY_LAB_WITHOUT``
(the lab's binary lookup pretends a part is missing without uninstalling it):

- neither Prometheus nor Alertmanager (here on a single NATS server and one replica of each service,
  the small shape ``lab_nats_nodes=1``, ``lab_service_replicas=1`` keeps working);
- Prometheus only: it scrapes every replica and node and evaluates the alert rules, but no alert
  reaches the webhook sink;
- both: tests/lab/test_supervisor.py (status, targets) and tests/lab/test_monitoring.py (the alert
  reaches Alertmanager and the sink)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from labtools import RunningLab, optional_parts, running_lab, wait_for

from gamedaylib.lab.processes import WITHOUT_ENV, find_binary, hidden_parts

pytestmark = pytest.mark.timeout(240)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def status_json(lab: RunningLab) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "gamedaylib.cli", "lab", "status", "--json", "--lab-dir", str(lab.dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    status: dict[str, Any] = json.loads(result.stdout)
    return status


def firing(prometheus_url: str, alertname: str) -> list[dict[str, Any]]:
    query = f'ALERTS{{alertname="{alertname}",alertstate="firing"}}'
    answer = get_json(prometheus_url + "/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


# -- the override itself (no processes) -----------------------------------------------------------


def test_gameday_lab_without_hides_the_named_parts_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WITHOUT_ENV, " Alertmanager , prometheus,")
    assert hidden_parts() == {"alertmanager", "prometheus"}
    assert find_binary("alertmanager", "prometheus-alertmanager") is None
    assert find_binary("prometheus") is None
    assert find_binary("nats-server") is not None  # not named: found as usual
    monkeypatch.setenv(WITHOUT_ENV, "")
    assert hidden_parts() == frozenset()
    monkeypatch.delenv(WITHOUT_ENV)
    assert find_binary("nats-server") is not None


# -- neither part, single node, single replica ----------------------------------------------------


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    knobs = {"lab_event_rate": 20, "lab_nats_nodes": 1, "lab_service_replicas": 1}
    with optional_parts("neither"), running_lab(tmp_path_factory, knobs) as lab:
        yield lab


def test_without_prometheus_and_alertmanager_status_says_so(bare: RunningLab) -> None:
    status = status_json(bare)
    assert status["prometheus_url"] is None and status["alertmanager_url"] is None
    assert status["hidden_parts"] == ["alertmanager", "prometheus"]
    assert set(status["processes"]) == {
        "nats-0", "postgres", "sink", "exporter", "proxy", "gateway-0", "reporting-0", "users"
    }
    assert all(p["alive"] for p in status["processes"].values())


def test_a_single_nats_server_and_one_replica_of_each_service(bare: RunningLab) -> None:
    status = status_json(bare)
    assert status["nats_servers"] == ["nats-0"] and status["nats_cluster"] is None
    assert len(status["nats_monitor_urls"]) == 1 and status["nats_monitor_url"] == status["nats_monitor_urls"][0]
    assert len(status["gateway_metrics_urls"]) == len(status["reporting_metrics_urls"]) == 1
    jsz = get_json(status["nats_monitor_url"] + "/jsz?consumers=true")
    stream = jsz["account_details"][0]["stream_detail"][0]
    assert stream["name"] == "EVENTS" and not (stream.get("cluster") or {}).get("replicas")  # one copy
    assert not (jsz.get("meta_cluster") or {}).get("replicas")
    # the exporter reports a server that is not clustered as the leader of everything, as the real one
    with urllib.request.urlopen(status["exporter_metrics_url"], timeout=5) as response:
        text = response.read().decode()
    line = next(x for x in text.splitlines() if x.startswith("jetstream_consumer_num_pending{"))
    assert 'is_consumer_leader="true"' in line and 'server_name="nats-0"' in line and 'cluster=""' in line


def test_without_alertmanager_nothing_reaches_the_sink_and_a_partition_loses_nothing(bare: RunningLab) -> None:
    wait_for(lambda: bare.gateway("events_published_total") > 20, 30, "events to flow")
    assert bare.partition(True, 5)["active"]
    bare.wait_partition_over(10)
    bare.wait_drained(timeout=60)
    accepted, missing = bare.settled_missing(older_than=2)
    assert accepted and missing == []
    assert get_json(bare.url("sink_url") + "/posts?path=/alertmanager") == []


# -- Prometheus only -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with optional_parts("prometheus"), running_lab(tmp_path_factory, {"lab_event_rate": 5}) as lab:
        yield lab


def test_prometheus_only_status_and_targets(prometheus_only: RunningLab) -> None:
    status = status_json(prometheus_only)
    assert status["prometheus_url"].startswith("http://127.0.0.1:") and status["alertmanager_url"] is None
    assert status["hidden_parts"] == ["alertmanager"]
    assert "prometheus" in status["processes"] and "alertmanager" not in status["processes"]
    expected = {"api-gateway": 2, "reporting": 2, "nats-exporter": 3, "partition-proxy": 1, "prometheus": 1}

    def targets() -> dict[str, int] | None:
        answer = get_json(status["prometheus_url"] + "/api/v1/query?" + urllib.parse.urlencode({"query": "up"}))
        up: dict[str, int] = {}
        for r in answer["data"]["result"]:
            up[r["metric"]["job"]] = up.get(r["metric"]["job"], 0) + (r["value"][1] == "1")
        return up if up == expected else None

    wait_for(targets, 30, f"Prometheus to scrape {expected} (no alertmanager job)")


def test_prometheus_only_fires_the_alert_but_nothing_reaches_the_sink(prometheus_only: RunningLab) -> None:
    prom = prometheus_only.url("prometheus_url")
    assert firing(prom, "NATSUnreachable") == []
    prometheus_only.partition(True, 20)
    try:
        alerts = wait_for(lambda: firing(prom, "NATSUnreachable"), 18, "NATSUnreachable to fire in Prometheus")
        assert {a["metric"]["job"] for a in alerts} & {"api-gateway", "reporting"}
        time.sleep(2)  # Alertmanager would have posted within a second or two
    finally:
        prometheus_only.partition(False)
    assert get_json(prometheus_only.url("sink_url") + "/posts?path=/alertmanager") == []
