"""A written playbook's markdown read as data: the two in-package playbooks read to what their hand-written
``playbook.py`` and their profiles declare (a test that fails on drift between the text and the code), a
playbook of our own in the same form, and the refusals (one line naming the heading)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gamedaylib.authoring import markdown
from gamedaylib.authoring.markdown import slug
from gamedaylib.authoring.threshold import Threshold
from gamedaylib.exceptions import GamedayError, PlaybookRefused
from gamedaylib.gamedays import scenario
from gamedaylib.gamedays.nats_partition.params import NatsPartitionParams
from gamedaylib.gamedays.postgres_failover.params import FailoverParams
from gamedaylib.parameters import RunParams

HERE = Path(__file__).resolve().parent
REDIS = HERE / "playbooks" / "redis-failover.md"

# a playbook does not write phase ids: each gameday names its phases by title
PHASE_IDS = {
    "GAMEDAY-001": {"Pre-Flight": "preflight", "Chaos Injection": "injection", "Event Buffering": "buffering",
                    "Partition Heals": "heal", "Event Replay": "replay", "RTO Verification": "rto",
                    "RPO Verification": "rpo", "Incident Response Test": "incident_response",
                    "Post-Mortem": "postmortem"},
    "GAMEDAY-002": {"Pre-Flight": "preflight", "Chaos Injection": "injection", "Failover": "failover",
                    "Reconnect and Replay": "replay", "Old Primary Rejoins": "rejoin", "RTO Verification": "rto",
                    "RPO Verification": "rpo", "Incident Response Test": "incident_response",
                    "Post-Mortem": "postmortem"},
}
PARAMS: dict[str, type[RunParams]] = {"GAMEDAY-001": NatsPartitionParams, "GAMEDAY-002": FailoverParams}


@pytest.mark.parametrize("gameday_id", ["GAMEDAY-001", "GAMEDAY-002"])
def test_the_in_package_playbook_reads_to_what_its_playbook_py_declares(gameday_id: str) -> None:
    declared = scenario(gameday_id).playbook
    written = markdown.load(scenario(gameday_id).playbook_md)
    read = written.to_playbook(phase_ids=PHASE_IDS[gameday_id])

    assert read.id == declared.id == written.id
    assert read.title.casefold() == declared.title.casefold()
    assert [p.title for p in read.phases] == [p.title for p in declared.phases]
    assert read.phase_ids == declared.phase_ids
    assert [p.offset_minutes for p in read.phases] == [p.offset_minutes for p in declared.phases]
    for got, want in zip(read.phases, declared.phases, strict=True):
        assert got.questions == want.questions, got.id
    assert read.phases == declared.phases
    assert read.checklist == declared.checklist
    # the table's metrics come first, in its order, then the ones the design adds
    assert read.metrics == declared.metrics[:len(read.metrics)]
    assert len(read.metrics) >= 6


@pytest.mark.parametrize("gameday_id", ["GAMEDAY-001", "GAMEDAY-002"])
def test_the_tables_targets_are_the_full_profiles_numbers(gameday_id: str) -> None:
    full = PARAMS[gameday_id].PROFILES["full"]
    written = markdown.load(scenario(gameday_id).playbook_md)
    for metric in written.metrics:
        if metric.target.is_duration:
            assert full[metric.name.removesuffix("_seconds") + "_target_seconds"] == metric.target.value, metric
        else:  # a count the playbook wants at none (the scorecard judges it against 0)
            assert (metric.target.comparison, metric.target.value) == ("==", 0.0), metric


def test_the_in_package_playbooks_steps_rollback_and_criteria() -> None:
    written = markdown.load(scenario("GAMEDAY-001").playbook_md)
    preflight = written.phase("Pre-Flight")
    assert [s.what for s in preflight.steps][:2] == ["Verify all services healthy", "Check NATS consumer lag baseline"]
    assert preflight.steps[0].command == "kubectl get pods -n teei-prod | grep -v Running"
    assert preflight.expected.startswith("All pods Running")
    assert written.phase("event_replay").criteria[0] == "Consumer lag returns to <10 messages within 15 minutes"
    assert [s.section for s in written.phase("Event Replay").steps] == ["Validation"] * 3
    incident = written.phase("Incident Response Test")
    assert all(not s.is_shell for s in incident.steps) and len(incident.steps) == 4
    assert [s.what for s in written.rollback][:1] == ["Immediately remove chaos"]
    assert written.rollback[0].command == "kubectl delete networkchaos nats-partition -n teei-prod"
    assert written.rollback[3].command.startswith("curl -X POST") and "\n" in written.rollback[3].command
    assert not written.rollback[-1].is_shell  # "Notify stakeholders": a step for a person
    assert "### T+10 minutes" not in preflight.text and preflight.text.startswith("**Actions**")


def test_a_playbook_of_our_own_in_the_same_form() -> None:
    written = markdown.load(REDIS)
    assert written.id == "GAMEDAY-101" and written.scenario.startswith("Redis Sentinel")
    assert [(p.slug, p.offset_minutes, p.end_offset_minutes) for p in written.phases] == [
        ("baseline", -10, None), ("kill_the_primary", 0, None), ("failover", 1, 5), ("debrief", 30, None)]
    assert [(m.name, m.target) for m in written.metrics] == [
        ("failover_seconds", Threshold("<", 30.0, "s")),
        ("rto_seconds", Threshold("<=", 300.0, "s")),
        ("sessions_lost", Threshold("==", 0.0, "sessions")),
        ("request_success_rate", Threshold(">=", 99.0, "%")),
    ]
    assert written.checklist == ("Schedule: Announce 24h in advance",
                                 "Replicas: Confirm two replicas are connected and in sync",
                                 "Rollback: Sentinel manual failover command reviewed")
    kill = written.phase("Kill the Primary").steps
    assert [(s.what, s.command) for s in kill] == [("", "redis-cli -h redis-0 debug sleep 120")]
    assert written.phase("failover").criteria == ("A new primary within 30 seconds",
                                                  "Fewer than 1% of requests answered with an error")
    assert written.phase("debrief").questions == ("When did the first alert fire?", "What went well?",
                                                  "Should the session cache tolerate a minute without Redis?")
    assert [s.what for s in written.rollback] == ["Fail over by hand", "Restart the killed primary"]
    book = written.to_playbook()
    assert book.id == "GAMEDAY-101" and book.phase_ids == ("baseline", "kill_the_primary", "failover", "debrief")
    assert book.metric("request_success_rate").comparison == ">=" and book.metric("rto_seconds").unit == "s"


def _refused(text: str) -> PlaybookRefused:
    with pytest.raises(PlaybookRefused) as caught:
        markdown.read(text, source="bad.md")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("bad.md: ")
    assert isinstance(caught.value, GamedayError)
    return caught.value


TOP = "# Gameday Playbook: Broken\n\n**ID**: GAMEDAY-900\n\n## Gameday Timeline\n\n"
PHASE = "### T+0: Chaos Injection\n\n**Actions**:\n```bash\necho inject\n```\n\n"
TABLE_HEAD = "## Success Metrics\n\n| Metric | Target | Result | Status |\n|--------|--------|--------|--------|\n"


@pytest.mark.parametrize(("text", "heading", "why"), [
    (TOP + "Nothing here yet.\n" + TABLE_HEAD + "| RTO | ≤5m | ___ min | |\n", "# Gameday Playbook: Broken",
     "no phase"),
    (PHASE, "(the top)", "no '# Title'"),
    (TOP + PHASE + "### Phase 3: Failover\n\ntext\n", "### Phase 3: Failover", "without a T-offset"),
    (TOP + "### T+10 minutes: Later\n\n" + PHASE, "### T+0: Chaos Injection", "before the phase above it"),
    (TOP + "### T+5.5 minutes: Odd\n\n", "### T+5.5 minutes: Odd", "whole number of minutes"),
    (TOP + "### T+10 to T+5 minutes: Backwards\n\n", "### T+10 to T+5 minutes: Backwards", "ends before"),
    (TOP + PHASE + "### T+5 minutes: Chaos  Injection\n\n", "### T+5 minutes: Chaos  Injection", "a second phase"),
    (TOP + PHASE + "## Success Metrics\n\nTo be decided.\n", "## Success Metrics", "no table"),
    (TOP + PHASE + "## Success Metrics\n\n| Name | Goal |\n|---|---|\n| RTO | ≤5m |\n", "## Success Metrics",
     "no 'Metric' and 'Target' columns"),
    (TOP + PHASE + "## Success Metrics\n\n| Metric | Target |\n| RTO | ≤5m |\n| RPO | 0 |\n",
     "## Success Metrics", "is not its |---|---| rule"),
    (TOP + PHASE + TABLE_HEAD + "| RTO | ≤5m | ___ min |\n", "## Success Metrics", "row 1 has 3 cells"),
    (TOP + PHASE + TABLE_HEAD, "## Success Metrics", "no metric rows"),
    (TOP + PHASE + TABLE_HEAD + "| RTO (Recovery Time) | about an hour | ___ min | |\n", "## Success Metrics",
     "metric 'RTO (Recovery Time)': target 'about an hour' has no number"),
    (TOP + PHASE + TABLE_HEAD + "| RTO | ≤5 fortnights or so | | |\n", "## Success Metrics", "is not a unit"),
    (TOP + PHASE + TABLE_HEAD + "| RTO | ≤5m | | |\n| RTO Time | ≤6m | | |\n", "## Success Metrics",
     "the same metric rto_seconds"),
])
def test_a_playbook_that_cannot_be_read_is_refused_naming_the_heading(text: str, heading: str, why: str) -> None:
    refused = _refused(text)
    assert refused.heading == heading
    assert why in refused.reason, refused.reason
    assert repr(heading) in str(refused)


def test_a_hash_in_a_code_block_is_not_a_heading() -> None:
    written = markdown.read(TOP + "### T+0: Inject\n\n**Actions**:\n```bash\n# 1. Cut it\ncut --now\n\n"
                            "## not a heading\n```\n\n### T+5 minutes: Watch\n\n**Observations to Record**:\n"
                            "1. Did it hold?\n   (say how)\n")
    assert [p.title for p in written.phases] == ["Inject", "Watch"]
    assert [(s.what, s.command) for s in written.phases[0].steps] == [("Cut it", "cut --now"),
                                                                      ("not a heading", "")]
    assert written.phases[1].observations == ("Did it hold? (say how)",)
    assert written.metrics == ()  # no Success Metrics section: no metric (a gameday declares its own)


def test_a_file_that_cannot_be_opened_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PlaybookRefused, match="cannot be read"):
        markdown.load(tmp_path / "missing.md")
    (tmp_path / "latin1.md").write_bytes("# Caf\xe9\n".encode("latin-1"))
    with pytest.raises(PlaybookRefused, match="cannot be read"):
        markdown.load(tmp_path / "latin1.md")


def test_to_playbook_needs_an_id() -> None:
    written = markdown.read("# A Playbook\n\n## Timeline\n\n### T+0: Go\n\ntext\n")
    with pytest.raises(PlaybookRefused, match=r"no \*\*ID\*\* field"):
        written.to_playbook()
    assert written.to_playbook(gameday_id="GAMEDAY-900").phase_ids == ("go",)


@pytest.mark.parametrize(("heading", "title", "start", "end"), [
    ("### T−5 minutes: Unicode Minus", "Unicode Minus", -5, None),
    ("### T+1 minute: One", "One", 1, None),
    ("### T+2 hours: Later", "Later", 120, None),
    ("### T+5–10 minutes: Dashed Range", "Dashed Range", 5, 10),
    ("### T+5 to T+10 minutes: Worded Range", "Worded Range", 5, 10),
    ("### Phase 4: Replay (T+5 minutes)", "Replay", 5, None),
    ("### Cleanup (T+1.5 hours)", "Cleanup", 90, None),
])
def test_the_phase_heading_forms(heading: str, title: str, start: int, end: int | None) -> None:
    written = markdown.read(TOP + heading + "\n\nbody\n")
    (phase,) = written.phases
    assert (phase.title, phase.offset_minutes, phase.end_offset_minutes) == (title, start, end)
    assert phase.heading == heading and phase.text == "body"


_titles = st.from_regex(r"[A-Z][a-z]{2,8}( [A-Z][a-z]{2,8}){0,2}", fullmatch=True)
_questions = st.lists(st.from_regex(r"[A-Z][a-z]{2,8}( [a-z]{2,8}){1,4}\?", fullmatch=True), max_size=3)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-60, 240), _titles, _questions), min_size=1, max_size=6,
                unique_by=lambda p: slug(p[1])),
       st.lists(st.tuples(_titles, st.sampled_from(["≤", "<", ">=", ""]), st.integers(0, 10_000),
                          st.sampled_from(["s", "m", "h", "events", "%"])), min_size=1, max_size=5,
                unique_by=lambda m: m[0]))
def test_what_is_written_in_the_form_reads_back(phases: list[tuple[int, str, list[str]]],
                                               rows: list[tuple[str, str, int, str]]) -> None:
    phases = sorted(phases, key=lambda p: p[0])
    parts = [TOP]
    for offset, title, questions in phases:
        parts.append(f"### T{offset:+d} minutes: {title}\n\n")
        if questions:
            parts.append("**Observations to Record**:\n" + "".join(f"{n}. {q}\n" for n, q in enumerate(questions, 1))
                         + "\n")
    parts.append(TABLE_HEAD + "".join(f"| {label} Rate | {cmp}{value}{unit} | ___ | ☐ |\n"
                                      for label, cmp, value, unit in rows))
    try:
        written = markdown.read("".join(parts))
    except PlaybookRefused as refused:  # only for two labels naming the same metric
        assert "the same metric" in refused.reason
        return
    assert [(p.offset_minutes, p.title, list(p.questions)) for p in written.phases] == phases
    for metric, (label, _cmp, value, unit) in zip(written.metrics, rows, strict=True):
        assert metric.label == f"{label} Rate"
        factor = {"s": 1, "m": 60, "h": 3600}.get(unit, 1)
        assert metric.target.value == value * factor


def test_a_phases_deeper_headings_are_part_of_its_text() -> None:
    written = markdown.read(TOP + "### T+0: Go\n\n**Actions**:\n```bash\ngo\n```\n\n#### If it fails\n\n"
                            "**Success Criteria**:\n- It does not\n\n### T+5 minutes: Watch\n\nwatch\n")
    go, watch = written.phases
    assert "#### If it fails" in go.text and go.criteria == ("It does not",) and watch.text == "watch"


def test_sections_and_phases_by_name() -> None:
    written = markdown.load(scenario("GAMEDAY-001").playbook_md)
    objectives = written.section_text("objectives")
    assert objectives is not None and objectives.startswith("1. Validate event buffering")
    assert written.section_text("Nope") is None
    with pytest.raises(KeyError, match="no phase 'Nope'; the phases are Pre-Flight, Chaos Injection"):
        written.phase("Nope")
