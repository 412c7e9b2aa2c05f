"""The lab's NATS JetStream exporter: each NATS node's view, under the real prometheus-nats-exporter's
names and labels.

In production the exporter (``natsio/prometheus-nats-exporter``, v0.20.2 checked) runs as a sidecar
of every NATS server pod (the official Helm chart runs it with ``-jsz=all -use_internal_server_id``)
and exports *that server's* view of every stream and consumer. The lab does the same from one
process: it listens on ``ports.exporter_<i>`` for every NATS node ``i`` and, on a scrape of that
port, reads only node ``i``'s monitoring endpoint (``/jsz?consumers=true&config=true&raft=true`` and
``/varz``, directly, not through the partition proxy: NATS itself stays healthy during the gameday).
Prometheus scrapes each port as its own target of job ``nats-exporter``, so it sees one instance per
node, as with sidecars; a single process keeps the lab's start-up and memory small.

Series (default ``jetstream`` namespace, as the exporter without ``-prefix``; the official Helm chart
passes ``-prefix=nats``, which renames them ``nats_...``), every one a gauge:

- ``jetstream_server_{jetstream_disabled,total_streams,total_consumers,total_messages,
  total_message_bytes,max_memory,max_storage}`` with the server labels ``server_id`` (the node's
  internal id, as ``-use_internal_server_id``), ``server_name``, ``cluster``, ``domain``,
  ``meta_leader``, ``is_meta_leader``;
- ``jetstream_account_{max_memory,max_storage,storage_used,memory_used}`` + ``account``,
  ``account_name``, ``account_id``;
- ``jetstream_stream_{total_messages,total_bytes,first_seq,last_seq,consumer_count,subject_count,
  limit_bytes,limit_messages}`` + ``stream_name``, ``stream_leader``, ``is_stream_leader``,
  ``stream_raft_group``;
- ``jetstream_consumer_{delivered_consumer_seq,delivered_stream_seq,last_delivery_seconds,
  last_ack_seconds,num_ack_pending,num_redelivered,num_waiting,num_pending,ack_floor_stream_seq,
  ack_floor_consumer_seq}`` + ``consumer_name``, ``consumer_leader``, ``is_consumer_leader``,
  ``consumer_desc``.

As on a real cluster, a follower reports the consumer's ``num_pending`` as 0: the backlog is the
series with ``is_consumer_leader="true"``. The lab adds one series of its own,
``gameday_exporter_nats_up`` (1 when the node answered this scrape, else 0; without it the real
exporter just emits nothing). ``GET /healthz`` answers ``{"status": "ok"}``.

Run: ``python -m gamedaylib.lab.exporter --lab-config <lab_dir>/config.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from gamedaylib.exceptions import LabError
from gamedaylib.lab.service import LabConfig, main_for, start_http

log = logging.getLogger("gamedaylib.lab.exporter")

NAMESPACE = "jetstream"
SERVER_LABELS = ["server_id", "server_name", "cluster", "domain", "meta_leader", "is_meta_leader"]
ACCOUNT_LABELS = [*SERVER_LABELS, "account", "account_name", "account_id"]
STREAM_LABELS = [*ACCOUNT_LABELS, "stream_name", "stream_leader", "is_stream_leader", "stream_raft_group"]
CONSUMER_LABELS = [*STREAM_LABELS, "consumer_name", "consumer_leader", "is_consumer_leader", "consumer_desc"]
JSZ_QUERY = "/jsz?consumers=true&config=true&raft=true"  # what the exporter's -jsz=all asks

# metric name -> where its value is in the /jsz answer (a path of keys)
SERVER_GAUGES: dict[str, tuple[str, ...]] = {
    "server_jetstream_disabled": ("disabled",),
    "server_total_streams": ("streams",),
    "server_total_consumers": ("consumers",),
    "server_total_messages": ("messages",),
    "server_total_message_bytes": ("bytes",),
    "server_max_memory": ("config", "max_memory"),
    "server_max_storage": ("config", "max_storage"),
}
ACCOUNT_GAUGES: dict[str, tuple[str, ...]] = {
    "account_max_storage": ("reserved_storage",),
    "account_max_memory": ("reserved_memory",),
    "account_storage_used": ("storage",),
    "account_memory_used": ("memory",),
}
STREAM_GAUGES: dict[str, tuple[str, ...]] = {
    "stream_total_messages": ("state", "messages"),
    "stream_total_bytes": ("state", "bytes"),
    "stream_first_seq": ("state", "first_seq"),
    "stream_last_seq": ("state", "last_seq"),
    "stream_consumer_count": ("state", "consumer_count"),
    "stream_subject_count": ("state", "num_subjects"),
}
STREAM_CONFIG_GAUGES: dict[str, tuple[str, ...]] = {
    "stream_limit_bytes": ("config", "max_bytes"),
    "stream_limit_messages": ("config", "max_msgs"),
}
CONSUMER_GAUGES: dict[str, tuple[str, ...]] = {
    "consumer_delivered_consumer_seq": ("delivered", "consumer_seq"),
    "consumer_delivered_stream_seq": ("delivered", "stream_seq"),
    "consumer_num_ack_pending": ("num_ack_pending",),
    "consumer_num_redelivered": ("num_redelivered",),
    "consumer_num_waiting": ("num_waiting",),
    "consumer_num_pending": ("num_pending",),
    "consumer_ack_floor_stream_seq": ("ack_floor", "stream_seq"),
    "consumer_ack_floor_consumer_seq": ("ack_floor", "consumer_seq"),
}
# computed from the consumer's "ts" minus a "last_active" time, only when that time is there
CONSUMER_AGES: dict[str, tuple[str, ...]] = {
    "consumer_last_delivery_seconds": ("delivered", "last_active"),
    "consumer_last_ack_seconds": ("ack_floor", "last_active"),
}

SESSION_KEY: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
MONITOR_KEY: web.AppKey[str] = web.AppKey("monitor_url", str)


def _dig(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = data
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _number(data: dict[str, Any], path: tuple[str, ...]) -> float:
    value = _dig(data, path)
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return float(value) if isinstance(value, (int, float)) else 0.0


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _leader(cluster: Any, server_name: str) -> tuple[str, str]:
    """(leader, "true"|"false"): a clustered asset's leader and whether this server is it; a
    non-clustered one (no ``cluster`` block) is led by this server, as the exporter reports it."""
    if not isinstance(cluster, dict):
        return "", "true"
    leader = str(cluster.get("leader") or "")
    return leader, "true" if leader == server_name else "false"


def jsz_metrics(jsz: dict[str, Any] | None, varz: dict[str, Any] | None = None) -> list[Metric]:
    """The exporter's metric families for one node's ``/jsz?consumers=true&config=true&raft=true``
    and ``/varz`` answers (``jsz`` None: the node did not answer; only ``gameday_exporter_nats_up 0``)."""
    up = GaugeMetricFamily("gameday_exporter_nats_up", "1 when nats-server answered /jsz on this scrape")
    up.add_metric([], 0.0 if jsz is None else 1.0)
    families: dict[str, GaugeMetricFamily] = {}

    def family(name: str, labels: list[str]) -> GaugeMetricFamily:
        if name not in families:
            families[name] = GaugeMetricFamily(f"{NAMESPACE}_{name}", name.replace("_", " "), labels=labels)
        return families[name]

    if jsz is not None:
        server_name = str((varz or {}).get("server_name") or jsz.get("server_name") or "")
        server_id = str(jsz.get("server_id") or (varz or {}).get("server_id") or "")
        meta = jsz.get("meta_cluster")
        if isinstance(meta, dict):
            cluster, meta_leader = str(meta.get("name") or ""), str(meta.get("leader") or "")
            is_meta_leader = "true" if meta_leader == server_name else "false"
        else:
            cluster, meta_leader, is_meta_leader = "", "", "true"
        domain = str(_dig(jsz, ("config", "domain")) or "")
        server = [server_id, server_name, cluster, domain, meta_leader, is_meta_leader]
        for name, path in SERVER_GAUGES.items():
            family(name, SERVER_LABELS).add_metric(server, _number(jsz, path))
        for account in jsz.get("account_details") or []:
            acc_name, acc_id = str(account.get("name") or ""), str(account.get("id") or "")
            acc = [*server, acc_name, acc_name, acc_id]
            for name, path in ACCOUNT_GAUGES.items():
                family(name, ACCOUNT_LABELS).add_metric(acc, _number(account, path))
            for st in account.get("stream_detail") or []:
                st_leader, is_st_leader = _leader(st.get("cluster"), server_name)
                raft = str(st.get("stream_raft_group") or _dig(st, ("cluster", "raft_group")) or "")
                st_labels = [*acc, str(st.get("name") or ""), st_leader, is_st_leader, raft]
                for name, path in STREAM_GAUGES.items():
                    family(name, STREAM_LABELS).add_metric(st_labels, _number(st, path))
                if isinstance(st.get("config"), dict):
                    for name, path in STREAM_CONFIG_GAUGES.items():
                        family(name, STREAM_LABELS).add_metric(st_labels, _number(st, path))
                for con in st.get("consumer_detail") or []:
                    con_leader, is_con_leader = _leader(con.get("cluster"), server_name)
                    desc = str(_dig(con, ("config", "description")) or "")
                    labels = [*st_labels, str(con.get("name") or ""), con_leader, is_con_leader, desc]
                    now = _time(con.get("ts"))
                    for name, path in CONSUMER_AGES.items():
                        last = _time(_dig(con, path))
                        if now is not None and last is not None:
                            family(name, CONSUMER_LABELS).add_metric(labels, (now - last).total_seconds())
                    for name, path in CONSUMER_GAUGES.items():
                        family(name, CONSUMER_LABELS).add_metric(labels, _number(con, path))
    return [up, *families.values()]


class _Families:
    """A one-shot collector so that prometheus_client renders the exposition format."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


