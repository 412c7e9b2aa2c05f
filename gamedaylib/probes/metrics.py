"""Service metrics: direct scrapes of Prometheus text (``/metrics``) and Prometheus server queries.

``scrape`` reads one endpoint now (fresh to the second, which the sampler wants); ``PrometheusProbe``
asks a Prometheus server (range queries for charts, the alert rules' view of the world, and TSDB
snapshots for pre-flight) through ``prometheus-api-client``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from gamedaylib.exceptions import ProbeError
from gamedaylib.probes import get_text, http_request

__all__ = [
    "ADMIN_API_NOTE",
    "MetricsSnapshot",
    "PrometheusProbe",
    "Sample",
    "ServiceMetrics",
    "parse",
    "scrape",
]

ADMIN_API_NOTE = "admin API disabled (start Prometheus with --web.enable-admin-api)"


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def matches(self, filters: Mapping[str, str]) -> bool:
        own = dict(self.labels)
        return all(own.get(k) == str(v) for k, v in filters.items())


@dataclass(frozen=True)
class MetricsSnapshot:
    """One scrape: every sample by its sample name (``events_stored_total``, not the family name)."""

    url: str
    at: datetime
    samples: dict[str, tuple[Sample, ...]] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample whose labels include ``labels``; None when absent.

        With several matches (a labelled counter and no label given) the first is returned; use
        ``sum`` to add them up."""
        for sample in self.samples.get(name, ()):
            if sample.matches(labels):
                return sample.value
        return None

    def sum(self, name: str, **label_filters: str) -> float | None:
        """Sum of every sample of ``name`` whose labels include ``label_filters``; None when none match.

        A label filter value may end in ``xx`` to match a class (``code="5xx"``)."""
        exact = {k: v for k, v in label_filters.items() if not str(v).endswith("xx")}
        prefix = {k: str(v)[:-2] for k, v in label_filters.items() if str(v).endswith("xx")}
        total, found = 0.0, False
        for sample in self.samples.get(name, ()):
            own = dict(sample.labels)
            if not sample.matches(exact):
                continue
            if any(not own.get(k, "").startswith(p) for k, p in prefix.items()):
                continue
            if math.isnan(sample.value):
                continue
            total += sample.value
            found = True
        return total if found else None


def parse(text: str, url: str = "") -> MetricsSnapshot:
    """Parse Prometheus text exposition into a snapshot; ``ProbeError`` when it is not that."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[Sample]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.setdefault(s.name, []).append(
                    Sample(s.name, tuple(sorted(s.labels.items())), float(s.value))
                )
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise ProbeError("metrics", f"{url or 'text'} is not Prometheus text exposition: {exc}") from exc
    return MetricsSnapshot(url, datetime.now(timezone.utc), {k: tuple(v) for k, v in samples.items()})


def scrape(url: str, timeout: float = 2.0) -> MetricsSnapshot:
    """Scrape one ``/metrics`` endpoint now."""
    return parse(get_text(url, probe="metrics", timeout=timeout), url)


class ServiceMetrics:
    """Scrapes several services' ``/metrics`` at once (in parallel: one slow service costs one timeout)."""

    def __init__(self, urls: Mapping[str, str], timeout: float = 2.0) -> None:
        self.urls = dict(urls)
        self.timeout = timeout
        self._pool: ThreadPoolExecutor | None = None

    def _one(self, url: str) -> MetricsSnapshot | ProbeError:
        try:
            return scrape(url, self.timeout)
        except ProbeError as exc:
            return exc

    def sample(self) -> dict[str, MetricsSnapshot | ProbeError]:
        """Each service's snapshot, or the ProbeError saying why it could not be read."""
        if len(self.urls) <= 1:
            return {name: self._one(url) for name, url in self.urls.items()}
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=len(self.urls), thread_name_prefix="scrape")
        futures = {name: self._pool.submit(self._one, url) for name, url in self.urls.items()}
        return {name: future.result() for name, future in futures.items()}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _as_datetime(value: datetime | float) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(float(value), timezone.utc)


class PrometheusProbe:
    """Queries one Prometheus server through ``prometheus_api_client.PrometheusConnect``."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = url.rstrip("/")
        self.timeout = timeout
        # No retries: a probe answers now or says it could not; the sampler asks again next tick.
        self._client = PrometheusConnect(
            url=self.url, disable_ssl=True, retry=Retry(total=0), timeout=timeout
        )

    def close(self) -> None:
        self._client.close()

    def ready(self) -> bool:
        """True when ``/-/ready`` answers 200."""
        try:
            return http_request(f"{self.url}/-/ready", probe="prometheus", timeout=self.timeout).status == 200
        except ProbeError:
            return False

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from prometheus_api_client.exceptions import PrometheusApiClientException
        from requests import RequestException

        try:
            return fn(*args, **kwargs)
        except PrometheusApiClientException as exc:
            raise ProbeError("prometheus", f"{what} rejected by {self.url}: {exc}") from exc
        except RequestException as exc:
            raise ProbeError("prometheus", f"{self.url} unreachable ({what}): {exc}") from exc

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; the ``result`` list of the API (``[{"metric": {...}, "value": [ts, "v"]}]``)."""
        return list(self._call(f"query {promql!r}", self._client.custom_query, promql))

    def range_query(
        self, promql: str, start: datetime | float, end: datetime | float, step: str | float = "1s"
    ) -> list[dict[str, Any]]:
        """Range query; ``[{"metric": {...}, "values": [[ts, "v"], ...]}]``."""
        step_text = f"{step:g}s" if isinstance(step, (int, float)) else str(step)
        start_dt, end_dt = _as_datetime(start), _as_datetime(end)
        # The client rounds start/end to whole seconds; keep millisecond precision (params win).
        exact = {"start": f"{start_dt.timestamp():.3f}", "end": f"{end_dt.timestamp():.3f}"}
        return list(
            self._call(
                f"range query {promql!r}",
                self._client.custom_query_range,
                promql,
                start_time=start_dt,
                end_time=end_dt,
                step=step_text,
                params=exact,
            )
        )

    def value(self, promql: str) -> float | None:
        """The value of an instant query: a scalar, or the sum of the vector's series; None when empty."""
        result = self.query(promql)
        if len(result) == 2 and not isinstance(result[0], dict):
            return float(result[1])  # a scalar result is [ts, "v"]
        values = [
            float(series["value"][1]) for series in result if isinstance(series, dict) and "value" in series
        ]
        return float(sum(values)) if values else None

    def snapshot(self) -> str:
        """Take a TSDB snapshot; its name (under ``<data>/snapshots/``). ``ProbeError`` when the admin
        API is disabled (Prometheus 2.x answers 500 ``unavailable`` "admin APIs disabled"; proxies and
        other versions may answer 404/405/503)."""
        answer = http_request(
            f"{self.url}/api/v1/admin/tsdb/snapshot", probe="prometheus", method="POST", timeout=30.0
        )
        text = answer.text()
        if answer.status in (404, 405, 503) or "admin APIs disabled" in text:
            raise ProbeError("prometheus", ADMIN_API_NOTE)
        if answer.status != 200:
            raise ProbeError("prometheus", f"snapshot failed: HTTP {answer.status}: {text[:200]}")
        try:
            return str(json.loads(text)["data"]["name"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ProbeError("prometheus", f"snapshot answer not understood: {text[:200]}") from exc
