"""Consumer lag and server health from the NATS monitoring endpoints (``/jsz``, ``/varz``, ``/healthz``).

In a JetStream cluster every server that holds a replica of a consumer lists it in its ``/jsz``, with
the consumer's raft group under ``cluster`` (``leader``, and ``replicas``: the *other* peers). Only the
consumer *leader*'s numbers are current: a follower's ``num_pending`` lags behind or reads 0 while the
leader has thousands. So a ``NatsMonitor`` is given every server's monitoring URL (``nats_monitor_urls``:
one per NATS pod, e.g. through the official Helm chart's headless service,
``http://<fullname>-<i>.<fullname>-headless.<namespace>.svc.cluster.local:8222``) and reads the consumer
from the server that leads it, whichever that is at the moment of the read: the leader found last time
is asked first, and when no server claims the lead (the leader moved between two reads, or an election
is under way) the servers are asked again, the one the others name as leader first. When none leads,
``ProbeError`` says what each server answered.

A server knows itself by ``/varz`` ``server_name`` (the pod name with the official chart); it leads the
consumer when the consumer's ``cluster.leader`` is that name, or when the consumer has no cluster (a
single server). The lag probe asks only for what it needs: one account's streams and consumers without
their configuration (``/jsz?acc=<account>&streams=true&consumers=true&config=false``). JetStream accounts
in a chart with accounts configured are named (not ``$G``): give ``account``.

``num_pending`` (messages not yet delivered to the consumer) is the lag; ``num_ack_pending`` (delivered,
not yet acknowledged) is reported beside it and never added to it. The consumer's ack floor (every
stream message up to that sequence acknowledged) and the stream's last sequence come with them: once
the ack floor passes the last sequence of a moment, everything published until then is processed,
including a message whose delivery was lost in a partition and waits for its redelivery (``ack_wait``).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from gamedaylib.exceptions import ProbeError
from gamedaylib.probes import get_json, http_request, parse_time

__all__ = ["ConsumerLag", "NatsMonitor", "ServerAnswer"]

_PROBE = "nats"


@dataclass(frozen=True)
class ConsumerLag:
    """A JetStream consumer's backlog as one server reported it."""

    stream: str
    consumer: str
    num_pending: int  # messages in the stream not yet delivered to the consumer: the lag
    num_ack_pending: int  # delivered, not yet acknowledged (shown beside the lag, never added)
    num_redelivered: int
    leader: str | None  # the consumer leader's server name (None when the server does not say)
    at: datetime  # when the server answered (its own clock, UTC)
    server: str = ""  # the server that answered (its server_name, else its server_id)
    from_leader: bool = True  # False when only a non-leader replica could be asked
    url: str = ""  # the monitoring URL that answered
    ack_floor_stream_seq: int | None = None  # every stream message up to here is acknowledged
    stream_last_seq: int | None = None  # the stream's last message, as this server knows it

    @property
    def lag(self) -> int:
        """The consumer lag: messages it has not been delivered yet (``num_pending``)."""
        return self.num_pending


@dataclass(frozen=True)
class ServerAnswer:
    """What one server said about the consumer: its numbers, who it thinks leads, or why it could not say."""

    url: str
    server: str | None = None  # its server_name (None when /varz did not answer)
    leader: str | None = None  # who it says leads the consumer
    lag: ConsumerLag | None = None
    error: str | None = None

    @property
    def leads(self) -> bool:
        return self.lag is not None and self.lag.from_leader

    def describe(self) -> str:
        who = f"{self.url} ({self.server})" if self.server else self.url
        if self.error:
            return f"{who}: {self.error}"
        if self.leads:
            return f"{who}: leader"
        return f"{who}: follower, leader is {self.leader or 'none (election under way?)'}"


def _seq(part: Any, name: str = "stream_seq") -> int | None:
    """A sequence number of a /jsz sub-document (``ack_floor``'s ``stream_seq``, ``state``'s ``last_seq``)."""
    value = part.get(name) if isinstance(part, dict) else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _parse_time(value: Any) -> datetime:
    return parse_time(value) or datetime.now(timezone.utc)