async def _get_json(app: web.Application, path: str) -> dict[str, Any] | None:
    url = app[MONITOR_KEY] + path
    try:
        async with app[SESSION_KEY].get(url) as resp:
            resp.raise_for_status()
            data: dict[str, Any] = await resp.json()
            return data
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
        log.warning("nats-server %s did not answer: %s", url, exc)
        return None


async def _metrics(request: web.Request) -> web.Response:
    jsz = await _get_json(request.app, JSZ_QUERY)
    varz = await _get_json(request.app, "/varz") if jsz is not None else None
    if varz is None:
        jsz = None  # the real exporter skips a server whose /varz does not answer
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(jsz_metrics(jsz, varz)))
    return web.Response(body=generate_latest(registry), content_type="text/plain", charset="utf-8")


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(nats_monitor_url: str) -> web.Application:
    """The exporter of the node whose monitoring endpoint is ``nats_monitor_url``."""
    app = web.Application()
    app[MONITOR_KEY] = nats_monitor_url.rstrip("/")

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[SESSION_KEY] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))
        yield
        await app[SESSION_KEY].close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    return app


async def serve(config: LabConfig, stop: asyncio.Event) -> None:
    monitors, ports = config.indexed("nats_monitor"), config.indexed("exporter")
    if not ports or len(monitors) != len(ports):
        raise LabError(f"config.json needs one exporter_<i> port per nats_monitor_<i> port, got {config.ports}")
    runners = [
        await start_http(make_app(f"http://127.0.0.1:{monitor}"), port)
        for monitor, port in zip(monitors, ports, strict=True)
    ]
    for node, (monitor, port) in enumerate(zip(monitors, ports, strict=True)):
        log.info("exporter of nats node %d (127.0.0.1:%d) on 127.0.0.1:%d", node, monitor, port)
    try:
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    return main_for("exporter", serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
