"""The alert timeline: when did the gameday's alerts fire?

Alertmanager's API v2 (``GET /api/v2/alerts``) is the first source: what on-call would be paged for.
Prometheus is the fallback (``/api/v1/alerts``: the rules' own state, with the firing moment derived
from ``activeAt`` plus the rule's ``for`` duration read from ``/api/v1/rules``).

Alertmanager forgets resolved alerts after a while, and a gameday alert may resolve soon after heal, so
the runbook calls ``poll`` during the partition; the probe remembers every alert it has ever seen and
``timeline``/``first_fire_after`` answer from that memory plus a fresh look.

A shared Prometheus and Alertmanager hold the alerts of every environment (staging's
``NATSConsumerLagHigh`` has the same name as production's), so on a cluster the probe is given the
gameday's ``namespace``: only alerts carrying that ``namespace`` label count (Alertmanager is asked with
the matcher ``filter=namespace="..."``; Prometheus's answer is filtered here). The lab's alerts carry
no namespace, and the lab's probe is given none.
"""

from __future__ import annotations

import threading
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from gamedaylib.exceptions import ProbeError
from gamedaylib.probes import get_json, parse_time

__all__ = ["GAMEDAY_ALERTS", "AlertEvent", "AlertProbe"]

# The rule names in monitoring/ (the alerts the playbook expects during a partition).
GAMEDAY_ALERTS: tuple[str, ...] = ("NATSUnreachable", "NATSConsumerLagHigh", "EventBufferGrowing")

_PROBE = "alerts"


