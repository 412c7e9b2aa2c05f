"""Probes: small read-only measurements of the system under test, reached through ``Endpoints`` URLs.

Every probe either returns a number (or a typed record) or raises ``ProbeError`` with a readable
reason; the scorecard turns that reason into ``not_measured``. The HTTP helpers here are plain stdlib
(``urllib.request``) and synchronous, because the runbook is.

    nats.py     consumer lag from the NATS monitoring endpoint (/jsz), server health
    metrics.py  Prometheus text scrapes of service /metrics, Prometheus queries and snapshots
    alerts.py   Alertmanager API v2 and Prometheus ALERTS: the alert timeline
    events.py   the events table (another module's contract)
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from gamedaylib.exceptions import ProbeError

__all__ = ["HttpAnswer", "get_json", "get_text", "http_request", "parse_time"]

_USER_AGENT = "gameday-probe/0.1"


@dataclass(frozen=True)
class HttpAnswer:
    """A completed HTTP exchange (any status code)."""

    status: int
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def http_request(
    url: str,
    *,
    probe: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 2.0,
) -> HttpAnswer:
    """One HTTP request; any status is returned, only "no answer" raises ``ProbeError``."""
    try:
        request = urllib.request.Request(url, data=body, method=method)
    except ValueError as exc:  # no scheme, empty URL
        raise ProbeError(probe, f"bad URL {url!r}: {exc}") from exc
    request.add_header("User-Agent", _USER_AGENT)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HttpAnswer(response.status, response.read())
    except urllib.error.HTTPError as exc:
        try:
            payload = exc.read()
        finally:
            exc.close()
        return HttpAnswer(exc.code, payload)
    except urllib.error.URLError as exc:
        raise ProbeError(probe, f"{url} unreachable: {exc.reason}") from exc
    except TimeoutError as exc:
        raise ProbeError(probe, f"{url} did not answer within {timeout:g} s") from exc
    except (OSError, http.client.HTTPException) as exc:  # reset, refused, broken answer
        raise ProbeError(probe, f"{url} connection failed: {exc!r}") from exc
    except ValueError as exc:  # malformed URL
        raise ProbeError(probe, f"bad URL {url!r}: {exc}") from exc


def _checked(answer: HttpAnswer, url: str, probe: str) -> HttpAnswer:
    if not 200 <= answer.status < 300:
        snippet = answer.text().strip().replace("\n", " ")[:200]
        raise ProbeError(probe, f"{url} answered HTTP {answer.status}: {snippet}")
    return answer


def get_text(url: str, *, probe: str, timeout: float = 2.0) -> str:
    """GET a 2xx text body or raise ``ProbeError``."""
    return _checked(http_request(url, probe=probe, timeout=timeout), url, probe).text()


def get_json(url: str, *, probe: str, timeout: float = 2.0) -> Any:
    """GET a 2xx JSON body or raise ``ProbeError``."""
    answer = _checked(http_request(url, probe=probe, timeout=timeout), url, probe)
    try:
        return json.loads(answer.body)
    except ValueError as exc:
        raise ProbeError(probe, f"{url} answered with invalid JSON: {exc}") from exc


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as servers write it (``Z`` suffix, up to nanoseconds) to an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if "." in text:
        head, rest = text.split(".", 1)
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)].ljust(6, '0')}{rest[digits:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    if parsed.year <= 1:  # Go's zero time: "0001-01-01T00:00:00Z"
        return None
    return parsed.astimezone(timezone.utc)
