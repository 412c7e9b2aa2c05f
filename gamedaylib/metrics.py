"""The success metrics every gameday on the event pipeline shares, judged from plain facts.

Pure functions: each takes what was measured (times, counts, a canary report, or the reason it could
not be measured) and returns a :class:`~gamedaylib.scorecard.Metric` with its evidence. No probe, no
clock, no lab: the phases gather the facts, these judge them, and tests call them directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gamedaylib.canary import CanaryReport
from gamedaylib.scorecard import Metric

__all__ = [
    "LossParts",
    "alert_fire",
    "duplicates",
    "event_loss",
    "lag_recovery",
    "rpo",
    "rto",
    "team_response",
    "user_facing_errors",
]


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


def rto(*, t0: datetime | None, recovered_at: datetime | None, target: float, blind: str | None,
        last_seen: datetime | None, recovery: str) -> Metric:
    """RTO = T+0 → full recovery (``recovery`` says what full recovery required). Not measured without
    T+0, or when recovery was not seen because its input went blind; a fail when recovery never came."""
    name = "rto_seconds"
    if t0 is None:
        return Metric.not_measured(name, target, "no confirmed injection (T+0)", unit="s")
    if recovered_at is not None:
        return Metric.judged(name, round((recovered_at - t0).total_seconds(), 1), target,
                             f"T+0 {_iso(t0)} (fault confirmed) → full recovery {_iso(recovered_at)} ({recovery})",
                             unit="s")
    if blind:
        return Metric.not_measured(name, target, f"{blind}; full recovery ({recovery}) could not be seen", unit="s")
    waited = ((last_seen or t0) - t0).total_seconds()
    return Metric(name, round(waited, 1), target, "<=", "fail",
                  f"no full recovery ({recovery}) within the deadline: RTO > {waited:.0f} s", "s")


def lag_recovery(*, healed_at: datetime | None, lag_recovered_at: datetime | None, target: float,
                 threshold: float, blind: str | None, since: str = "heal") -> Metric:
    """``since`` (the heal, or the failover) → the first reading with consumer lag under the threshold."""
    name = "lag_recovery_seconds"
    if healed_at is None:
        return Metric.not_measured(name, target, f"no {since} time", unit="s")
    if lag_recovered_at is not None:
        took = max(0.0, (lag_recovered_at - healed_at).total_seconds())
        return Metric.judged(name, round(took, 1), target,
                             f"{since} {_iso(healed_at)} → first reading with consumer lag (num_pending, from the "
                             f"consumer leader) under {threshold:g} at {_iso(lag_recovered_at)}", unit="s")
    if blind:
        return Metric.not_measured(name, target, f"{blind}; lag may have gone under {threshold:g} unseen", unit="s")
    return Metric(name, target, target, "<=", "fail", f"lag never under {threshold:g} within the deadline", "s")


def rpo(report: CanaryReport | str, target: float) -> Metric:
    """The longest loss window of lost canaries (0 when none was lost); ``report`` is the reason when
    the canaries could not be accounted."""
    if isinstance(report, str):
        return Metric.not_measured("rpo_seconds", target, report, unit="s")
    return Metric.judged("rpo_seconds", round(float(report.rpo_seconds or 0.0), 1), target,
                         f"loss window of lost canaries ({report.lost} of {report.sent} lost; 0 when none "
                         f"lost): {report.evidence}", unit="s")


@dataclass(frozen=True)
class LossParts:
    """The parts of the loss, kept apart: exact for the canaries, as reported by the services, and
    (lab only) the ground truth of what users were told."""

    canaries_lost: int | None  # canaries accepted (2xx) and never stored: exact, for the canaries
    canaries_reason: str = ""  # why the canaries could not be accounted
    service_reported_dropped: float | None = None  # events_dropped_total increase over the gameday
    service_reason: str = ""
    ground_truth_lost: int | None = None  # user events accepted (202) and not stored: lab only
    ground_truth_accepted: int | None = None

    def as_events(self) -> dict[str, Any]:
        return {"canaries_lost": self.canaries_lost, "service_reported_dropped": self.service_reported_dropped,
                "ground_truth_lost": self.ground_truth_lost}


def event_loss(parts: LossParts) -> Metric:
    """Events accepted and never stored. With the lab's ground truth: canaries lost + users' events
    lost (disjoint, both exact). Without it: the larger of the two lower bounds (lost canaries; what
    the services report they dropped, which counts canaries too)."""
    name = "event_loss_count"
    bits = []
    if parts.canaries_lost is not None:
        bits.append(f"{parts.canaries_lost} canaries accepted (2xx) but never stored (exact for the canaries)")
    else:
        bits.append(f"canaries not accounted: {parts.canaries_reason}")
    if parts.service_reported_dropped is not None:
        bits.append(f"the gateways report {parts.service_reported_dropped:.0f} events dropped "
                    "(events_dropped_total increase over the gameday; a lower bound: a loss the services "
                    "do not see is not in it)")
    elif parts.service_reason:
        bits.append(f"service-reported drops not read: {parts.service_reason}")
    if parts.ground_truth_lost is not None:
        bits.append(f"lab ground truth: {parts.ground_truth_lost} of {parts.ground_truth_accepted} user events "
                    "the gateway accepted (202) are not in the events table")
        if parts.canaries_lost is None:
            return Metric.not_measured(name, 0, "; ".join(bits), comparison="==", unit="events")
        value = parts.canaries_lost + parts.ground_truth_lost
        return Metric.judged(name, value, 0, f"{value} = canaries lost + users' events lost: " + "; ".join(bits),
                             comparison="==", unit="events")
    known = [v for v in (parts.canaries_lost, parts.service_reported_dropped) if v is not None]
    if not known:
        return Metric.not_measured(name, 0, "; ".join(bits), comparison="==", unit="events")
    value = int(max(known))
    return Metric.judged(name, value, 0, f"at least {value} (the larger lower bound): " + "; ".join(bits),
                         comparison="==", unit="events")


def user_facing_errors(*, canary_errors: int | None, canary_5xx: int, gateway_5xx: float | None) -> Metric:
    """Canary answers other than 2xx (no answer included) + the gateway's other 5xx answers."""
    if canary_errors is None and gateway_5xx is None:
        return Metric.not_measured("user_facing_errors", 0, "no canaries and no gateway metrics",
                                   comparison="==", unit="errors")
    others = max(0, int(gateway_5xx or 0) - canary_5xx) if gateway_5xx is not None else 0
    value = int(canary_errors or 0) + others
    evidence = (f"{canary_errors or 0} canary answers other than 2xx (no answer included)"
                + (f" + {others} other 5xx answers of the gateway since pre-flight (http_requests_total)"
                   if gateway_5xx is not None else "; the gateway's 5xx answers not read"))
    return Metric.judged("user_facing_errors", value, 0, evidence, comparison="==", unit="errors")


