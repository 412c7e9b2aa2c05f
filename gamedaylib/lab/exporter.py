"""A small NATS JetStream exporter for the lab, under the real prometheus-nats-exporter's names.

On every scrape of ``/metrics`` it reads nats-server's monitoring endpoint
``/jsz?consumers=true&config=true`` (directly, not through the partition proxy: NATS itself stays
healthy during the gameday, the services are the ones cut off) and serves, per consumer::

    jetstream_consumer_num_pending{server_id,server_name,account,stream_name,consumer_name}
    jetstream_consumer_num_ack_pending{...}   jetstream_consumer_num_redelivered{...}
    jetstream_consumer_num_waiting{...}       jetstream_consumer_delivered_stream_seq{...}
    jetstream_consumer_ack_floor_stream_seq{...}

and per stream ``jetstream_stream_total_messages``, ``jetstream_stream_total_bytes``,
``jetstream_stream_last_seq``, ``jetstream_stream_consumer_count`` (labels ``server_id``,
``server_name``, ``account``, ``stream_name``), so that the same PromQL works on a real cluster.
``gameday_exporter_nats_up`` is 1 when nats-server answered the scrape, else 0.
``GET /healthz`` answers ``{"status": "ok"}``.

Run: ``python -m gamedaylib.lab.exporter --lab-config <lab_dir>/config.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from gamedaylib.lab.service import LabConfig, main_for, serve_app

log = logging.getLogger("gamedaylib.lab.exporter")

CONSUMER_LABELS = ["server_id", "server_name", "account", "stream_name", "consumer_name"]
STREAM_LABELS = ["server_id", "server_name", "account", "stream_name"]

# metric suffix -> how to read it from a consumer_detail entry of /jsz
CONSUMER_GAUGES: dict[str, tuple[str, ...]] = {
    "num_pending": ("num_pending",),
    "num_ack_pending": ("num_ack_pending",),
    "num_redelivered": ("num_redelivered",),
    "num_waiting": ("num_waiting",),
    "delivered_consumer_seq": ("delivered", "consumer_seq"),
    "delivered_stream_seq": ("delivered", "stream_seq"),
    "ack_floor_consumer_seq": ("ack_floor", "consumer_seq"),
    "ack_floor_stream_seq": ("ack_floor", "stream_seq"),
}
STREAM_GAUGES: dict[str, tuple[str, ...]] = {
    "total_messages": ("state", "messages"),
    "total_bytes": ("state", "bytes"),
    "first_seq": ("state", "first_seq"),
    "last_seq": ("state", "last_seq"),
    "consumer_count": ("state", "consumer_count"),
}

SESSION_KEY: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
URL_KEY: web.AppKey[str] = web.AppKey("jsz_url", str)


def _dig(data: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = data
    for key in path:
        value = value.get(key, 0) if isinstance(value, dict) else 0
    return float(value or 0)


def jsz_metrics(jsz: dict[str, Any] | None, server_name: str = "") -> list[Metric]:
    """Prometheus metric families for one ``/jsz?consumers=true`` answer (None: NATS did not answer)."""
    up = GaugeMetricFamily("gameday_exporter_nats_up", "1 when nats-server answered /jsz on this scrape")
    up.add_metric([], 0.0 if jsz is None else 1.0)
    consumer = {
        name: GaugeMetricFamily(
            f"jetstream_consumer_{name}", f"JetStream consumer {name}", labels=CONSUMER_LABELS
        )
        for name in CONSUMER_GAUGES
    }
    stream = {
        name: GaugeMetricFamily(f"jetstream_stream_{name}", f"JetStream stream {name}", labels=STREAM_LABELS)
        for name in STREAM_GAUGES
    }
    if jsz is not None:
        server_id = str(jsz.get("server_id", ""))
        for account in jsz.get("account_details") or []:
            acc = str(account.get("name", ""))
            for st in account.get("stream_detail") or []:
                st_labels = [server_id, server_name, acc, str(st.get("name", ""))]
                for name, path in STREAM_GAUGES.items():
                    stream[name].add_metric(st_labels, _dig(st, path))
                for con in st.get("consumer_detail") or []:
                    labels = [*st_labels, str(con.get("name", ""))]
                    for name, path in CONSUMER_GAUGES.items():
                        consumer[name].add_metric(labels, _dig(con, path))
    return [up, *consumer.values(), *stream.values()]


class _Families:
    """A one-shot collector so that prometheus_client renders the exposition format."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


async def _fetch_jsz(app: web.Application) -> dict[str, Any] | None:
    try:
        async with app[SESSION_KEY].get(app[URL_KEY]) as resp:
            resp.raise_for_status()
            data: dict[str, Any] = await resp.json()
            return data
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
        log.warning("nats-server /jsz did not answer: %s", exc)
        return None


async def _metrics(request: web.Request) -> web.Response:
    jsz = await _fetch_jsz(request.app)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(jsz_metrics(jsz, server_name="gameday-lab")))  # type: ignore[arg-type]
    return web.Response(body=generate_latest(registry), content_type="text/plain", charset="utf-8")


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(nats_monitor_url: str) -> web.Application:
    app = web.Application()
    app[URL_KEY] = nats_monitor_url.rstrip("/") + "/jsz?consumers=true&config=true"

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[SESSION_KEY] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))
        yield
        await app[SESSION_KEY].close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    return app


async def serve(config: LabConfig, stop: asyncio.Event) -> None:
    app = make_app(f"http://127.0.0.1:{config.port('nats_monitor')}")
    await serve_app(app, config.port("exporter"), stop)


def main(argv: list[str] | None = None) -> int:
    return main_for("exporter", serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
