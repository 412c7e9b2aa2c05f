"""GAMEDAY-002 (``playbook.md`` beside this file) as data: phases, questions verbatim, metrics."""

from __future__ import annotations

from gamedaylib.playbook import MetricSpec, Phase, Playbook

GAMEDAY_ID = "GAMEDAY-002"

PLAYBOOK = Playbook(
    id=GAMEDAY_ID,
    title="PostgreSQL primary failover",
    phases=(
        Phase("preflight", "Pre-Flight", -15),
        Phase("injection", "Chaos Injection", 0),
        Phase("failover", "Failover", 1, (
            "How long until a new primary accepted writes?",
            "Did the reporting service stop acknowledging events it could not write?",
            "Any user-facing errors in Corp Cockpit?",
            "Which alerts fired, and when?",
        )),
        Phase("replay", "Reconnect and Replay", 5, (
            "How long until reporting stored events again?",
            "How long until consumer lag returned to baseline?",
            "Any duplicate events detected?",
            "Did services auto-recover or need manual intervention?",
        )),
        Phase("rejoin", "Old Primary Rejoins", 15),
        Phase("rto", "RTO Verification", 30),
        Phase("rpo", "RPO Verification", 45),
        Phase("incident_response", "Incident Response Test", 60, (
            "When did the first alert fire?",
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
            "Were failover, RTO and RPO targets met?",
            "Any code/config changes needed (replication mode, connection handling)?",
            "Update runbooks with learnings",
        )),
    ),
    metrics=(
        # the playbook's table, then the ones the design adds
        MetricSpec("failover_seconds", "Failover Time (kill → new primary writable)", "<=", "s"),
        MetricSpec("rto_seconds", "RTO (Recovery Time)", "<=", "s"),
        MetricSpec("rpo_seconds", "RPO (Data Loss Window)", "<=", "s"),
        MetricSpec("event_loss_count", "Event Loss Count", "==", "events"),
        MetricSpec("user_facing_errors", "User-Facing Errors", "==", "errors"),
        MetricSpec("split_brain_samples", "Split-Brain Samples (two writable primaries)", "==", "samples"),
        MetricSpec("alert_fire_seconds", "Alert Fire Time", "<=", "s"),
        MetricSpec("team_response_seconds", "Team Response Time", "<=", "s"),
        MetricSpec("duplicate_count", "Duplicate Events Stored", "==", "rows"),
        MetricSpec("lag_recovery_seconds", "Consumer Lag Recovery", "<=", "s"),
        MetricSpec("replica_rejoin_seconds", "Old Primary Streaming Again", "<=", "s"),
    ),
    checklist=(
        "Schedule: Announce 48h in advance, block 2h time slot",
        "Participants: Confirm attendance (SRE lead, DBA, on-call, product owner)",
        "Backup: Verified base backup and WAL archive restore within the last 24h",
        "Rollback Plan: Reviewed and approved (manual promotion tested in staging)",
        "Monitoring: Replication and event-lag dashboards open",
        "Communication: Status page and #incidents channel ready",
    ),
    critical_event_types=("buddy.match", "kintell.session", "report.generated"),
)