def duplicates(rows: list[tuple[str, int]] | str, canary_duplicated: int) -> Metric:
    """Extra rows of idempotency keys stored more than once since the run started (``rows`` is the
    reason when the table could not be read)."""
    if isinstance(rows, str):
        return Metric.not_measured("duplicate_count", 0, rows, comparison="==", unit="rows")
    extra = sum(c - 1 for _, c in rows)
    return Metric.judged("duplicate_count", extra, 0,
                         f"{extra} extra rows over {len(rows)} idempotency keys stored more than once since the run "
                         f"started ({canary_duplicated} of them canaries)", comparison="==", unit="rows")


def alert_fire(*, t0: datetime | None, fired_at: datetime | None, label: str, waited: float, target: float,
               unavailable: str | None) -> Metric:
    """The first gameday alert's fire time − T+0."""
    name = "alert_fire_seconds"
    if t0 is None:
        return Metric.not_measured(name, target, "no T+0", unit="s")
    if unavailable:
        return Metric.not_measured(name, target, unavailable, unit="s")
    if fired_at is None:
        return Metric(name, None, target, "<=", "fail", f"no gameday alert fired within {waited:.0f} s after T+0", "s")
    return Metric.judged(name, round((fired_at - t0).total_seconds(), 1), target,
                         f"first alert {label} fired at {_iso(fired_at)}, T+0 at {_iso(t0)} (Alertmanager/Prometheus)",
                         unit="s")


def team_response(seconds: float | None, evidence: str, target: float) -> Metric:
    """The first ``acknowledged`` stamp − the alert's fire time."""
    if seconds is None:
        return Metric.not_measured("team_response_seconds", target, evidence, unit="s")
    return Metric.judged("team_response_seconds", round(seconds, 1), target, evidence, unit="s")
