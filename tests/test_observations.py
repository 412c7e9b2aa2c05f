"""What the team recorded, read back from the journal without widgets: answers (latest wins), open
questions, stamps and the team response time, action items and action-items.csv."""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path

from gamedaylib.gamedays.nats_partition.playbook import PLAYBOOK
from gamedaylib.journal import Journal
from gamedaylib.observations import (
    ACTION_ITEMS_CSV_COLUMNS,
    action_items_of,
    answered,
    answered_at,
    open_questions,
    stamp_times,
    team_response_seconds,
    write_action_items_csv,
)

Q_BREAKERS = "Did circuit breakers engage?"
Q_LAG = "How quickly did consumer lag start increasing?"


def journal_of(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal.jsonl")


def test_the_latest_answer_wins_and_a_cleared_answer_reopens_the_question(tmp_path: Path) -> None:
    j = journal_of(tmp_path)
    j.record("observation", "buffering", question=Q_BREAKERS, answer="yes, after ~3 s", source="form")
    j.record("observation", "buffering", question=Q_LAG, answer="within 2 s", source="form")
    first = j.record("observation", "buffering", question=Q_BREAKERS, answer="yes, only on api-gateway",
                     source="form")
    assert answered(j) == {"buffering": {Q_BREAKERS: "yes, only on api-gateway", Q_LAG: "within 2 s"}}
    assert answered_at(j)[("buffering", Q_BREAKERS)] == first["ts"]
    j.record("observation", "buffering", question=Q_LAG, answer="  ", source="form")  # cleared
    assert answered(j.entries()) == {"buffering": {Q_BREAKERS: "yes, only on api-gateway"}}
    still_open = open_questions(j, PLAYBOOK)
    assert ("buffering", Q_LAG) in still_open and ("buffering", Q_BREAKERS) not in still_open
    assert still_open[0] == ("buffering", Q_LAG) and still_open[-1] == ("postmortem", "Update runbooks with learnings")
    assert len(still_open) == len(PLAYBOOK.questions()) - 1
    given = {"postmortem": {"What went well?": "the buffer held"}}  # answered elsewhere (the parameter)
    assert ("postmortem", "What went well?") not in open_questions(j, PLAYBOOK, given)


def test_entries_are_read_in_journal_order_whatever_order_they_come_in() -> None:
    entries = [{"seq": 2, "kind": "observation", "phase": "replay", "question": "q", "answer": "second"},
               {"seq": 1, "kind": "observation", "phase": "replay", "question": "q", "answer": "first"},
               {"seq": 3, "kind": "note", "phase": "replay", "question": "q", "answer": "not an observation"}]
    assert answered(entries) == {"replay": {"q": "second"}}


def test_team_response_is_the_first_acknowledgement_after_the_alert(tmp_path: Path) -> None:
    j = journal_of(tmp_path)
    j.record("stamp", "incident_response", stamp="alert_seen", at="2026-01-01T12:01:10+00:00")
    j.record("stamp", "incident_response", stamp="acknowledged", at="2026-01-01T12:04:10+00:00")
    j.record("stamp", "incident_response", stamp="acknowledged", at="2026-01-01T12:09:00+00:00")  # a later press
    j.record("stamp", "incident_response", stamp="paged", at=None, reason="T+0 is not known")
    assert stamp_times(j) == {"alert_seen": [datetime(2026, 1, 1, 12, 1, 10, tzinfo=timezone.utc)],
                              "acknowledged": [datetime(2026, 1, 1, 12, 4, 10, tzinfo=timezone.utc),
                                               datetime(2026, 1, 1, 12, 9, tzinfo=timezone.utc)]}
    # the alert's fire time from monitoring wins over the "alert seen" stamp
    seconds, evidence = team_response_seconds(j, "2026-01-01T12:00:40+00:00")
    assert seconds == 210.0 and "monitoring" in evidence
    seconds, evidence = team_response_seconds(j.entries(), None)
    assert seconds == 180.0 and "alert seen" in evidence
    seconds, why = team_response_seconds(j, datetime(2026, 1, 1, 12, 5, tzinfo=timezone.utc))
    assert seconds is None and "before the alert fired" in why  # never a negative response time


def test_team_response_cannot_be_measured_without_its_two_moments(tmp_path: Path) -> None:
    j = journal_of(tmp_path)
    assert team_response_seconds(j, datetime.now(timezone.utc)) == (None, "no 'acknowledged' stamp was recorded")
    j.record("stamp", "incident_response", stamp="acknowledged", at="2026-01-01T12:04:10+00:00")
    seconds, why = team_response_seconds(j, None)
    assert seconds is None and "no alert fire time" in why


def test_action_items_from_the_journal_or_plain_items_to_csv(tmp_path: Path) -> None:
    j = journal_of(tmp_path)
    j.record("action_item", "postmortem", title="Alert on consumer lag > 1000", owner="sre", due="2026-02-01",
             ticket="OPS-1")
    j.record("note", note="not an item", title="ignored")
    j.record("action_item", "postmortem", title='Buffer size, "quoted", with commas', owner=None, due="", ticket="")
    j.record("action_item", "postmortem", title="  ", owner="x")  # an empty title is no item
    items = action_items_of(j)
    assert [i["title"] for i in items] == ["Alert on consumer lag > 1000", 'Buffer size, "quoted", with commas']
    assert items[1]["owner"] == "" and items[0]["recorded_at"] == j.entries()[0]["ts"]
    path = write_action_items_csv(j, tmp_path / "out" / "action-items.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == items
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(ACTION_ITEMS_CSV_COLUMNS)
    plain = [{"title": "Page the platform team too", "owner": "alice", "due": None, "ticket": 7}]
    assert action_items_of(plain) == [{"title": "Page the platform team too", "owner": "alice", "due": "",
                                       "ticket": "7", "recorded_at": ""}]
    empty = write_action_items_csv([], tmp_path / "none.csv")
    assert empty.read_text(encoding="utf-8").splitlines() == [",".join(ACTION_ITEMS_CSV_COLUMNS)]
