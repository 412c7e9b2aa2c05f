"""Consumer lag and server health from the NATS monitoring endpoint (``/jsz``, ``/healthz``).

The lag probe asks only for what it needs: one account's streams and consumers, without their
configuration (``/jsz?acc=$G&streams=true&consumers=true&config=false``). In a cluster each server
reports the consumers it holds a replica of, and only the consumer *leader*'s numbers are current; a
``NatsMonitor`` given ``peer_urls`` asks the peers when the first server is not the leader.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from gamedaylib.exceptions import ProbeError
from gamedaylib.probes import get_json, http_request, parse_time

__all__ = ["ConsumerLag", "NatsMonitor"]

_PROBE = "nats"


@dataclass(frozen=True)
class ConsumerLag:
    """A JetStream consumer's backlog as one server reported it."""

    stream: str
    consumer: str
    num_pending: int  # messages in the stream not yet delivered to the consumer
    num_ack_pending: int  # delivered, not yet acknowledged
    num_redelivered: int
    leader: str | None  # the consumer leader's server name (None when the server does not say)
    at: datetime  # when the server answered (its own clock, UTC)
    server: str = ""  # the server that answered (name or id)
    from_leader: bool = True  # False when only a non-leader replica could be asked

    @property
    def total(self) -> int:
        """Messages the consumer still has to process (pending + unacknowledged)."""
        return self.num_pending + self.num_ack_pending


def _parse_time(value: Any) -> datetime:
    return parse_time(value) or datetime.now(timezone.utc)


class NatsMonitor:
    """Reads one nats-server's monitoring port (``http://host:8222``)."""

    def __init__(
        self,
        url: str,
        timeout: float = 2.0,
        *,
        account: str = "$G",
        peer_urls: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.account = account
        self.peer_urls = tuple(u.rstrip("/") for u in peer_urls)
        self._names: dict[str, str] = {}  # monitor URL -> server_name (from /varz, cached)

    # -- health ---------------------------------------------------------------------------------
    def healthz(self) -> bool:
        """True when ``/healthz`` answers 200 (JetStream included); False when not healthy or unreachable."""
        try:
            answer = http_request(f"{self.url}/healthz", probe=_PROBE, timeout=self.timeout)
        except ProbeError:
            return False
        return answer.status == 200

    def server_ok(self) -> dict[str, Any]:
        """The server's identity and vital signs from ``/varz``; raises ``ProbeError`` when unreachable."""
        varz = get_json(f"{self.url}/varz", probe=_PROBE, timeout=self.timeout)
        self._names[self.url] = str(varz.get("server_name") or varz.get("server_id") or "")
        return {
            "server_name": varz.get("server_name"),
            "server_id": varz.get("server_id"),
            "version": varz.get("version"),
            "connections": varz.get("connections"),
            "jetstream": bool(varz.get("jetstream")),
            "healthy": self.healthz(),
        }

    # -- lag ------------------------------------------------------------------------------------
    def _jsz_url(self, base: str) -> str:
        query = urllib.parse.urlencode(
            {"acc": self.account, "streams": "true", "consumers": "true", "config": "false"}
        )
        return f"{base}/jsz?{query}"

    def _server_name(self, base: str) -> str:
        if base not in self._names:
            varz = get_json(f"{base}/varz", probe=_PROBE, timeout=self.timeout)
            self._names[base] = str(varz.get("server_name") or varz.get("server_id") or "")
        return self._names[base]

    def _read(self, base: str, stream: str, consumer: str) -> ConsumerLag:
        jsz = get_json(self._jsz_url(base), probe=_PROBE, timeout=self.timeout)
        if not isinstance(jsz, dict):
            raise ProbeError(_PROBE, f"{base}/jsz answered an unexpected document")
        accounts = jsz.get("account_details") or []
        account = next((a for a in accounts if a.get("name") == self.account), None)
        if account is None:
            raise ProbeError(_PROBE, f"account {self.account!r} has no JetStream streams on {base}")
        stream_detail = next((s for s in account.get("stream_detail") or [] if s.get("name") == stream), None)
        if stream_detail is None:
            known = sorted(s.get("name", "?") for s in account.get("stream_detail") or [])
            raise ProbeError(_PROBE, f"stream {stream!r} not found on {base} (streams: {known})")
        detail = next((c for c in stream_detail.get("consumer_detail") or [] if c.get("name") == consumer), None)
        if detail is None:
            known = sorted(c.get("name", "?") for c in stream_detail.get("consumer_detail") or [])
            raise ProbeError(_PROBE, f"consumer {consumer!r} not found on stream {stream!r} (consumers: {known})")
        cluster = detail.get("cluster") or stream_detail.get("cluster") or {}
        leader = cluster.get("leader")
        server = str(jsz.get("server_name") or jsz.get("server_id") or "")
        from_leader = True
        if leader and cluster.get("replicas"):
            # Clustered: only the leader's numbers are current.
            from_leader = self._server_name(base) == leader
        try:
            return ConsumerLag(
                stream=stream,
                consumer=consumer,
                num_pending=int(detail.get("num_pending", 0)),
                num_ack_pending=int(detail.get("num_ack_pending", 0)),
                num_redelivered=int(detail.get("num_redelivered", 0)),
                leader=leader,
                at=_parse_time(detail.get("ts") or jsz.get("now")),
                server=server,
                from_leader=from_leader,
            )
        except (TypeError, ValueError) as exc:
            raise ProbeError(_PROBE, f"unexpected consumer numbers from {base}: {exc}") from exc

    def consumer_lag(self, stream: str, consumer: str) -> ConsumerLag:
        """The consumer's lag as its leader reports it; ``ProbeError`` when unreachable or missing."""
        lag = self._read(self.url, stream, consumer)
        if lag.from_leader or not self.peer_urls:
            return lag
        for peer in self.peer_urls:
            try:
                if self._server_name(peer) != lag.leader:
                    continue
                return self._read(peer, stream, consumer)
            except ProbeError:
                continue
        return lag  # the leader could not be asked: a replica's numbers, marked from_leader=False
