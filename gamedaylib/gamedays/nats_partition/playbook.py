"""GAMEDAY-001 (``playbook.md`` beside this file) as data: phases, questions verbatim, metrics."""

from __future__ import annotations

from gamedaylib.playbook import MetricSpec, Phase, Playbook

GAMEDAY_ID = "GAMEDAY-001"

PLAYBOOK = Playbook(
    id=GAMEDAY_ID,
    title="NATS message broker network partition",
    phases=(
        Phase("preflight", "Pre-Flight", -15),
        Phase("injection", "Chaos Injection", 0),
        Phase("buffering", "Event Buffering", 5, (
            "How quickly did consumer lag start increasing?",
            "Are services logging retry attempts?",
            "Did circuit breakers engage?",
            "Any user-facing errors in Corp Cockpit?",
        )),
        Phase("heal", "Partition Heals", 10),
        Phase("replay", "Event Replay", 15, (
            "How long until consumer lag returns to baseline?",
            "Were all buffered events delivered?",
            "Any duplicate events detected?",
            "Did services auto-recover or need manual intervention?",
        )),
        Phase("rto", "RTO Verification", 30),
        Phase("rpo", "RPO Verification", 45),
        Phase("incident_response", "Incident Response Test", 60, (
            "When did first alert fire?",
            "Who was paged?",
            "Did team follow documented steps?",
            "Was status page updated?",
            "Did alerts provide actionable information?",
            "Did on-call engineer have access to runbooks?",
            "Were stakeholders notified appropriately?",
        )),
        Phase("postmortem", "Post-Mortem", 90, (
            "What went well?",
            "What could be improved?",
            "Were RTO/RPO targets met?",
            "Any code/config changes needed?",
            "Update runbooks with learnings",
        )),
    ),
    metrics=(
        # the playbook's six, then the two DESIGN.md adds
        MetricSpec("rto_seconds", "RTO (Recovery Time)", "<=", "s"),
        MetricSpec("rpo_seconds", "RPO (Data Loss Window)", "<=", "s"),
        MetricSpec("event_loss_count", "Event Loss Count", "==", "events"),
        MetricSpec("user_facing_errors", "User-Facing Errors", "==", "errors"),
        MetricSpec("alert_fire_seconds", "Alert Fire Time", "<=", "s"),
        MetricSpec("team_response_seconds", "Team Response Time", "<=", "s"),
        MetricSpec("duplicate_count", "Duplicate Events Stored", "==", "rows"),
        MetricSpec("lag_recovery_seconds", "Consumer Lag Recovery", "<=", "s"),
    ),
    checklist=(
        "Schedule: Announce 48h in advance, block 2h time slot",
        "Participants: Confirm attendance (SRE lead, 2 backend engineers, platform engineer)",
        "Monitoring: Verify Grafana dashboards accessible",
        "Alerts: Ensure PagerDuty/Slack notifications enabled",
        "Backup: Create pre-chaos database snapshot",
        'Stakeholders: Notify leadership, set status page to "Maintenance"',
        "Rollback: Verify rollback script tested in staging",
    ),
    critical_event_types=("buddy.match", "kintell.session", "report.generated"),
)
