"""GAMEDAY-002 end to end on a healthy lab (the Patroni pair, synchronous replication, HAProxy): the
rehearsal passes, then the rollback (no primary by the promote deadline: manual promotion). One lab for
the module, shared in file order; a refused run first, before the lab exists.

    .venv/bin/python -m pytest -q tests/lab/test_failover_healthy.py -s
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from failovertools import GAMEDAY, canary_rows, rehearse, truth
from labtools import RunningLab, running_lab, wait_for
from runtools import combination, expected_alert_status, run_gameday

from gamedaylib.lab.pgclient import PgClusterClient
from gamedaylib.lab.pgcluster import PgClusterPlan
from gamedaylib.lab.reporting import WRITE_TIMEOUT_SECONDS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

KNOBS = {"lab_pg_replication": "sync"}  # GAMEDAY-002's shape with its defaults


def promql(lab: RunningLab, query: str) -> list[dict[str, Any]]:
    url = lab.url("prometheus_url") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as resp:
        result: list[dict[str, Any]] = json.loads(resp.read())["data"]["result"]
    return result


def test_a_refused_run_writes_nothing_and_starts_nothing(tmp_path: Path) -> None:
    lab_dir, out = tmp_path / "lab", tmp_path / "out"
    proc = run_gameday("run", "--gameday", GAMEDAY, "--output-dir", str(out), "-p", f"lab_dir={lab_dir}",
                       "-p", "kill=banana", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "kill" in proc.stderr and "banana" in proc.stderr
    assert not out.exists() and not lab_dir.exists()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with running_lab(tmp_path_factory, KNOBS) as running:
        yield running


def test_prometheus_scrapes_each_node_under_cloudnativepg_names(lab: RunningLab) -> None:
    if not lab.state.get("prometheus_url"):
        pytest.skip("Prometheus is not installed")

    def series() -> dict[str, float]:
        found = promql(lab, 'cnpg_pg_replication_in_recovery{job="events-db"}')
        return {r["metric"]["pod"]: float(r["value"][1]) for r in found}

    roles = wait_for(lambda: series() if len(series()) == 2 else None, 30, "both nodes scraped")
    assert roles == {"pg1": 0.0, "pg2": 1.0}  # pg1 bootstraps the cluster: the primary
    up = promql(lab, 'cnpg_collector_up{job="events-db"}')
    assert {r["metric"]["cluster"] for r in up} == {"events-db"} and all(r["value"][1] == "1" for r in up)
    assert promql(lab, 'ALERTS{alertname=~"PostgreSQL.*",alertstate="firing"}') == []


def test_a_healthy_rehearsal_passes_with_every_canary_stored_once(lab: RunningLab, tmp_path: Path) -> None:
    run = rehearse(lab, tmp_path)
    print(f"\nhealthy rehearsal: {run.explain()}")
    assert run.proc.returncode == 0 and run.card["verdict"] == "pass", run.explain()
    assert 15 <= run.value("failover_seconds") <= 60  # Patroni's ttl (20 s) bounds it
    assert run.status("failover_seconds") == "pass"
    # the alert: through Alertmanager or Prometheus's ALERTS series; not measured with neither part
    assert run.status("alert_fire_seconds") == expected_alert_status(lab.state), run.metrics["alert_fire_seconds"]
    if combination(lab.state) != "neither":
        assert run.value("alert_fire_seconds") is not None
        assert "PostgreSQL" in run.metrics["alert_fire_seconds"]["evidence"]
    for name in ("rpo_seconds", "event_loss_count", "split_brain_samples", "duplicate_count"):
        assert run.value(name) == 0, (name, run.metrics[name])
    assert run.status("replica_rejoin_seconds") == "pass" and run.status("rto_seconds") == "pass"
    if combination(lab.state) != "neither":
        assert [c["ok"] for c in run.checks("the gameday's alert rules loaded")] == [True]
    # every canary accepted, stored exactly once (the lab's table, read now)
    rows = canary_rows(lab, run)
    assert rows and all(n == 1 for n in rows), rows
    # and the users' events: none lost over the gameday
    seen = truth(lab, run.at("run.started"), run.at("phase.started", phase="rpo"))
    assert seen.accepted and seen.lost == []
    assert {"scorecard.json", "report.html", "incident-report.md", "samples.csv"} <= {
        p.name for p in run.archive.iterdir()}


def test_a_hung_write_is_cancelled_by_reporting_and_retried(lab: RunningLab) -> None:
    """reporting's write timeout: the events table locked longer than it, a write is cancelled on the
    client (logged) and retried on a new connection; nothing is lost."""
    cancelled = lab.log("reporting").count("did not finish within")
    hold = WRITE_TIMEOUT_SECONDS + 3
    started = time.time()
    with psycopg.connect(lab.url("events_dsn"), connect_timeout=5) as conn:
        conn.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        time.sleep(hold)
        conn.rollback()
    wait_for(lambda: lab.log("reporting").count("did not finish within") > cancelled, 30,
             "a cancelled write in reporting's log")
    accepted, missing = lab.settled_missing(older_than=2.0, timeout=60)
    assert accepted and missing == []
    assert time.time() - started < hold + 60


def test_the_rollback_promotes_by_hand_when_no_primary_comes_by_the_deadline(
    lab: RunningLab, tmp_path: Path
) -> None:
    """promote_deadline_seconds shorter than Patroni's ttl: no primary by then, so the rollback promotes
    the surviving node by hand, waits for reporting to store again (it reconnects: no restart), and
    the killed node comes back as a replica; the run fails on failover_seconds and is archived."""
    client = PgClusterClient(PgClusterPlan.from_json(lab.state["pg_plan"]))
    client.wait_healthy(timeout=120)  # the previous rehearsal's old primary streams again
    before = client.primary()
    run = rehearse(lab, tmp_path, promote_deadline_seconds=5)
    print(f"\nrollback: {run.explain()}")
    assert run.proc.returncode == 1 and run.card["verdict"] == "fail", run.explain()
    failover = run.metrics["failover_seconds"]
    assert failover["status"] == "fail" and "promoted by hand" in failover["evidence"]
    notes = [e["note"] for e in run.journal if e["kind"] == "note"]
    assert "no primary by the promote deadline: promoting by hand" in notes
    promoted = run.checks("manual promotion")
    assert [c["ok"] for c in promoted] == [True] and before not in promoted[0]["detail"]
    assert [c["ok"] for c in run.checks("reporting reconnected by itself (no restart)")] == [True]
    healed = [e for e in run.journal if e["kind"] == "fault.healed"]
    assert healed, "the killed node was started again"
    assert run.value("event_loss_count") == 0 and run.value("split_brain_samples") == 0
    assert {"scorecard.json", "report.html", "incident-report.md"} <= {p.name for p in run.archive.iterdir()}
    client.wait_healthy(timeout=120)
    assert client.primary() != before and client.replica_streaming(str(before))
