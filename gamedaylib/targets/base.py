"""The one interface the runbook talks to, whether the system is the embedded lab or a cluster.

A target knows how to check the system is fit (``preflight``), read service logs, and, for the lab
only, report the ground truth of what users were told. What a gameday does to it is a ``Fault``
(``inject``, ``heal``: safe to call twice, also after a failure, ``status``), made by the scenario.
Probes (NATS monitoring, Prometheus, Alertmanager, the events table, service metrics) are reached
through the URLs in ``Endpoints``, so the same probe code serves both targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Check:
    """One pre-flight check: what was checked, whether it passed, and what was seen."""

    name: str
    ok: bool
    detail: str = ""
    fatal: bool = True  # a failed fatal check stops the gameday before any fault


@dataclass(frozen=True)
class Endpoints:
    """Where the probes look. ``events_dsn`` may carry a password: never archive it."""

    ingest_url: str | None = None  # POST {"type","idempotency_key","payload"} here (gateway /v1/events)
    stream_url: str | None = None  # the Corp Cockpit SSE stream
    nats_monitor_url: str | None = None  # one nats-server's monitoring (/jsz, /healthz)
    nats_monitor_urls: tuple[str, ...] = ()  # every server's: the lag is read from the consumer leader
    nats_account: str = "$G"
    prometheus_url: str | None = None
    prometheus_selectors: dict[str, str] = field(default_factory=dict)  # service -> PromQL label matchers
    alertmanager_url: str | None = None
    events_dsn: str | None = None
    service_metrics: dict[str, tuple[str, ...]] = field(default_factory=dict)  # service -> every replica's /metrics
    stream_name: str = "EVENTS"
    consumer_name: str = "reporting"
    dashboards: dict[str, str] = field(default_factory=dict)
    namespace: str = ""  # the cluster namespace (alerts and series of other environments are filtered out)

    def monitor_urls(self) -> tuple[str, ...]:
        """Every NATS monitoring URL to ask for the consumer's leader (``nats_monitor_urls``, else the one)."""
        if self.nats_monitor_urls:
            return self.nats_monitor_urls
        return (self.nats_monitor_url,) if self.nats_monitor_url else ()


@dataclass(frozen=True)
class FaultStatus:
    """What the target reports of the fault right now, from its own records.

    ``ended_early`` says why a fault stopped before the runbook healed it ("duration expired",
    "paused", "deleted outside the runbook", "the lab proxy's deadline passed"); ``ended_at`` is when,
    as the target recorded it (Chaos Mesh's ``Recover`` events, the lab proxy's heal time)."""

    active: bool
    ended_early: str | None = None
    ended_at: datetime | None = None
    detail: str = ""


@dataclass(frozen=True)
class GroundTruth:
    """What the lab knows really happened: every answer a simulated user got."""

    accepted_keys: frozenset[str]  # answered 202
    rejected: int  # answered 503
    errors: int  # any other non-2xx, or no answer
    dropped_total: int  # gateway's events_dropped_total
    stored_keys: dict[str, int]  # idempotency_key -> rows in events


@runtime_checkable
class Fault(Protocol):
    """One fault a gameday injects, with a deadline after which it ends by itself (whatever happens
    to the runbook). ``heal`` is safe to call twice and after any failure."""

    description: str  # what it does, in words ("the services cut off from every NATS server")

    def preflight(self) -> list[Check]:
        """Can the fault be applied (and healed)? Changes nothing (a server-side dry run at most)."""
        ...

    def inject(self, *, deadline_seconds: float) -> datetime:
        """Apply the fault, wait until it is confirmed, return that moment (T+0). InjectionFailed."""
        ...

    def heal(self) -> datetime | None:
        """End the fault and confirm it ended; when (None when nothing was in force). HealFailed."""
        ...

    def status(self) -> FaultStatus: ...

    def manifest(self) -> str:
        """What would be applied, for a dry run and the archive (secrets masked by the caller)."""
        ...


@runtime_checkable
class Target(Protocol):
    name: str  # "lab" | "kubernetes"

    @property
    def endpoints(self) -> Endpoints: ...

    def preflight(self) -> list[Check]:
        """Check the system is fit for a gameday. Changes nothing."""
        ...

    def service_logs(self, service: str, *, since: datetime | None = None) -> list[str]:
        """Log lines of a service (``api-gateway``, ``reporting``), oldest first."""
        ...

    def ground_truth(self) -> GroundTruth | None:
        """The lab's record of what happened; None on a real cluster."""
        ...

    def close(self) -> None:
        """Release what the target opened (a lab it started is stopped)."""
        ...