@dataclass(frozen=True)
class AlertEvent:
    """An alert that fired: its name, the moment it started firing, and where that was read."""

    name: str
    starts_at: datetime
    source: str  # "alertmanager" | "prometheus"
    labels: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    ends_at: datetime | None = field(default=None, compare=False, hash=False)  # None while firing
    state: str = field(default="firing", compare=False, hash=False)

    @property
    def identity(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.name, tuple(sorted(self.labels.items()))


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


class AlertProbe:
    """Reads alerts from Alertmanager (preferred) or Prometheus (fallback); either URL may be None."""

    def __init__(
        self,
        alertmanager_url: str | None,
        prometheus_url: str | None,
        timeout: float = 2.0,
        *,
        namespace: str | None = None,
    ) -> None:
        self.alertmanager_url = alertmanager_url.rstrip("/") if alertmanager_url else None
        self.prometheus_url = prometheus_url.rstrip("/") if prometheus_url else None
        self.timeout = timeout
        self.namespace = namespace or None  # only alerts with this namespace label count
        self._seen: dict[tuple[str, tuple[tuple[str, str], ...], str, str], AlertEvent] = {}
        self._alertmanager_answered = False
        self._rule_for: dict[str, float] = {}
        self._lock = threading.Lock()
        self.last_error: ProbeError | None = None

    # -- sources ----------------------------------------------------------------------------------
    def available(self) -> bool:
        """True when at least one of Alertmanager and Prometheus answers."""
        for url, path in (
            (self.alertmanager_url, "/api/v2/status"),
            (self.prometheus_url, "/api/v1/status/buildinfo"),
        ):
            if url is None:
                continue
            try:
                get_json(url + path, probe=_PROBE, timeout=self.timeout)
                return True
            except ProbeError:
                continue
        return False

    def from_alertmanager(self) -> list[AlertEvent]:
        """Alerts Alertmanager holds now (active, silenced, inhibited and unprocessed alike)."""
        if self.alertmanager_url is None:
            raise ProbeError(_PROBE, "no Alertmanager URL configured")
        query = ""
        if self.namespace:
            query = "?" + urllib.parse.urlencode({"filter": f'namespace="{self.namespace}"'})
        data = get_json(f"{self.alertmanager_url}/api/v2/alerts{query}", probe=_PROBE, timeout=self.timeout)
        if not isinstance(data, list):
            raise ProbeError(_PROBE, "Alertmanager /api/v2/alerts did not answer a list")
        events = []
        for alert in data:
            labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
            starts = parse_time(alert.get("startsAt"))
            if "alertname" not in labels or starts is None or not self._ours(labels):
                continue
            ends = parse_time(alert.get("endsAt"))
            if ends is not None and ends > datetime.now(timezone.utc):
                ends = None  # still firing: endsAt is only Alertmanager's expiry guess
            state = str((alert.get("status") or {}).get("state") or "active")
            events.append(AlertEvent(labels["alertname"], starts, "alertmanager", labels, ends, state))
        return events

    def _rule_durations(self, refresh: bool = False) -> dict[str, float]:
        if refresh or not self._rule_for:
            assert self.prometheus_url is not None
            data = get_json(
                f"{self.prometheus_url}/api/v1/rules?type=alert", probe=_PROBE, timeout=self.timeout
            )
            durations: dict[str, float] = {}
            for group in (data.get("data") or {}).get("groups") or []:
                for rule in group.get("rules") or []:
                    if rule.get("type") == "alerting" and rule.get("name"):
                        durations[str(rule["name"])] = float(rule.get("duration") or 0.0)
            self._rule_for = durations
        return self._rule_for

    def rule_names(self) -> set[str]:
        """The alerting rules Prometheus has loaded (``/api/v1/rules``, read afresh); ``ProbeError``
        without a Prometheus URL or when it does not answer."""
        if self.prometheus_url is None:
            raise ProbeError(_PROBE, "no Prometheus URL configured")
        return set(self._rule_durations(refresh=True))

    def from_prometheus(self) -> list[AlertEvent]:
        """Firing alerts as Prometheus's rule evaluation sees them (``ALERTS{alertstate="firing"}``)."""
        if self.prometheus_url is None:
            raise ProbeError(_PROBE, "no Prometheus URL configured")
        data = get_json(f"{self.prometheus_url}/api/v1/alerts", probe=_PROBE, timeout=self.timeout)
        alerts = (data.get("data") or {}).get("alerts") or []
        firing = [a for a in alerts if a.get("state") == "firing"]
        durations = self._rule_durations()
        if any((a.get("labels") or {}).get("alertname") not in durations for a in firing):
            durations = self._rule_durations(refresh=True)
        events = []
        for alert in firing:
            labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
            active = parse_time(alert.get("activeAt"))
            name = labels.get("alertname")
            if not name or active is None or not self._ours(labels):
                continue
            # activeAt is when the condition became true (pending); it fires `for` later.
            starts = active + timedelta(seconds=durations.get(name, 0.0))
            events.append(AlertEvent(name, starts, "prometheus", labels, None, "firing"))
        return events

    def _ours(self, labels: dict[str, str]) -> bool:
        """An alert of this gameday's environment (any alert when no namespace is set)."""
        return self.namespace is None or labels.get("namespace") == self.namespace

    # -- memory -----------------------------------------------------------------------------------
    def _remember(self, fresh: list[AlertEvent]) -> None:
        with self._lock:
            for event in fresh:
                key = (*event.identity, event.source, event.starts_at.isoformat())
                known = self._seen.get(key)
                if known is None or known.ends_at != event.ends_at:
                    self._seen[key] = event

    def _remembered(self, source: str | None, since: datetime | None) -> list[AlertEvent]:
        cutoff = _aware(since) if since is not None else None
        with self._lock:
            seen = list(self._seen.values())
        return sorted(
            (
                e
                for e in seen
                if (source is None or e.source == source) and (cutoff is None or e.starts_at >= cutoff)
            ),
            key=lambda e: (e.starts_at, e.name),
        )

    def poll(self, since: datetime | None = None) -> list[AlertEvent]:
        """Look at every configured source now, remember every alert seen, and return the remembered
        ones that started at or after ``since`` (all when None), oldest first, from Alertmanager when it
        has ever answered (what on-call is paged from), else from Prometheus.

        Raises ``ProbeError`` only when no source answers and nothing was ever seen."""
        errors: list[str] = []
        answered = 0
        for url, source in (
            (self.alertmanager_url, self.from_alertmanager),
            (self.prometheus_url, self.from_prometheus),
        ):
            if not url:
                continue
            try:
                self._remember(source())
                answered += 1
                if source == self.from_alertmanager:
                    self._alertmanager_answered = True
            except ProbeError as exc:
                errors.append(exc.reason)
        if not answered:
            self.last_error = ProbeError(
                _PROBE, "; ".join(errors) or "no Alertmanager or Prometheus URL configured"
            )
            with self._lock:
                empty = not self._seen
            if empty:
                raise self.last_error
        preferred = "alertmanager" if self._alertmanager_answered else "prometheus"
        return self._remembered(preferred, since)

    def timeline(self, since: datetime | None = None) -> list[AlertEvent]:
        """Every alert (remembered or current) that started firing at or after ``since``."""
        return self.poll(since)

    def first_fire_after(
        self, t0: datetime, names: tuple[str, ...] | list[str] = GAMEDAY_ALERTS
    ) -> AlertEvent | None:
        """The first gameday alert whose firing started at or after T+0, as Alertmanager saw it; as
        Prometheus saw it when Alertmanager has none (down, or never sent to); None when none has fired."""
        self.poll(t0)
        wanted = set(names)
        for source in ("alertmanager", "prometheus"):
            for event in self._remembered(source, t0):
                if event.name in wanted:
                    return event
        return None


def seconds_after(event: AlertEvent | None, t0: datetime) -> float | None:
    """Seconds from T+0 to the alert firing (the playbook's "alert fire time")."""
    if event is None:
        return None
    return (event.starts_at - _aware(t0)).total_seconds()
