"""Readings: one typed snapshot of the system under test per tick, from one reader.

The sampler calls ``Reader.read()`` once per ``sample_interval_seconds``; the same ``Reading`` feeds
the time series (samples.csv, charts), the waits (recovered yet?) and the stop conditions. Nothing
else polls the system during a run.

What a reading holds, and where it comes from (``sources`` names it, per input):

- **consumer lag**: ``num_pending`` of the durable consumer as its *current leader* reports it, found
  across every NATS server's monitoring URL (``/jsz``); ``num_ack_pending`` (delivered, not yet
  acknowledged) beside it, never added to it; from the same answer, the consumer's ack floor and the
  stream's last sequence (everything published up to a moment is processed once the ack floor passes
  that moment's last sequence);
- **service readings** (gateway buffer and its fullest replica, drops, retries, publish errors, 5xx
  answers, NATS connected, circuit breaker, stored events, instances up): from Prometheus, aggregated
  over every instance of a job with PromQL in one query per tick (``sum``, ``min`` for
  "connected", ``max`` for the breaker and the fullest buffer); only where no Prometheus is
  configured, from the services' ``/metrics`` scraped directly (every replica's URL) and aggregated
  the same way;
- **canaries**: sent and failed so far (the sender's own counts);
- **the fault**: still in force or not (the fault's own status).

An input that cannot be read is ``None`` in the reading with the reason in ``errors``; a reader never
raises for one input. A gameday extends ``Reading`` (a dataclass subclass) and ``PipelineReader`` for
readings of its own (GAMEDAY-002: the database primary).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from gamedaylib.clock import utcnow
from gamedaylib.exceptions import GamedayError, ProbeError
from gamedaylib.probes.metrics import MetricsSnapshot, PrometheusProbe, scrape
from gamedaylib.probes.nats import NatsMonitor
from gamedaylib.targets.base import Endpoints, FaultStatus

__all__ = ["SERVICE_READINGS", "PipelineReader", "Reader", "Reading", "ServiceReading", "baseline"]

GATEWAY = "api-gateway"
REPORTING = "reporting"


@dataclass(frozen=True)
class Reading:
    """One snapshot of the event pipeline. ``None`` = could not be read (``errors`` says why)."""

    at: datetime
    lag_pending: float | None = None  # the consumer's unprocessed messages (num_pending), from its leader
    lag_ack_pending: float | None = None  # delivered, not yet acknowledged (shown beside, never added)
    ack_floor_seq: float | None = None  # the consumer's ack floor: every stream message up to it acknowledged
    stream_last_seq: float | None = None  # the stream's last sequence (with the ack floor: all processed?)
    buffer_size: float | None = None  # events held by the gateway replicas (sum)
    buffer_capacity: float | None = None  # their capacity (sum)
    buffer_fraction_max: float | None = None  # the fullest replica's size / capacity
    dropped_total: float | None = None  # events the gateways dropped (events_dropped_total, sum)
    published_total: float | None = None
    stored_total: float | None = None
    requests_total: float | None = None  # the gateway's HTTP answers (sum)
    requests_5xx: float | None = None
    publish_errors_total: float | None = None
    retries_total: float | None = None  # NATS retries of gateway and reporting
    gateway_connected: float | None = None  # min over replicas: 1 when every replica is connected
    reporting_connected: float | None = None
    breaker: float | None = None  # max over replicas: 0 closed, 1 half-open, 2 open
    gateway_instances: float | None = None  # instances answering
    reporting_instances: float | None = None
    canaries_sent: float | None = None
    canaries_failed: float | None = None
    alerts_firing: float | None = None  # the gameday's alerts firing since T+0 (Alertmanager, else Prometheus)
    fault_active: bool | None = None
    errors: Mapping[str, str] = field(default_factory=dict)  # input -> why it could not be read
    sources: Mapping[str, str] = field(default_factory=dict)  # input -> where it was read

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        """The numeric inputs, in order (the columns of samples.csv)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("at", "errors", "sources"))

    def values(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name in self.columns():
            value = getattr(self, name)
            out[name] = None if value is None else float(value)
        return out

    def readable(self, name: str) -> bool:
        return getattr(self, name, None) is not None


class Reader(Protocol):
    """Reads the system once; never raises for an unreadable input (it goes to ``errors``)."""

    @property
    def reading_type(self) -> type[Reading]: ...

    def read(self) -> Reading: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ServiceReading:
    """One service reading: the field it fills, the service (job), how instances are aggregated, the
    metric and its own label matchers."""

    field: str
    service: str
    aggregation: str  # sum | min | max | count
    metric: str
    matchers: str = ""

    def promql(self, selector: str) -> str:
        labels = ",".join(x for x in (self.matchers, selector) if x)
        if self.aggregation == "count":
            return f"count({self.metric}{{{labels}}} == 1)"
        expr = f"{self.aggregation}({self.metric}{{{labels}}})"
        if self.matchers:  # a labelled series exists only once it counted: 0 while the service is up
            expr = f"({expr} or 0 * count(up{{{selector}}} == 1))"
        return expr


SERVICE_READINGS: tuple[ServiceReading, ...] = (
    ServiceReading("buffer_size", GATEWAY, "sum", "event_buffer_size"),
    ServiceReading("buffer_capacity", GATEWAY, "sum", "event_buffer_capacity"),
    ServiceReading("dropped_total", GATEWAY, "sum", "events_dropped_total"),
    ServiceReading("published_total", GATEWAY, "sum", "events_published_total"),
    ServiceReading("requests_total", GATEWAY, "sum", "http_requests_total"),
    ServiceReading("requests_5xx", GATEWAY, "sum", "http_requests_total", 'code=~"5.."'),
    ServiceReading("publish_errors_total", GATEWAY, "sum", "nats_publish_errors_total"),
    ServiceReading("gateway_retries", GATEWAY, "sum", "nats_retry_total"),
    ServiceReading("gateway_connected", GATEWAY, "min", "nats_connected"),
    ServiceReading("breaker", GATEWAY, "max", "circuit_breaker_state"),
    ServiceReading("gateway_instances", GATEWAY, "count", "up"),
    ServiceReading("stored_total", REPORTING, "sum", "events_stored_total"),
    ServiceReading("reporting_retries", REPORTING, "sum", "nats_retry_total"),
    ServiceReading("reporting_connected", REPORTING, "min", "nats_connected"),
    ServiceReading("reporting_instances", REPORTING, "count", "up"),
)
_READING_LABEL = "gameday_reading"


def _selector(service: str, selectors: Mapping[str, str]) -> str:
    return selectors.get(service) or f'job="{service}"'


def composite_query(selectors: Mapping[str, str]) -> str:
    """Every service reading in one PromQL query, each series labelled with the field it fills."""
    parts = [
        f'label_replace({r.promql(_selector(r.service, selectors))}, "{_READING_LABEL}", "{r.field}", "", "")'
        for r in SERVICE_READINGS
    ]
    fullest = (f"max({{__name__=\"event_buffer_size\",{_selector(GATEWAY, selectors)}}} / ignoring(__name__) "
               f"{{__name__=\"event_buffer_capacity\",{_selector(GATEWAY, selectors)}}})")
    parts.append(f'label_replace({fullest}, "{_READING_LABEL}", "buffer_fraction_max", "", "")')
    return " or ".join(parts)


def _aggregate(values: Sequence[float], how: str) -> float | None:
    if how == "count":
        return float(len(values))
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return None
    if how == "sum":
        return sum(clean)
    return {"min": min, "max": max}[how](clean)


class PipelineReader:
    """Reads the event pipeline both gamedays share (see the module docstring)."""

    reading_type: type[Reading] = Reading

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        canaries: Any = None,
        fault_status: Callable[[], FaultStatus] | None = None,
        alerts: Any = None,
        alert_names: Sequence[str] = (),
        t0: Callable[[], datetime | None] | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.endpoints = endpoints
        self.canaries = canaries
        self.fault_status = fault_status
        self.alerts = alerts  # an AlertProbe: polled every tick after T+0, it remembers alerts that resolve
        self.alert_names = tuple(alert_names)
        self.t0 = t0
        self.timeout = timeout
        urls = endpoints.monitor_urls()
        self.nats = NatsMonitor(urls, timeout=timeout, account=endpoints.nats_account) if urls else None
        self.prometheus = (PrometheusProbe(endpoints.prometheus_url, timeout=timeout) if endpoints.prometheus_url
                           else None)
        self._pool: ThreadPoolExecutor | None = None

    @property
    def service_source(self) -> str:
        if self.prometheus is not None:
            return f"Prometheus {self.endpoints.prometheus_url}"
        if self.endpoints.service_metrics:
            return "the services' /metrics, scraped directly (no Prometheus configured)"
        return ""

    def close(self) -> None:
        if self.prometheus is not None:
            self.prometheus.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def read(self) -> Reading:
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        sources: dict[str, str] = {}
        self._read_lag(values, errors, sources)
        self._read_services(values, errors, sources)
        if self.canaries is not None:
            counts = self.canaries.counts()
            values["canaries_sent"], values["canaries_failed"] = counts.get("sent"), counts.get("failed")
        if self.fault_status is not None:
            try:
                values["fault_active"] = self.fault_status().active
            except GamedayError as exc:
                errors["fault_active"] = str(exc)
        self._read_alerts(values, errors, sources)
        values.update(self.read_more(errors, sources))
        return self.reading_type(at=utcnow(), errors=errors, sources=sources, **values)

    def read_more(self, errors: dict[str, str], sources: dict[str, str]) -> dict[str, Any]:
        """A gameday's own inputs (a subclass's): field -> value."""
        return {}

    def _read_alerts(self, values: dict[str, Any], errors: dict[str, str], sources: dict[str, str]) -> None:
        t0 = self.t0() if self.t0 is not None else None
        if self.alerts is None:
            errors["alerts_firing"] = "neither Alertmanager nor Prometheus is configured"
            return
        if t0 is None:
            return  # watched from T+0 on
        try:
            events = self.alerts.poll(t0)
        except ProbeError as exc:
            errors["alerts_firing"] = exc.reason
            return
        firing = [e for e in events if (not self.alert_names or e.name in self.alert_names) and e.ends_at is None]
        values["alerts_firing"] = len(firing)
        sources["alerts_firing"] = "Alertmanager" if any(e.source == "alertmanager" for e in events) else "Prometheus"

    # -- consumer lag ------------------------------------------------------------------------------
    def _read_lag(self, values: dict[str, Any], errors: dict[str, str], sources: dict[str, str]) -> None:
        ep = self.endpoints
        if self.nats is None:
            errors["lag_pending"] = "no NATS monitoring URL (nats_monitor_urls)"
            return
        try:
            lag = self.nats.consumer_lag(ep.stream_name, ep.consumer_name)
        except ProbeError as exc:
            errors["lag_pending"] = f"NATS monitoring: {exc.reason}"
            return
        values["lag_pending"], values["lag_ack_pending"] = lag.num_pending, lag.num_ack_pending
        values["ack_floor_seq"], values["stream_last_seq"] = lag.ack_floor_stream_seq, lag.stream_last_seq
        sources["lag_pending"] = f"/jsz of the consumer leader {lag.leader or lag.server}"

    # -- service readings --------------------------------------------------------------------------
    def _read_services(self, values: dict[str, Any], errors: dict[str, str], sources: dict[str, str]) -> None:
        if self.prometheus is not None:
            found, why = self._from_prometheus()
        elif self.endpoints.service_metrics:
            found, why = self._from_scrapes()
        else:
            found, why = {}, "no Prometheus and no service /metrics URL configured"
        source = self.service_source
        for name in [r.field for r in SERVICE_READINGS] + ["buffer_fraction_max"]:
            if name in found:
                sources[name] = source
            else:
                errors[name] = why or f"{source} has no series for it"
        retries = [found[k] for k in ("gateway_retries", "reporting_retries") if found.get(k) is not None]
        if retries:
            found["retries_total"] = sum(retries)
            sources["retries_total"] = source
        for name, value in found.items():
            if name in {f.name for f in dataclasses.fields(self.reading_type)}:
                values[name] = value
        for name in ("gateway_retries", "reporting_retries"):
            errors.pop(name, None)

    def _from_prometheus(self) -> tuple[dict[str, float], str]:
        assert self.prometheus is not None
        try:
            result = self.prometheus.query(composite_query(self.endpoints.prometheus_selectors))
        except ProbeError as exc:
            return {}, f"Prometheus: {exc.reason}"
        found: dict[str, float] = {}
        for series in result:
            name = (series.get("metric") or {}).get(_READING_LABEL)
            try:
                value = float(series["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            if name and not math.isnan(value):
                found[name] = value
        for r in SERVICE_READINGS:  # count() of nothing is no series: no instance is up
            if r.aggregation == "count":
                found.setdefault(r.field, 0.0)
        return found, ""

    def _from_scrapes(self) -> tuple[dict[str, float], str]:
        urls = [(service, url) for service, many in self.endpoints.service_metrics.items() for url in many]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(1, len(urls)), thread_name_prefix="scrape")
        futures = [(service, url, self._pool.submit(self._scrape, url)) for service, url in urls]
        snaps: dict[str, list[MetricsSnapshot]] = {}
        problems = []
        for service, _url, future in futures:
            snap = future.result()
            if isinstance(snap, ProbeError):
                problems.append(snap.reason)
                continue
            snaps.setdefault(service, []).append(snap)
        found: dict[str, float] = {}
        for r in SERVICE_READINGS:
            instances = snaps.get(r.service, [])
            if r.aggregation == "count":
                found[r.field] = float(len(instances))
                continue
            per = [s.sum(r.metric, **_label_filter(r.matchers)) for s in instances]
            if r.matchers:  # a labelled series exists only once it counted: 0 for an instance that answered
                per = [0.0 if v is None else v for v in per]
            value = _aggregate([v for v in per if v is not None], r.aggregation)
            if value is not None:
                found[r.field] = value
        fractions = [size / cap for s in snaps.get(GATEWAY, [])
                     if (cap := s.value("event_buffer_capacity"))
                     and (size := s.value("event_buffer_size")) is not None]
        if fractions:
            found["buffer_fraction_max"] = max(fractions)
        return found, "; ".join(problems)

    def _scrape(self, url: str) -> MetricsSnapshot | ProbeError:
        try:
            return scrape(url, self.timeout)
        except ProbeError as exc:
            return exc


def _label_filter(matchers: str) -> dict[str, str]:
    """``code=~"5.."`` as the scrape filter ``{"code": "5xx"}`` (the class form MetricsSnapshot takes)."""
    if not matchers:
        return {}
    name, _, pattern = matchers.partition("=~")
    return {name: pattern.strip('"').replace("..", "xx")}


def baseline(readings: Sequence[Reading], reading_type: type[Reading] = Reading) -> Reading:
    """The median of each input over ``readings`` (a pre-flight baseline judged over a window, not on
    one instant); an input unreadable in every reading stays unreadable with its last reason."""
    if not readings:
        raise ValueError("no readings to take a baseline from")
    values: dict[str, Any] = {}
    for name in reading_type.columns():
        seen = [getattr(r, name) for r in readings if getattr(r, name) is not None]
        if seen:
            values[name] = statistics.median(float(v) for v in seen) if name != "fault_active" else seen[-1]
    last = readings[-1]
    errors = {k: v for k, v in last.errors.items() if k not in values}
    return reading_type(at=last.at, errors=errors, sources=dict(last.sources), **values)
