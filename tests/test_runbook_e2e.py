"""GAMEDAY-001 end to end, headless, through `gameday run`, against the real production-shaped lab (3
NATS nodes, the stream and its consumer replicated three times, 2 replicas of each service; rehearsal
profile), each archive checked against what the lab really did: the users' answers (ground truth),
the rows in PostgreSQL and the gateways' own counters.

The labs with a staged flaw (a small dropping buffer, a small rejecting buffer, no idempotency) are
each their own; then one busy lab (200 events/s) serves, in file order, the healthy run with the
default parameters, a run during which the consumer leader is stepped down, and (last: it kills a
replica) a run during which one gateway replica is killed.

Optional parts: whatever combination the lab found (``runtools.combination``: the lab's own binary
lookup, ``GAMEDAY_LAB_WITHOUT`` honoured); the alerting metric is asserted for that combination. Tests
marked ``optional_parts`` are run again by ``make test`` with Alertmanager, then both parts, hidden."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import nats
import psycopg
import pytest
from runtools import (
    archive_of,
    combination,
    expected_alert_status,
    journal,
    metrics,
    run_gameday,
    scorecard,
    settle,
)

from gamedaylib.archive import ARCHIVE_FILES
from gamedaylib.lab.client import Lab
from gamedaylib.lab.truth import read_answers
from gamedaylib.probes.metrics import scrape
from gamedaylib.probes.nats import NatsMonitor
from gamedaylib.report import remote_loads
from gamedaylib.scorecard import SCHEMA

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

PARTITION = 12
BUSY_RATE = 200  # user events per second on the busy lab
FLAW_RATE = 100  # on the labs with a small buffer: it fills in a fraction of a second
SMALL_BUFFER = 20
RETRIED_KEY = "client-retry-0001"
STREAM, CONSUMER = "EVENTS", "reporting"
CORE = {"rto_seconds", "rpo_seconds", "event_loss_count", "user_facing_errors", "duplicate_count",
        "lag_recovery_seconds"}


# -- labs ------------------------------------------------------------------------------------------


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


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, dict[str, Any]]]:
    """The default shape (3 NATS nodes, 2 replicas of each service) at 200 user events per second."""
    lab = Lab(tmp_path_factory.mktemp("busy") / "lab")
    try:
        yield lab, lab.up({"lab_event_rate": BUSY_RATE})
    finally:
        lab.down()


# -- what the tests do during a run -----------------------------------------------------------------


class WhenJournal(threading.Thread):
    """Runs ``action()`` once a run's journal under ``archive_root`` has an entry of ``kind`` (the test
    acts on the system while `gameday run` runs); ``outcome()`` is what the action returned."""

    def __init__(self, archive_root: Path, kind: str, action: Callable[[], Any], timeout: float = 240) -> None:
        super().__init__(daemon=True)
        self.archive_root, self.kind, self.action, self.timeout = archive_root, kind, action, timeout
        self.result: Any = None
        self.error: Exception | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        needle = f'"kind": "{self.kind}"'
        try:
            while time.monotonic() < deadline:
                for path in self.archive_root.glob("*/*/journal.jsonl"):
                    if needle in path.read_text(encoding="utf-8"):
                        self.result = self.action()
                        return
                time.sleep(0.1)
            raise AssertionError(f"no {self.kind} in the journal within {self.timeout:g} s")
        except Exception as exc:  # noqa: BLE001 (handed to the test by outcome())
            self.error = exc

    def outcome(self) -> Any:
        self.join(10)
        if self.error is not None:
            raise self.error
        return self.result


def _post(gateway_url: str, key: str) -> int:
    body = json.dumps({"type": "buddy.match", "idempotency_key": key, "payload": {"by": "test"}}).encode()
    req = urllib.request.Request(gateway_url + "/v1/events", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(resp.status)


def _post_twice_during_partition(archive_root: Path, gateway_url: str) -> WhenJournal:
    """A client that retries: the same idempotency key posted twice while the network is cut."""
    thread = WhenJournal(archive_root, "fault.active", lambda: [_post(gateway_url, RETRIED_KEY) for _ in range(2)])
    thread.start()
    return thread


async def _step_down(nats_url: str) -> dict[str, Any]:
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        reply = await nc.request(f"$JS.API.CONSUMER.LEADER.STEPDOWN.{STREAM}.{CONSUMER}", b"", timeout=5)
        answer: dict[str, Any] = json.loads(reply.data)
        return answer
    finally:
        await nc.close()


def _leader(state: dict[str, Any]) -> str | None:
    return NatsMonitor(state["nats_monitor_urls"]).consumer_lag(STREAM, CONSUMER).leader


# -- what the lab knows ------------------------------------------------------------------------------


def _rows(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchall()


def _stored(dsn: str) -> dict[str, int]:
    return {str(k): int(n) for k, n in _rows(dsn, "SELECT idempotency_key, count(*) FROM events GROUP BY 1")}


def _lost_users_events(state: dict[str, Any], lab_dir: Path,
                       gateways: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The users' events a gateway accepted (202) that are not in the events table, once the lab has
    settled (what was on its way has arrived: ``runtools.settle``): key -> the user's answer."""
    until = settle(state, gateways=gateways)
    stored = _stored(state["events_dsn"])
    return {a["idempotency_key"]: a for a in read_answers(lab_dir)
            if a["status"] == 202 and datetime.fromisoformat(a["ts"]) <= until
            and stored.get(a["idempotency_key"], 0) == 0}


