"""The forms the team types into and clicks: observation forms, incident-response stamps, the
pre-gameday checklist and action items, live (widgets journal what is entered) and headless (the
parameters are journaled once, widgets disabled, a static table that reads without widget state)."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter

from gamedaylib.clock import Clock
from gamedaylib.exceptions import InvalidParameters
from gamedaylib.forms import (
    OPEN,
    action_items_form,
    checklist_form,
    observation_form,
    parse_stamp_time,
    stamp_buttons,
)
from gamedaylib.gamedays.nats_partition.playbook import PLAYBOOK
from gamedaylib.journal import Journal
from gamedaylib.observations import answered, open_questions, team_response_seconds, write_action_items_csv

pytestmark = pytest.mark.timeout(120)

Q_BREAKERS = "Did circuit breakers engage?"
Q_LAG = "How quickly did consumer lag start increasing?"
CHECKLIST = PLAYBOOK.checklist


def observations(journal: Journal) -> list[dict]:
    return [e for e in journal.entries() if e["kind"] == "observation"]


def stamps(journal: Journal) -> list[dict]:
    return [e for e in journal.entries() if e["kind"] == "stamp"]


def test_live_record_journals_each_changed_answer_and_keeps_corrections(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    form = observation_form(journal, PLAYBOOK, "buffering", answers=None, live=True, show=False)
    assert list(form.textareas) == list(PLAYBOOK.phase("buffering").questions)
    assert not form.record_button.disabled

    form.textareas[Q_BREAKERS].value = "yes, opened after ~3 s"
    form.record_button.click()
    form.record_button.click()  # nothing changed: nothing new
    assert [(e["question"], e["answer"]) for e in observations(journal)] == [(Q_BREAKERS, "yes, opened after ~3 s")]
    assert form.status.value == "nothing new to record"

    form.textareas[Q_BREAKERS].value = "yes, but only on api-gateway"
    form.textareas[Q_LAG].value = "within 2 s"
    form.record_button.click()
    obs = observations(journal)
    assert [e["answer"] for e in obs if e["question"] == Q_BREAKERS] == [
        "yes, opened after ~3 s", "yes, but only on api-gateway"]
    assert all(e["phase"] == "buffering" and e["ts"] and e["source"] == "form" for e in obs)
    assert answered(journal)["buffering"] == {Q_BREAKERS: "yes, but only on api-gateway", Q_LAG: "within 2 s"}
    still_open = open_questions(journal, PLAYBOOK)
    assert ("buffering", Q_BREAKERS) not in still_open and ("postmortem", "What went well?") in still_open
    assert repr(form) == "<observation form buffering: 2 of 4 answered>"

    form.textareas[Q_LAG].value = ""  # cleared: journaled, so the question is open again
    form.record()
    assert Q_LAG not in answered(journal)["buffering"]


def test_headless_answers_are_journaled_once_and_widgets_disabled(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    given = {Q_BREAKERS: "no — the breaker never opened", "not a playbook question?": "x"}
    form = observation_form(journal, PLAYBOOK, "buffering", answers=given, live=False, show=False)
    observation_form(journal, PLAYBOOK, "buffering", answers=given, live=False, show=False)  # the cell ran twice
    assert all(a.disabled for a in form.textareas.values()) and form.record_button.disabled
    assert form.textareas[Q_BREAKERS].value == "no — the breaker never opened"
    assert len(observations(journal)) == 2 and {e["source"] for e in observations(journal)} == {"parameter"}
    table = form.static_table()
    rows = {r[0]: r[1] for r in table.rows}
    assert rows[Q_BREAKERS] == "no — the breaker never opened"
    assert rows[Q_LAG] == OPEN
    assert rows["not a playbook question? (not a playbook question)"] == "x"
    assert table.title == "Observations: Event Buffering"
    assert "no — the breaker never opened" in table.html() and "| open |" in table.markdown()
    assert f"question: {Q_LAG} | answer: open" in table.text()


def test_a_question_typed_with_other_case_or_blanks_is_the_playbooks(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    observation_form(journal, PLAYBOOK, "buffering", answers={"  did circuit   breakers ENGAGE? ": "yes"}, live=False,
                     show=False)
    assert answered(journal) == {"buffering": {Q_BREAKERS: "yes"}}


def test_static_tables_escape_what_the_team_typed(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    form = observation_form(journal, PLAYBOOK, "buffering", answers={Q_BREAKERS: "<b>yes</b> | a\nb"}, live=False,
                            show=False)
    table = form.static_table()
    assert "&lt;b&gt;yes&lt;/b&gt; | a<br>b" in table.html() and "<b>yes</b>" not in table.html()
    assert "<b>yes</b> \\| a<br>b" in table.markdown()
    bundle = table._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/markdown", "text/plain"}


def test_headless_stamps_are_journaled_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    clock = Clock()
    clock.set_t0(datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc))
    sb = stamp_buttons(journal, clock, stamps={"alert_seen": 70, "acknowledged": "2026-01-01T12:04:10+00:00"},
                       live=False, show=False)
    stamp_buttons(journal, clock, stamps={"acknowledged": 1}, live=False, show=False)  # re-run: not again
    assert [(e["stamp"], e["at"], e["source"]) for e in stamps(journal)] == [
        ("alert_seen", "2026-01-01T12:01:10+00:00", "parameter"),
        ("acknowledged", "2026-01-01T12:04:10+00:00", "parameter")]
    assert stamps(journal)[1]["t_offset"] == "T+04:10"
    assert all(b.disabled for b in sb.buttons.values())
    assert team_response_seconds(journal, None).seconds == 180.0
    rows = {r[0]: r[1:] for r in sb.static_table().rows}
    assert rows["acknowledged"] == ("2026-01-01T12:04:10+00:00", "T+04:10") and rows["paged"][0] == "not stamped"
    with pytest.raises(InvalidParameters):
        stamp_buttons(Journal(tmp_path / "other.jsonl"), clock, stamps={"coffee": 1}, live=False, show=False)


def test_a_relative_stamp_without_t0_is_not_invented(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    sb = stamp_buttons(journal, Clock(), stamps={"acknowledged": 30}, live=False, show=False)
    (entry,) = stamps(journal)
    assert entry["at"] is None and "T+0" in entry["reason"]
    assert team_response_seconds(journal, datetime.now(timezone.utc)).seconds is None
    assert {r[0]: r[1] for r in sb.static_table().rows}["acknowledged"] == "unknown"


def test_a_live_button_stamps_now_and_tells_the_run(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    clock = Clock()
    clock.set_t0(clock.now() - timedelta(seconds=100))
    told: list[str] = []
    sb = stamp_buttons(journal, clock, stamps=None, live=True, show=False, on_stamp=told.append)
    before = datetime.now(timezone.utc)
    sb.buttons["paged"].click()
    (entry,) = stamps(journal)
    at = datetime.fromisoformat(entry["at"])
    assert entry["stamp"] == "paged" and before <= at <= datetime.now(timezone.utc)
    assert entry["t_offset"].startswith("T+01:4")
    assert sb.buttons["paged"].description.startswith("paged ✓") and sb.buttons["paged"].button_style == "success"
    assert told == ["paged"]  # the run re-measures team response at every stamp


def test_a_live_stamp_takes_a_typed_time(tmp_path: Path) -> None:
    """A moment stamped late (after a wait that blocked the kernel) takes the time typed."""
    journal = Journal(tmp_path / "journal.jsonl")
    now = datetime(2026, 1, 1, 12, 10, 0, tzinfo=timezone.utc)
    clock = Clock(now=lambda: now)
    clock.set_t0(datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc))
    sb = stamp_buttons(journal, clock, stamps=None, live=True, show=False)
    sb.when.value = "T+04:30"
    sb.buttons["acknowledged"].click()
    assert sb.when.value == ""
    sb.when.value = "12:01:15"
    sb.buttons["alert_seen"].click()
    sb.when.value = "soon-ish"
    sb.buttons["paged"].click()  # unreadable: shown, not journaled
    assert "cannot read" in sb.status.value and sb.when.value == "soon-ish"
    got = {e["stamp"]: e["at"] for e in stamps(journal)}
    assert got == {"acknowledged": "2026-01-01T12:04:30+00:00", "alert_seen": "2026-01-01T12:01:15+00:00"}
    assert team_response_seconds(journal, None).seconds == 195.0


def test_typed_times() -> None:
    now = datetime(2026, 1, 2, 0, 5, 0, tzinfo=timezone.utc)
    clock = Clock(now=lambda: now)
    clock.set_t0(datetime(2026, 1, 2, 0, 0, 0, tzinfo=timezone.utc))
    assert parse_stamp_time("T+1:02:03", clock) == clock.t0 + timedelta(hours=1, minutes=2, seconds=3)
    assert parse_stamp_time("T-00:30", clock) == clock.t0 - timedelta(seconds=30)
    assert parse_stamp_time("23:59:30", clock) == datetime(2026, 1, 1, 23, 59, 30, tzinfo=timezone.utc)  # yesterday
    assert parse_stamp_time("2026-01-01T10:00:00", clock) == datetime(2026, 1, 1, 10, tzinfo=timezone.utc)
    for bad in ("25:00", "soon"):
        with pytest.raises(InvalidParameters):
            parse_stamp_time(bad, clock)
    with pytest.raises(InvalidParameters, match="T\\+0"):
        parse_stamp_time("T+00:10", Clock())


def test_checklist_headless_and_live(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    form = checklist_form(journal, CHECKLIST, checklist={"Backup": True, CHECKLIST[0]: True, "Coffee": True},
                          live=False, show=False)
    checklist_form(journal, CHECKLIST, checklist={"Backup": True}, live=False, show=False)  # re-run: once
    (entry,) = [e for e in journal.entries() if e["kind"] == "checklist"]
    assert entry["phase"] == "preflight" and entry["complete"] is False
    assert entry["items"][CHECKLIST[0]] is True
    assert entry["items"]["Backup: Create pre-chaos database snapshot"] is True
    assert len(entry["missing"]) == len(CHECKLIST) - 2 and entry["unknown_items"] == {"Coffee": True}
    assert form.static_table().note == f"2 of {len(CHECKLIST)} done"
    assert ("Coffee (not a playbook item)", "☑ done") in form.static_table().rows

    live = checklist_form(journal, CHECKLIST, checklist=None, live=True, show=False)
    for box in live.checkboxes.values():
        box.value = True
    live.record_button.click()
    last = [e for e in journal.entries() if e["kind"] == "checklist"][-1]
    assert last["complete"] is True and last["missing"] == [] and last["source"] == "form"


def test_action_items_headless_once_live_on_add_and_to_csv(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    items = [
        {"title": "Alert on consumer lag > 1000", "owner": "sre", "due": "2026-02-01", "ticket": "OPS-1"},
        {"title": 'Buffer size, "quoted", with commas', "owner": "", "due": "", "ticket": ""},
    ]
    action_items_form(journal, items=items, live=False, show=False)
    action_items_form(journal, items=items, live=False, show=False)  # re-run: not twice
    live = action_items_form(journal, items=None, live=True, show=False)
    live.fields["title"].value = "Page the platform team too"
    live.fields["owner"].value = "alice"
    live.add_button.click()
    assert live.fields["title"].value == "" and live.fields["owner"].value == ""
    live.add_button.click()  # nothing typed: nothing added
    assert repr(live) == "<action items: 3>"

    path = write_action_items_csv(journal, tmp_path / "action-items.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["title"] for r in rows] == [items[0]["title"], items[1]["title"], "Page the platform team too"]
    assert rows[0]["ticket"] == "OPS-1" and rows[2]["owner"] == "alice" and rows[2]["recorded_at"]
    assert [r[0] for r in live.static_table().rows] == [r["title"] for r in rows]


NOTEBOOK_CODE = """
from gamedaylib.journal import Journal
from gamedaylib.clock import Clock
from gamedaylib.gamedays.nats_partition.playbook import PLAYBOOK
from gamedaylib import forms
journal = Journal({journal!r})
clock = Clock()
clock.set_t0(clock.now())
forms.checklist_form(journal, PLAYBOOK.checklist, checklist={{"Backup": True}}, live=False)
forms.observation_form(journal, PLAYBOOK, "buffering", answers={answers!r}, live=False)
forms.stamp_buttons(journal, clock, stamps={{"acknowledged": 42}}, live=False)
forms.action_items_form(journal, items=[{{"title": "Add a lag alert", "owner": "bob", "due": "", "ticket": "OPS-7"}}],
                        live=False)
