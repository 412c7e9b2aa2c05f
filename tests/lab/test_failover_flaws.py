"""GAMEDAY-002's staged flaws end to end: each makes `gameday run --gameday GAMEDAY-002` exit 1 with the
metric it breaks failing, and the count it reports agrees with the lab's own ground truth (the users'
accepted events against the events table, recounted here; the canaries looked up here).

Two labs, one after the other:
- asynchronous replication behind a libpq multi-host endpoint: first the failover agent alone is killed
  (the orphan primary keeps taking the writes of every connection the endpoint gave it: a split brain,
  whose writes are rewound away when it rejoins), then the primary is killed after a 2 s replication
  stall (what it acknowledged meanwhile never reached the replica);
- reporting acknowledging each batch before writing it (``lab_reporting_ack=before_commit``).

With synchronous replication neither loses an acknowledged write (the healthy module), which is why
the split brain is staged with asynchronous replication: PostgreSQL never confirms a commit on an orphan
whose synchronous standby has gone.

    .venv/bin/python -m pytest -q tests/lab/test_failover_flaws.py -s
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from failovertools import Rehearsal, canary_rows, rehearse, truth
from labtools import RunningLab, running_lab

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _ts(answer: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(answer["ts"]))


def assert_loss_agrees_with_truth(lab: RunningLab, run: Rehearsal) -> list[dict[str, Any]]:
    """event_loss_count = the canaries missing from the table + the users' accepted events missing from
    it, both recounted from the lab; returns the users' lost answers."""
    events = run.card["events"]
    canaries_lost = sum(1 for n in canary_rows(lab, run) if n == 0)
    seen = truth(lab, run.at("run.started"), run.at("phase.started", phase="rpo"))
    print(f"  ground truth: {len(seen.lost)} of {len(seen.accepted)} accepted user events lost; "
          f"{canaries_lost} of {events['canaries_sent']} canaries lost")
    assert events["canaries_lost"] == canaries_lost
    assert events["ground_truth_lost"] == len(seen.lost)
    assert run.value("event_loss_count") == canaries_lost + len(seen.lost)
    return seen.lost


@pytest.fixture(scope="module")
def async_multihost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with running_lab(tmp_path_factory, {"lab_pg_replication": "async", "lab_pg_endpoint": "multihost"}) as lab:
        yield lab


def test_an_orphan_primary_behind_a_multihost_endpoint_is_a_split_brain_whose_writes_are_lost(
    async_multihost: RunningLab, tmp_path: Path
) -> None:
    lab = async_multihost
    run = rehearse(lab, tmp_path, kill="agent", replication_stall_seconds=0)
    print(f"\nsplit brain: {run.explain()}")
    assert run.proc.returncode == 1 and run.card["verdict"] == "fail", run.explain()
    assert run.status("split_brain_samples") == "fail" and run.value("split_brain_samples") > 0
    assert run.status("event_loss_count") == "fail"
    lost = assert_loss_agrees_with_truth(lab, run)
    assert lost, "the orphan's writes were rewound away"
    # written to the orphan after the kill (before it, both nodes had them), gone when it rejoined
    healed = run.at("fault.healed")
    assert all(run.t0 < _ts(a) < healed + timedelta(seconds=30) for a in lost), [a["ts"] for a in lost]
    timeline = next(e["values"].get("alert timeline", "") for e in run.journal
                    if e["kind"] == "phase.finished" and e["phase"] == "incident_response")
    if lab.state.get("prometheus_url"):  # the alert needs Prometheus (either combination with it)
        assert "PostgreSQLTwoPrimaries" in timeline, timeline


def test_asynchronous_replication_stalled_before_the_kill_loses_what_the_primary_acknowledged(
    async_multihost: RunningLab, tmp_path: Path
) -> None:
    lab = async_multihost
    run = rehearse(lab, tmp_path)  # kill=node, replication_stall_seconds=2 (the defaults)
    print(f"\nasync: {run.explain()}")
    assert run.proc.returncode == 1 and run.card["verdict"] == "fail", run.explain()
    assert run.status("rpo_seconds") == "fail" and run.value("rpo_seconds") > 0
    assert run.status("event_loss_count") == "fail" and run.value("event_loss_count") > 0
    assert run.status("failover_seconds") == "pass" and run.value("split_brain_samples") == 0
    lost = assert_loss_agrees_with_truth(lab, run)
    # accepted while the replication link was stalled (2 s before the kill), nothing else
    assert all(run.t0 - timedelta(seconds=4) < _ts(a) <= run.t0 + timedelta(seconds=1) for a in lost), (
        run.t0, [a["ts"] for a in lost])


@pytest.fixture(scope="module")
def acking_first(tmp_path_factory: pytest.TempPathFactory, async_multihost: RunningLab) -> Iterator[RunningLab]:
    async_multihost.lab.down()  # one lab at a time on a small machine
    with running_lab(tmp_path_factory, {"lab_pg_replication": "sync", "lab_reporting_ack": "before_commit"}) as lab:
        yield lab


def test_reporting_acking_before_its_write_loses_what_it_could_not_write(
    acking_first: RunningLab, tmp_path: Path
) -> None:
    lab = acking_first
    run = rehearse(lab, tmp_path)
    print(f"\nbefore_commit: {run.explain()}")
    assert run.proc.returncode == 1 and run.card["verdict"] == "fail", run.explain()
    assert run.status("event_loss_count") == "fail" and run.value("event_loss_count") > 0
    assert run.status("failover_seconds") == "pass"
    lost = assert_loss_agrees_with_truth(lab, run)
    # what reporting held while no primary took writes (the failover's ~20 s)
    writable = run.t0 + timedelta(seconds=float(run.value("failover_seconds")))
    assert all(run.t0 - timedelta(seconds=3) < _ts(a) < writable + timedelta(seconds=3) for a in lost), (
        run.t0, writable, [a["ts"] for a in lost])
    assert "events_lost" in lab.log("reporting")