def _gateway_total(state: dict[str, Any], name: str) -> float:
    return sum(scrape(url).value(name) or 0 for url in state["gateway_metrics_urls"])


def _canary_rows(state: dict[str, Any], card: dict[str, Any]) -> int:
    (count,) = _rows(state["events_dsn"], "SELECT count(DISTINCT idempotency_key) FROM events "
                     "WHERE idempotency_key LIKE %s", f"canary-{card['run_id']}-%")
    return int(count[0])


# -- the run -----------------------------------------------------------------------------------------


def _gameday(out: Path, lab_dir: Path, *extra: str) -> Any:
    return run_gameday("run", "-p", f"lab_dir={lab_dir}", "--output-dir", str(out), *extra)


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


def _samples(archive: Path) -> list[dict[str, str]]:
    with open(archive / "samples.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _alert_fire_as_expected(card: dict[str, Any], state: dict[str, Any]) -> None:
    """With Prometheus (and Alertmanager or not) the first alert is measured; with neither it is
    ``not_measured``, saying why."""
    alert = metrics(card)["alert_fire_seconds"]
    assert alert["status"] == expected_alert_status(state), (combination(state), alert)
    if combination(state) == "neither":
        assert "neither Alertmanager nor Prometheus" in alert["reason"], alert


# -- staged flaws --------------------------------------------------------------------------------------


def test_a_small_dropping_buffer_stops_the_run_and_fails_event_loss_with_the_truth_parts(
    tmp_path: Path, lab_factory: Any
) -> None:
    """The buffer fills within a second of the cut: the stop condition ends the partition (the system
    did it: verdict fail, exit 1, ``stopped_by``), yet the gateways have already dropped accepted
    events; each part of the loss in the scorecard is what the lab knows."""
    knobs = {"lab_event_rate": FLAW_RATE, "lab_buffer_capacity": SMALL_BUFFER, "lab_overflow": "drop"}
    lab, state = lab_factory(**knobs)
    proc = _gameday(tmp_path / "out", lab.lab_dir, *(x for k, v in knobs.items() for x in ("-p", f"{k}={v}")))
    archive = archive_of(proc)
    assert proc.returncode == 1, proc.stderr[-3000:]
    card = _check_archive(archive)
    assert card["verdict"] == "fail"
    stopped = card["stopped_by"]
    assert stopped["condition"] == "stop_buffer_fraction" and stopped["threshold"] == 0.9, stopped
    assert stopped["value"] > 0.9 and stopped["at"] and not stopped["blind"]
    assert "gateway buffer" in stopped["words"] and "%" in stopped["words"], stopped["words"]
    m = metrics(card)
    loss, ev = m["event_loss_count"], card["events"]
    assert loss["status"] == "fail" and loss["value"] > 0, loss
    # the parts, each against what the lab knows
    lost_users = _lost_users_events(state, lab.lab_dir)
    assert ev["ground_truth_lost"] == len(lost_users) > 0
    dropped = _gateway_total(state, "events_dropped_total")  # a new lab: its counters started at 0
    assert ev["service_reported_dropped"] == dropped > 0
    assert ev["canaries_stored"] == _canary_rows(state, card)
    assert loss["value"] == ev["canaries_lost"] + ev["ground_truth_lost"]
    assert dropped == ev["canaries_lost"] + ev["ground_truth_lost"], "every event dropped was accepted, then lost"
    assert "lower bound" in loss["evidence"]
    assert m["user_facing_errors"]["value"] == 0  # dropping is silent: that is the flaw
    assert {n for n in CORE if m[n]["status"] == "fail"} <= {"event_loss_count", "rpo_seconds"}


def test_a_small_rejecting_buffer_stops_the_run_and_fails_user_facing_errors_losing_nothing(
    tmp_path: Path, lab_factory: Any
) -> None:
    knobs = {"lab_event_rate": FLAW_RATE, "lab_buffer_capacity": SMALL_BUFFER, "lab_overflow": "reject"}
    lab, state = lab_factory(**knobs)
    proc = _gameday(tmp_path / "out", lab.lab_dir, *(x for k, v in knobs.items() for x in ("-p", f"{k}={v}")))
    archive = archive_of(proc)
    assert proc.returncode == 1, proc.stderr[-3000:]
    card = _check_archive(archive)
    assert card["verdict"] == "fail" and card["stopped_by"], card.get("stopped_by")
    assert card["stopped_by"]["condition"] in ("stop_buffer_fraction", "stop_error_rate")
    m = metrics(card)
    errors = m["user_facing_errors"]
    assert [a for a in read_answers(lab.lab_dir) if a["status"] == 503], "users were told 503"
    assert errors["status"] == "fail" and errors["value"] >= 1, errors
    # nothing accepted was lost: every part says 0, as the truth does
    assert _lost_users_events(state, lab.lab_dir) == {}
    ev = card["events"]
    assert ev["ground_truth_lost"] == 0 and ev["canaries_lost"] == 0 and ev["service_reported_dropped"] == 0
    assert m["event_loss_count"]["status"] == "pass" and m["event_loss_count"]["value"] == 0
    assert ev["canaries_stored"] == _canary_rows(state, card)


def test_without_idempotency_a_client_retry_is_stored_twice_and_fails_duplicates(
    tmp_path: Path, lab_factory: Any
) -> None:
    lab, state = lab_factory(lab_idempotency=False)
    out = tmp_path / "out"
    poster = _post_twice_during_partition(out, state["gateway_url"])
    proc = _gameday(out, lab.lab_dir, "-p", "lab_idempotency=false", "-p", f"partition_seconds={PARTITION}")
    assert poster.outcome() == [202, 202]
    archive = archive_of(proc)
    assert proc.returncode == 1, proc.stderr[-3000:]
    card = _check_archive(archive)
    m = metrics(card)
    assert {n for n in CORE if m[n]["status"] == "fail"} == {"duplicate_count"}
    truth = _rows(state["events_dsn"], "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) n FROM events "
                  "WHERE created_at >= %s GROUP BY idempotency_key HAVING count(*) > 1) d",
                  datetime.fromisoformat(card["started_at"]))
    assert m["duplicate_count"]["value"] == int(truth[0][0]) >= 1
    # posted twice, stored at least twice (a timed-out publish retried without Msg-Id may add more)
    (stored,) = _rows(state["events_dsn"], "SELECT count(*) FROM events WHERE idempotency_key = %s", RETRIED_KEY)
    assert stored[0] >= 2


# -- the busy lab (in file order; the last test kills a gateway replica) -------------------------------


@pytest.mark.optional_parts
def test_a_busy_healthy_lab_passes_with_the_default_parameters(busy: tuple[Lab, dict[str, Any]],
                                                               tmp_path: Path) -> None:
    """200 events/s on 3 NATS nodes and 2 replicas: nothing but the lab's own knob and the team's
    headless answers is given, and the run passes; nothing users were told was accepted is lost."""
    lab, state = busy
    out = tmp_path / "out"
    poster = _post_twice_during_partition(out, state["gateway_url"])
    # without alerting (neither optional part) the team stamps when it saw the problem itself: the team
    # response is timed from that stamp, not from an alert
    stamps = "{alert_seen: 5, acknowledged: 20}" if combination(state) == "neither" else "{acknowledged: 20}"
    proc = _gameday(out, lab.lab_dir, "-p", f"lab_event_rate={BUSY_RATE}", "-p", f"stamps={stamps}",
                    "-p", "observations={buffering: {'Did circuit breakers engage?': 'yes, opened'}}")
    assert poster.outcome() == [202, 202]
    archive = archive_of(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = _check_archive(archive)
    assert card["verdict"] == "pass" and card["stopped_by"] is None
    m = metrics(card)
    assert {n for n, x in m.items() if x["status"] == "fail"} == set()
    for name in (*CORE, "team_response_seconds"):
        assert m[name]["status"] == "pass", m[name]
    _alert_fire_as_expected(card, state)
    ev = card["events"]
    assert ev["canaries_sent"] > 10 and ev["canaries_lost"] == 0 and ev["canaries_duplicated"] == 0
    assert ev["ground_truth_lost"] == 0 and ev["service_reported_dropped"] == 0
    # ground truth: every event users were told was accepted is stored, once
    assert _lost_users_events(state, lab.lab_dir) == {}
    stored = _stored(state["events_dsn"])
    assert [k for k, n in stored.items() if n > 1] == []
    assert ev["canaries_stored"] == _canary_rows(state, card) == ev["canaries_sent"]
    assert stored[RETRIED_KEY] == 1  # the client's retry: idempotency
    # the readings came from where the combination says, and every stop condition could see
    entries = journal(archive)
    seen = next(e for e in entries if e["kind"] == "check" and e["name"] == "every stop condition can see its input")
    assert ("Prometheus" if state["prometheus_url"] else "scraped directly") in seen["detail"], seen
    assert "consumer leader" in seen["detail"]
    # RTO agrees with the journal within one sample interval
    t0 = datetime.fromisoformat(next(e["t0"] for e in entries if e["kind"] == "fault.active"))
    healed = datetime.fromisoformat(next(e["at"] for e in entries if e["kind"] == "fault.healed"))
    replay_end = datetime.fromisoformat(next(e["ts"] for e in entries
                                             if e["kind"] == "phase.finished" and e["phase"] == "replay"))
    rto = m["rto_seconds"]["value"]
    assert (healed - t0).total_seconds() - 1.0 <= rto <= (replay_end - t0).total_seconds() + 1.0
    assert 20 - 1 <= (healed - t0).total_seconds() <= 20 + 5, "the default rehearsal partition: 20 s"
    report = (archive / "incident-report.md").read_text(encoding="utf-8")
    assert "yes, opened" in report and "How quickly did consumer lag start increasing?" in report
    assert lab.is_up()  # a running lab is left running


def test_the_consumer_leader_stepped_down_mid_run_is_still_read(busy: tuple[Lab, dict[str, Any]],
                                                               tmp_path: Path) -> None:
    """Right after the heal, while the backlog replays, the consumer's leader is stepped down through
    the NATS API: the run finds the new leader on its next reading (no reading without the lag) and
    its verdict is the healthy one."""
    lab, state = busy
    settle(state)
    before = _leader(state)
    out = tmp_path / "out"

    def step_down() -> tuple[float, dict[str, Any]]:
        return time.time(), asyncio.run(_step_down(state["nats_url"]))

    stepper = WhenJournal(out, "fault.healed", step_down)
    stepper.start()
    proc = _gameday(out, lab.lab_dir, "-p", f"lab_event_rate={BUSY_RATE}", "-p", f"partition_seconds={PARTITION}")
    stepped_at, answer = stepper.outcome()
    assert answer.get("success") is True, answer
    after = _leader(state)
    assert after and after != before, (before, after)
    archive = archive_of(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = _check_archive(archive)
    assert card["verdict"] == "pass"
    rows = _samples(archive)
    later = [r for r in rows if datetime.fromisoformat(r["ts"]).timestamp() > stepped_at]
    assert len(later) >= 5, "the run went on reading after the step-down"
    blind = [r for r in rows if r["lag_pending"] == "" or "lag_pending" in r["sample_error"]]
    assert blind == [], blind[:3]
    assert not [e for e in journal(archive) if e["kind"] == "error" and e.get("error") == "nats monitoring"]
    m = metrics(card)
    assert m["lag_recovery_seconds"]["status"] == "pass" and m["rto_seconds"]["status"] == "pass"


def test_a_gateway_replica_killed_during_the_partition_shows_what_was_lost_with_it(
    busy: tuple[Lab, dict[str, Any]], tmp_path: Path
) -> None:
    """Last on the busy lab: gateway-1 is killed while it holds the events it buffered during the cut.
    The verdict fails on event loss, and the loss it shows is what the truth shows: the users' events
    that replica had accepted (and the canaries it held)."""
    lab, state = busy
    settle(state)
    victim_url = state["gateway_metrics_urls"][1]
    users, victim = state["pids"]["users"], state["pids"]["gateway-1"]
    out = tmp_path / "out"

    def kill() -> tuple[float, float]:
        at_cut = scrape(victim_url).value("event_buffer_size") or 0.0  # may hold some sent before the cut
        deadline = time.monotonic() + 30
        while (scrape(victim_url).value("event_buffer_size") or 0) < 100:
            assert time.monotonic() < deadline, "gateway-1 never held 100 events"
            time.sleep(0.1)
        os.kill(users, signal.SIGSTOP)  # no user post while the buffer is read and the replica killed
        try:
            time.sleep(0.5)
            held = scrape(victim_url).value("event_buffer_size") or 0.0
            os.kill(victim, signal.SIGKILL)
        finally:
            os.kill(users, signal.SIGCONT)
        return at_cut, held

    killer = WhenJournal(out, "fault.active", kill)
    killer.start()
    proc = _gameday(out, lab.lab_dir, "-p", f"lab_event_rate={BUSY_RATE}", "-p", f"partition_seconds={PARTITION}")
    at_cut, held = killer.outcome()
    archive = archive_of(proc)
    assert proc.returncode == 1, proc.stderr[-3000:]
    card = _check_archive(archive)
    assert card["verdict"] == "fail" and card["stopped_by"] is None
    lost_users = _lost_users_events(state, lab.lab_dir, gateways=state["gateway_metrics_urls"][:1])
    assert lost_users and {a["gateway"] for a in lost_users.values()} == {"gateway-1"}, "lost with the replica"
    ev, loss = card["events"], metrics(card)["event_loss_count"]
    assert ev["ground_truth_lost"] == len(lost_users)
    assert ev["canaries_stored"] == _canary_rows(state, card)
    assert loss["status"] == "fail" and loss["value"] == ev["canaries_lost"] + ev["ground_truth_lost"], loss
    # what it held, minus what it had sent before the cut and JetStream stored (its ack was cut off)
    assert held - at_cut <= loss["value"] <= held + 1, (at_cut, held, loss["value"])
    assert lab.status()["processes"]["gateway-1"]["alive"] is False
