"""Consumer lag and server health from the NATS monitoring endpoint (``/jsz``, ``/healthz``).

The lag probe asks only for what it needs: one account's streams and consumers, without their
configuration (``/jsz?acc=$G&streams=true&consumers=true&config=false``). In a cluster each server
reports the consumers it holds a replica of, and only the consumer *leader*'s numbers are current; a
``NatsMonitor`` given ``peer_urls`` asks the peers when the first server is not the leader, and
refuses (``ProbeError``) to pass a follower's stale numbers off as the lag.
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
        allow_replica: bool = False,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.account = account
        self.peer_urls = tuple(u.rstrip("/") for u in peer_urls)
        self.allow_replica = allow_replica

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
        detail = next(
            (c for c in stream_detail.get("consumer_detail") or [] if c.get("name") == consumer), None
        )
        if detail is None:
            known = sorted(c.get("name", "?") for c in stream_detail.get("consumer_detail") or [])
            raise ProbeError(
                _PROBE, f"consumer {consumer!r} not found on stream {stream!r} (consumers: {known})"
            )
        # The consumer's own raft group (its leader may differ from the stream's). A server lists its
        # peers under "replicas", never itself: it leads when the leader is not among them.
        cluster = detail.get("cluster") or stream_detail.get("cluster") or {}
        leader = cluster.get("leader")
        replicas = [str(r.get("name")) for r in cluster.get("replicas") or []]
        from_leader = not replicas or (leader is not None and leader not in replicas)
        server = str(
            jsz.get("server_name") or (leader if from_leader and replicas else jsz.get("server_id")) or ""
        )
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
        """The consumer's lag as its leader reports it.

        In a cluster a replica's numbers are stale (a follower reports 0 pending while the leader has
        thousands), so when this server is not the consumer leader the peers are asked; if none of them
        leads, ``ProbeError`` says so (unless ``allow_replica``: then the replica's numbers come back
        marked ``from_leader=False``). ``ProbeError`` too when unreachable or the consumer is missing."""
        lag = self._read(self.url, stream, consumer)
        if lag.from_leader:
            return lag
        for peer in self.peer_urls:
            try:
                candidate = self._read(peer, stream, consumer)
            except ProbeError:
                continue
            if candidate.from_leader:
                return candidate
        if self.allow_replica:
            return lag
        raise ProbeError(
            _PROBE,
            f"{self.url} is not the leader of consumer {stream}/{consumer} (leader: {lag.leader or 'none'}) "
            "and its numbers would be stale; give the leader's monitoring URL or peer_urls",
        )
