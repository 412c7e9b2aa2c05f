"""GAMEDAY-001 end to end, headless, through `gameday run`, against the real lab (rehearsal profile).

Each test starts its own lab (knobs are fixed at start), lets `gameday run` use it, then checks the
archive against what the lab really did (the events table and the gateway's own counters)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest
from runtools import archive_of, journal, metrics, run_gameday, scorecard

from gamedaylib.archive import ARCHIVE_FILES
from gamedaylib.lab.client import Lab
from gamedaylib.probes.metrics import scrape
from gamedaylib.report import remote_loads
from gamedaylib.scorecard import SCHEMA

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

PARTITION = 12
RETRIED_KEY = "client-retry-0001"


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[Any]:
    labs: list[Lab] = []

    def start(**knobs: Any) -> tuple[Lab, dict[str, Any]]:
        lab = Lab(tmp_path / f"lab{len(labs)}")
        labs.append(lab)
        return lab, lab.up(knobs)

    try:
        yield start
    finally:
        for lab in labs:
            lab.down()


def _post_twice_during_partition(archive_root: Path, gateway_url: str) -> threading.Thread:
    """A client that retries: the same idempotency key posted twice while the network is cut."""

    def run() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for path in archive_root.glob("*/*/journal.jsonl"):
                if '"fault.active"' in path.read_text(encoding="utf-8"):
                    body = json.dumps({"type": "buddy.match", "idempotency_key": RETRIED_KEY,
                                       "payload": {"by": "test"}}).encode()
                    for _ in range(2):
                        req = urllib.request.Request(gateway_url + "/v1/events", data=body, method="POST",
                                                     headers={"Content-Type": "application/json"})
                        with urllib.request.urlopen(req, timeout=5) as resp:
                            assert resp.status == 202
                    return
            time.sleep(0.2)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _rows(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchall()


def _gameday(out: Path, lab_dir: Path, *extra: str) -> Any:
    return run_gameday("run", "-p", f"lab_dir={lab_dir}", "-p", f"partition_seconds={PARTITION}",
                       "--output-dir", str(out), *extra)


def _check_archive(archive: Path) -> dict[str, Any]:
    for name in ARCHIVE_FILES:
        assert (archive / name).is_file(), name
    card = scorecard(archive)
    jsonschema.validate(card, SCHEMA)
    assert card["profile"] == "rehearsal" and card["targets"]["rto_seconds"] == 120
    html = (archive / "report.html").read_text(encoding="utf-8")
    assert remote_loads(html) == []
    assert "data:image/png;base64" in html  # static charts
    assert "Gameday.start" not in html  # code hidden
    return card


def test_healthy_lab_passes_and_agrees_with_ground_truth(tmp_path: Path, lab_factory: Any) -> None:
    lab, state = lab_factory()
    out = tmp_path / "out"
    poster = _post_twice_during_partition(out, state["gateway_url"])
    proc = _gameday(out, lab.lab_dir, "-p", "stamps={acknowledged: 20}",
                    "-p", "observations={buffering: {'Did circuit breakers engage?': 'yes, opened'}}")
    poster.join(5)
    archive = archive_of(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = _check_archive(archive)
    assert card["verdict"] == "pass"
    m = metrics(card)
    assert {n for n, x in m.items() if x["status"] == "fail"} == set()
    for name in ("rto_seconds", "rpo_seconds", "event_loss_count", "user_facing_errors", "duplicate_count",
                 "lag_recovery_seconds", "alert_fire_seconds", "team_response_seconds"):
        assert m[name]["status"] == "pass", m[name]
    ev = card["events"]
    assert ev["canaries_sent"] > 10 and ev["canaries_lost"] == 0 and ev["canaries_duplicated"] == 0
    # ground truth: every canary key is in the table exactly once; the retried key too (idempotency)
    keys = _rows(state["events_dsn"], "SELECT idempotency_key, count(*) FROM events "
                 "WHERE idempotency_key LIKE %s GROUP BY 1", f"%{card['run_id']}%")
    assert len(keys) >= ev["canaries_sent"] - 2 and all(n == 1 for _, n in keys)
    assert _rows(state["events_dsn"], "SELECT count(*) FROM events WHERE idempotency_key = %s", RETRIED_KEY) == [(1,)]
    # RTO agrees with the journal within one sample interval
    entries = journal(archive)
    t0 = datetime.fromisoformat(next(e["t0"] for e in entries if e["kind"] == "fault.active"))
    healed = datetime.fromisoformat(next(e["at"] for e in entries if e["kind"] == "fault.healed"))
    replay_end = datetime.fromisoformat(next(e["ts"] for e in entries
                                             if e["kind"] == "phase.finished" and e["phase"] == "replay"))
    rto = m["rto_seconds"]["value"]
    assert (healed - t0).total_seconds() - 1.0 <= rto <= (replay_end - t0).total_seconds() + 1.0
    assert PARTITION - 1 <= (healed - t0).total_seconds() <= PARTITION + 5
    report = (archive / "incident-report.md").read_text(encoding="utf-8")
    assert "yes, opened" in report and "How quickly did consumer lag start increasing?" in report
    assert lab.is_up()  # a running lab is left running


def test_small_dropping_buffer_fails_event_loss_exactly(tmp_path: Path, lab_factory: Any) -> None:
    lab, state = lab_factory(lab_buffer_capacity=20, lab_overflow="drop")
    proc = _gameday(tmp_path / "out", lab.lab_dir, "-p", "lab_buffer_capacity=20", "-p", "lab_overflow=drop",
                    "-p", "stop_buffer_fraction=1")
    archive = archive_of(proc)
    assert proc.returncode == 1, proc.stderr[-3000:]
    card = _check_archive(archive)
    assert card["verdict"] == "fail"
    m = metrics(card)
    core_failed = {n for n, x in m.items() if x["status"] == "fail"} - {"alert_fire_seconds", "team_response_seconds"}
    assert core_failed == {"event_loss_count"}
    urls = state.get("gateway_metrics_urls") or [state["gateway_metrics_url"]]
    dropped = sum(scrape(url).value("events_dropped_total") or 0 for url in urls)
    assert dropped and dropped > 0
    # what the runbook counted lost (canaries + users' accepted events not stored) is what the gateway dropped
    assert m["event_loss_count"]["value"] == int(dropped)
    assert card["events"]["canaries_lost"] > 0
    assert 0 < m["rpo_seconds"]["value"] <= PARTITION + 2
    assert m["user_facing_errors"]["value"] == 0  # dropping is silent: that is the flaw


def test_without_idempotency_a_client_retry_is_stored_twice_and_fails_duplicates(
    tmp_path: Path, lab_factory: Any
) -> None:
    lab, state = lab_factory(lab_idempotency=False)
    out = tmp_path / "out"
    poster = _post_twice_during_partition(out, state["gateway_url"])
    proc = _gameday(out, lab.lab_dir, "-p", "lab_idempotency=false")
    poster.join(5)
    archive = archive_of(proc)
    assert proc.returncode == 1, proc.stderr[-3000:]
    card = _check_archive(archive)
    m = metrics(card)
    core_failed = {n for n, x in m.items() if x["status"] == "fail"} - {"alert_fire_seconds", "team_response_seconds"}
    assert core_failed == {"duplicate_count"}
    truth = _rows(state["events_dsn"], "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) n FROM events "
                  "WHERE created_at >= %s GROUP BY idempotency_key HAVING count(*) > 1) d",
                  datetime.fromisoformat(card["started_at"]))
    assert m["duplicate_count"]["value"] == int(truth[0][0]) >= 1
    # posted twice, stored at least twice (a timed-out publish retried without Msg-Id may add more)
    (stored,) = _rows(state["events_dsn"], "SELECT count(*) FROM events WHERE idempotency_key = %s", RETRIED_KEY)
    assert stored[0] >= 2