"""


def test_headless_answers_survive_without_widget_state(tmp_path: Path) -> None:
    """Run the forms headless in a real kernel, drop the widget state as Papermill does, and read the
    notebook back with nbformat and as HTML: every answer is there, unanswered questions say open."""
    answer = "Yes: retries every 1-2 s & backoff (see gateway log)"
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(NOTEBOOK_CODE.format(
        journal=str(tmp_path / "journal.jsonl"), answers={"Are services logging retry attempts?": answer})))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    nb.metadata.pop("widgets", None)
    path = tmp_path / "runbook.ipynb"
    nbformat.write(nb, path)

    read = nbformat.read(path, as_version=4)
    outputs = read.cells[0].outputs
    assert not [o for o in outputs if o.output_type == "error"], outputs
    plain = "\n".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    htmls = "\n".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert answer in plain
    assert "answer: open" in plain  # unanswered questions are listed as open
    assert "Add a lag alert" in plain and "OPS-7" in plain
    assert "T+00:42" in plain
    assert "retries every 1-2 s &amp; backoff" in htmls

    body, _ = HTMLExporter().from_notebook_node(read)
    assert "Are services logging retry attempts?" in body
    assert "retries every 1-2 s &amp; backoff (see gateway log)" in body
    assert "Did circuit breakers engage?" in body
    assert "VBox(children" not in body and "[observation form: Event Buffering" in body  # a short fallback line
    entries = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert [e["answer"] for e in entries if e["kind"] == "observation"] == [answer]
