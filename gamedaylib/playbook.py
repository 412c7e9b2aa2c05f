"""GAMEDAY-001 as data: phase ids, titles, T-offsets and the playbook's questions, verbatim.

Everything that names a phase, a question or a metric takes it from here, so the notebook, the forms,
the journal, the scorecard and the incident report agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GAMEDAY_ID = "GAMEDAY-001"
TITLE = "NATS message broker network partition"

# Papermill's notebook contract names.
PARAMETERS_TAG = "parameters"
INJECTED_PARAMETERS_TAG = "injected-parameters"
LIVE_ONLY_TAG = "live-only"

CRITICAL_EVENT_TYPES = ("buddy.match", "kintell.session", "report.generated")
STREAM_NAME = "EVENTS"
CONSUMER_NAME = "reporting"


@dataclass(frozen=True)
class Phase:
    id: str
    title: str
    offset_minutes: int  # the playbook's nominal T-offset
    questions: tuple[str, ...] = field(default_factory=tuple)


PHASES: tuple[Phase, ...] = (
    Phase("preflight", "Pre-Flight", -15),
    Phase("injection", "Chaos Injection", 0),
    Phase(
        "buffering",
        "Event Buffering",
        5,
        (
            "How quickly did consumer lag start increasing?",
            "Are services logging retry attempts?",
            "Did circuit breakers engage?",
            "Any user-facing errors in Corp Cockpit?",
        ),
    ),
    Phase("heal", "Partition Heals", 10),
    Phase(
        "replay",
        "Event Replay",
        15,
        (
            "How long until consumer lag returns to baseline?",
            "Were all buffered events delivered?",
            "Any duplicate events detected?",
            "Did services auto-recover or need manual intervention?",
        ),
    ),
    Phase("rto", "RTO Verification", 30),
    Phase("rpo", "RPO Verification", 45),
    Phase(
        "incident_response",
        "Incident Response Test",
        60,
        (
            "When did first alert fire?",
            "Who was paged?",
            "Did team follow documented steps?",
            "Was status page updated?",
            "Did alerts provide actionable information?",
            "Did on-call engineer have access to runbooks?",
            "Were stakeholders notified appropriately?",
        ),
    ),
    Phase(
        "postmortem",
        "Post-Mortem",
        90,
        (
            "What went well?",
            "What could be improved?",
            "Were RTO/RPO targets met?",
            "Any code/config changes needed?",
            "Update runbooks with learnings",
        ),
    ),
)

PHASE_IDS: tuple[str, ...] = tuple(p.id for p in PHASES)
PHASES_BY_ID: dict[str, Phase] = {p.id: p for p in PHASES}

PRE_GAMEDAY_CHECKLIST: tuple[str, ...] = (
    "Schedule: Announce 48h in advance, block 2h time slot",
    "Participants: Confirm attendance (SRE lead, 2 backend engineers, platform engineer)",
    "Monitoring: Verify Grafana dashboards accessible",
    "Alerts: Ensure PagerDuty/Slack notifications enabled",
    "Backup: Create pre-chaos database snapshot",
    'Stakeholders: Notify leadership, set status page to "Maintenance"',
    "Rollback: Verify rollback script tested in staging",
)

INCIDENT_STAMPS: tuple[str, ...] = ("alert_seen", "paged", "acknowledged", "status_page_updated")

# The playbook's six success metrics, then the two DESIGN.md adds.
METRIC_NAMES: tuple[str, ...] = (
    "rto_seconds",
    "rpo_seconds",
    "event_loss_count",
    "user_facing_errors",
    "alert_fire_seconds",
    "team_response_seconds",
    "duplicate_count",
    "lag_recovery_seconds",
)
PLAYBOOK_METRIC_LABELS: dict[str, str] = {
    "rto_seconds": "RTO (Recovery Time)",
    "rpo_seconds": "RPO (Data Loss Window)",
    "event_loss_count": "Event Loss Count",
    "user_facing_errors": "User-Facing Errors",
    "alert_fire_seconds": "Alert Fire Time",
    "team_response_seconds": "Team Response Time",
    "duplicate_count": "Duplicate Events Stored",
    "lag_recovery_seconds": "Consumer Lag Recovery",
}