class NatsMonitor:
    """Reads every nats-server's monitoring port (``http://host:8222``) of a cluster (or of one server).

    ``urls`` is one URL or a list (``nats_monitor_urls``); ``peer_urls`` are extra ones (the older
    spelling). ``fetch(url)`` GETs a JSON document (default: ``probes.get_json``): tests wrap it.
    ``allow_replica`` returns a follower's numbers, marked ``from_leader=False``, when no server leads.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        timeout: float = 2.0,
        *,
        account: str = "$G",
        peer_urls: Sequence[str] = (),
        allow_replica: bool = False,
        rounds: int = 3,
        fetch: Callable[[str], Any] | None = None,
    ) -> None:
        given = [urls] if isinstance(urls, str) else list(urls)
        ordered: list[str] = []
        for u in [*given, *peer_urls]:
            u = u.rstrip("/")
            if u and u not in ordered:
                ordered.append(u)
        if not ordered:
            raise ProbeError(_PROBE, "no NATS monitoring URL given (nats_monitor_urls)")
        self.urls = tuple(ordered)
        self.url = self.urls[0]
        self.timeout = timeout
        self.account = account or "$G"
        self.allow_replica = allow_replica
        self.rounds = max(1, rounds)
        self._fetch = fetch or (lambda url: get_json(url, probe=_PROBE, timeout=self.timeout))
        self._names: dict[str, str] = {}  # url -> server_name (stable for a pod's life)
        self._leader_url: str | None = None
        self.last_answers: list[ServerAnswer] = []  # what every server said on the last read

    @property
    def peer_urls(self) -> tuple[str, ...]:
        return self.urls[1:]

    # -- health ---------------------------------------------------------------------------------
    def healthz(self, url: str | None = None) -> bool:
        """True when ``/healthz`` of ``url`` (default: the first server) answers 200; False when not healthy
        or unreachable."""
        try:
            answer = http_request(f"{url or self.url}/healthz", probe=_PROBE, timeout=self.timeout)
        except ProbeError:
            return False
        return answer.status == 200

    def health(self) -> dict[str, bool]:
        """``healthz`` of every server, by URL."""
        return {u: self.healthz(u) for u in self.urls}

    def server_ok(self, url: str | None = None) -> dict[str, Any]:
        """A server's identity and vital signs from ``/varz``; raises ``ProbeError`` when unreachable."""
        target = url or self.url
        varz = self._fetch(f"{target}/varz")
        if not isinstance(varz, dict):
            raise ProbeError(_PROBE, f"{target}/varz answered an unexpected document")
        if varz.get("server_name"):
            self._names[target] = str(varz["server_name"])
        return {
            "server_name": varz.get("server_name"),
            "server_id": varz.get("server_id"),
            "version": varz.get("version"),
            "connections": varz.get("connections"),
            "jetstream": bool(varz.get("jetstream")),
            "healthy": self.healthz(target),
        }

    def _server_name(self, url: str) -> str | None:
        if url not in self._names:
            try:
                varz = self._fetch(f"{url}/varz")
            except ProbeError:
                return None
            if isinstance(varz, dict) and varz.get("server_name"):
                self._names[url] = str(varz["server_name"])
        return self._names.get(url)

    # -- lag ------------------------------------------------------------------------------------
    def _jsz_url(self, base: str) -> str:
        query = urllib.parse.urlencode(
            {"acc": self.account, "streams": "true", "consumers": "true", "config": "false"}
        )
        return f"{base}/jsz?{query}"

    def _accounts(self, base: str) -> list[str]:
        try:
            jsz = self._fetch(f"{base}/jsz?accounts=true")
        except ProbeError:
            return []
        return sorted(
            {
                str(a.get("name") or a.get("id"))
                for a in (jsz.get("account_details") or [])
                if isinstance(a, dict)
            }
        )

    def ask(self, url: str, stream: str, consumer: str) -> ServerAnswer:
        """One server's answer about the consumer (never raises: a failure is the answer's ``error``)."""
        name = self._server_name(url)
        try:
            jsz = self._fetch(self._jsz_url(url))
        except ProbeError as exc:
            return ServerAnswer(url, name, error=exc.reason)
        if not isinstance(jsz, dict):
            return ServerAnswer(url, name, error="/jsz answered an unexpected document")
        if jsz.get("disabled"):
            return ServerAnswer(url, name, error="JetStream is disabled on this server")
        accounts = [a for a in jsz.get("account_details") or [] if isinstance(a, dict)]
        account = next((a for a in accounts if self.account in (a.get("name"), a.get("id"))), None)
        if account is None:
            known = self._accounts(url)
            return ServerAnswer(
                url,
                name,
                error=f"account {self.account!r} has no JetStream here (accounts with JetStream: {known}); "
                "set nats_account",
            )
        streams = [s for s in account.get("stream_detail") or [] if isinstance(s, dict)]
        stream_detail = next((s for s in streams if s.get("name") == stream), None)
        if stream_detail is None:
            known_streams = sorted(str(s.get("name", "?")) for s in streams)
            return ServerAnswer(
                url, name, error=f"stream {stream!r} not found here (streams: {known_streams})"
            )
        consumers = [c for c in stream_detail.get("consumer_detail") or [] if isinstance(c, dict)]
        detail = next((c for c in consumers if c.get("name") == consumer), None)
        if detail is None:
            known_consumers = sorted(str(c.get("name", "?")) for c in consumers)
            return ServerAnswer(
                url,
                name,
                error=f"consumer {consumer!r} not found on stream {stream!r} here "
                f"(consumers: {known_consumers})",
            )
        # The consumer's own raft group (its leader may differ from the stream's).
        cluster = detail.get("cluster")
        leader = (cluster or {}).get("leader") or None
        if not cluster:
            leads = True  # not clustered: a single server is its own leader
        elif name is not None:
            leads = leader == name
        else:
            # /varz did not answer: a server lists its peers under "replicas", never itself, while a
            # leader is known (nats-server jetstream_cluster.go clusterInfo)
            replicas = [str(r.get("name")) for r in cluster.get("replicas") or [] if isinstance(r, dict)]
            leads = leader is not None and leader not in replicas
        try:
            lag = ConsumerLag(
                stream=stream,
                consumer=consumer,
                num_pending=int(detail.get("num_pending", 0)),
                num_ack_pending=int(detail.get("num_ack_pending", 0)),
                num_redelivered=int(detail.get("num_redelivered", 0)),
                leader=leader if cluster else (name or leader),
                at=_parse_time(detail.get("ts") or jsz.get("now")),
                server=name or str(jsz.get("server_id") or ""),
                from_leader=leads,
                url=url,
                ack_floor_stream_seq=_seq(detail.get("ack_floor")),
                stream_last_seq=_seq(stream_detail.get("state"), "last_seq"),
            )
        except (TypeError, ValueError) as exc:
            return ServerAnswer(url, name, leader, error=f"unexpected consumer numbers: {exc}")
        return ServerAnswer(url, name, lag.leader, lag)

    def consumer_lag(self, stream: str, consumer: str) -> ConsumerLag:
        """The consumer's lag as its current leader reports it, found across every server.

        ``ProbeError`` when no server leads it (naming what each one said), unless ``allow_replica``:
        then a follower's numbers come back marked ``from_leader=False``."""
        answers: dict[str, ServerAnswer] = {}
        order = self._order(answers)
        for attempt in range(self.rounds):
            for url in order:
                answer = self.ask(url, stream, consumer)
                answers[url] = answer
                if answer.leads and answer.lag is not None:
                    self._leader_url = url
                    self.last_answers = [answers[u] for u in self.urls if u in answers]
                    return answer.lag
            if not any(a.error is None for a in answers.values()):
                break  # nobody holds the consumer (or nobody answers): asking again will not help
            order = self._order(answers)
            if attempt + 1 < self.rounds:
                time.sleep(0.1 * (attempt + 1))  # an election takes a moment
        self.last_answers = [answers[u] for u in self.urls if u in answers]
        followers = [a.lag for a in self.last_answers if a.lag is not None]
        if self.allow_replica and followers:
            return followers[0]
        said = "; ".join(a.describe() for a in self.last_answers)
        if len(self.urls) == 1 and followers:
            hint = "; give every NATS server's monitoring URL (nats_monitor_urls) so that the leader is found"
        else:
            hint = ""
        raise ProbeError(
            _PROBE,
            f"no server leads consumer {stream}/{consumer} (account {self.account}) among "
            f"{len(self.urls)} monitoring URL(s): {said}{hint}",
        )

    def _order(self, answers: dict[str, ServerAnswer]) -> list[str]:
        """Who to ask next: the servers the latest answers name as leader, the last known leader, the rest."""
        named = {a.leader for a in answers.values() if a.leader}
        first = [u for u in self.urls if self._names.get(u) in named]
        if self._leader_url in self.urls and self._leader_url not in first:
            first.append(self._leader_url)
        return first + [u for u in self.urls if u not in first]
