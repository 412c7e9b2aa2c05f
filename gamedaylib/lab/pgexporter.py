"""The lab's PostgreSQL exporter: one node's metrics under CloudNativePG's names and labels.

On Kubernetes, CloudNativePG's instance manager runs in every instance's pod and serves that instance's
metrics on port 9187 (named ``metrics``); the PodMonitor the operator creates for a Cluster
(``spec.monitoring.enablePodMonitor``) scrapes every pod of ``cnpg.io/cluster=<name>``, so Prometheus
labels each series with ``namespace``, ``pod`` and ``job="<namespace>/<cluster>"``. When a pod is killed,
its exporter dies with it: the target fails and its series go stale (absent), until the pod is back.

The lab does the same per node: ``python -m gamedaylib.lab.pgexporter --node pg1 --port P --dsn DSN
--cluster events-db --cluster-dir ROOT`` runs beside that node's Patroni, is killed with it by a node
kill (``PgClusterClient.kill``) and started again with it (``restart_killed``). Each scrape of
``/metrics`` connects to the node's PostgreSQL (directly, never through HAProxy) and answers:

- the collector's own series (CloudNativePG ``pkg/management/postgres/webserver/metricserver``):
  ``cnpg_collector_up{cluster}`` (1 when PostgreSQL answered this scrape, 0 when it did not: then no
  query series follow, as on a real instance), ``cnpg_collector_last_collection_error``,
  ``cnpg_collector_collections_total``, ``cnpg_collector_fencing_on``,
  ``cnpg_collector_postgres_version{full,cluster}``, and on the primary
  ``cnpg_collector_sync_replicas{value="observed"}`` (from ``synchronous_standby_names``);
- CloudNativePG's default monitoring queries (ConfigMap ``cnpg-default-monitoring``) that a failover
  needs, same SQL, same names: ``cnpg_pg_replication_{lag,in_recovery,is_wal_receiver_up,
  streaming_replicas}``, ``cnpg_pg_postmaster_start_time``, and on the primary (``primary: true``)
  ``cnpg_pg_stat_replication_{backend_start,backend_xmin_age,sent_diff_bytes,write_diff_bytes,
  flush_diff_bytes,replay_diff_bytes,write_lag_seconds,flush_lag_seconds,replay_lag_seconds}``
  labelled ``usename``, ``application_name``, ``client_addr``, ``client_port``.

``GET /healthz`` answers ``ok`` (the exporter itself; PostgreSQL's state is ``cnpg_collector_up``).
The lab's Prometheus scrapes every node's exporter as job ``events-db`` (the Cluster's name, as the
PodMonitor's job without the lab's absent namespace) with label ``pod=<node>``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "CLUSTER_LABEL",
    "NAMESPACE",
    "REPLICATION_QUERY",
    "STAT_REPLICATION_QUERY",
    "PgCollector",
    "main",
    "sync_replicas",
]

log = logging.getLogger("gamedaylib.lab.pgexporter")

NAMESPACE = "cnpg"  # CloudNativePG's PrometheusNamespace
CLUSTER_LABEL = "cluster"
CONNECT_TIMEOUT_SECONDS = 2  # libpq's smallest; Prometheus gives up on the scrape first when it hangs
STATEMENT_TIMEOUT_MS = 900

# CloudNativePG's default monitoring queries (config/manager/default-monitoring.yaml), verbatim in
# what they select; pg_catalog qualification kept
REPLICATION_QUERY = """
SELECT CASE WHEN (
          NOT pg_catalog.pg_is_in_recovery()
          OR pg_catalog.pg_last_wal_receive_lsn() OPERATOR(pg_catalog.=) pg_catalog.pg_last_wal_replay_lsn())
        THEN 0
        ELSE GREATEST (0,
          EXTRACT(EPOCH FROM (pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.pg_last_xact_replay_timestamp())))
        END AS lag,
        pg_catalog.pg_is_in_recovery() AS in_recovery,
        EXISTS (TABLE pg_catalog.pg_stat_wal_receiver) AS is_wal_receiver_up,
        (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_replication) AS streaming_replicas
"""
REPLICATION_METRICS = {
    "lag": "Replication lag behind primary in seconds",
    "in_recovery": "Whether the instance is in recovery",
    "is_wal_receiver_up": "Whether the instance wal_receiver is up",
    "streaming_replicas": "Number of streaming replicas connected to the instance",
}
POSTMASTER_QUERY = (
    "SELECT EXTRACT(EPOCH FROM pg_postmaster_start_time) AS start_time "
    "FROM pg_catalog.pg_postmaster_start_time()"
)
STAT_REPLICATION_QUERY = """
SELECT usename
  , COALESCE(application_name, '') AS application_name
  , COALESCE(client_addr::text, '') AS client_addr
  , COALESCE(client_port::text, '') AS client_port
  , EXTRACT(EPOCH FROM backend_start) AS backend_start
  , COALESCE(pg_catalog.age(backend_xmin), 0) AS backend_xmin_age
  , pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), sent_lsn) AS sent_diff_bytes
  , pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), write_lsn) AS write_diff_bytes
  , pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), flush_lsn) AS flush_diff_bytes
  , COALESCE(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), replay_lsn),0) AS replay_diff_bytes
  , COALESCE((EXTRACT(EPOCH FROM write_lag)),0)::float AS write_lag_seconds
  , COALESCE((EXTRACT(EPOCH FROM flush_lag)),0)::float AS flush_lag_seconds
  , COALESCE((EXTRACT(EPOCH FROM replay_lag)),0)::float AS replay_lag_seconds
FROM pg_catalog.pg_stat_replication
"""
STAT_REPLICATION_LABELS = ("usename", "application_name", "client_addr", "client_port")
# column -> (COUNTER | GAUGE, description)
STAT_REPLICATION_METRICS: dict[str, tuple[str, str]] = {
    "backend_start": (
        "COUNTER",
        "Time when this process was started",
    ),
    "backend_xmin_age": (
        "COUNTER",
        "The age of this standby's xmin horizon",
    ),
    "sent_diff_bytes": (
        "GAUGE",
        "Difference in bytes from the last write-ahead log location sent on this connection",
    ),
    "write_diff_bytes": (
        "GAUGE",
        (
            "Difference in bytes from the last write-ahead log location written to disk by this standby"
            " server"
        ),
    ),
    "flush_diff_bytes": (
        "GAUGE",
        (
            "Difference in bytes from the last write-ahead log location flushed to disk by this standby"
            " server"
        ),
    ),
    "replay_diff_bytes": (
        "GAUGE",
        (
            "Difference in bytes from the last write-ahead log location replayed into the database on "
            "this standby server"
        ),
    ),
    "write_lag_seconds": (
        "GAUGE",
        (
            "Time elapsed between flushing recent WAL locally and receiving notification that this "
            "standby server has written it"
        ),
    ),
    "flush_lag_seconds": (
        "GAUGE",
        (
            "Time elapsed between flushing recent WAL locally and receiving notification that this "
            "standby server has written and flushed it"
        ),
    ),
    "replay_lag_seconds": (
        "GAUGE",
        (
            "Time elapsed between flushing recent WAL locally and receiving notification that this "
            "standby server has written, flushed and applied it"
        ),
    ),
}
_SYNC_NAMES = re.compile(r"^\s*(ANY|FIRST)\s+([0-9]+)\s*\(.*\)\s*$", re.IGNORECASE)


def sync_replicas(setting: str) -> int:
    """The synchronous standbys ``synchronous_standby_names`` asks for: ``ANY|FIRST n (...)`` -> n, a
    plain list of names -> 1 (PostgreSQL's meaning of the old syntax), empty -> 0."""
    text = setting.strip()
    if not text:
        return 0
    match = _SYNC_NAMES.match(text)
    return int(match.group(2)) if match else 1


@dataclass(frozen=True)
class Sample:
    """What one scrape read from PostgreSQL (None: PostgreSQL did not answer)."""

    replication: dict[str, float]
    start_time: float
    version: str
    stat_replication: list[dict[str, Any]]
    sync_replicas: int | None  # only on the primary


class PgCollector(Collector):
    """A prometheus_client collector reading one PostgreSQL node on every scrape."""

    def __init__(self, dsn: str, cluster: str) -> None:
        self.dsn = dsn
        self.cluster = cluster
        self.collections = 0
        self._lock = threading.Lock()

    def read(self) -> Sample:
        """Read the node once; ``psycopg.Error`` when it does not answer."""
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                             application_name="cnpg_metrics_exporter",
                             options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}") as conn:
            row = conn.execute(REPLICATION_QUERY).fetchone()
            assert row is not None
            replication = {name: float(value) for name, value in zip(REPLICATION_METRICS, row, strict=False)}
            start = conn.execute(POSTMASTER_QUERY).fetchone()
            version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            stat: list[dict[str, Any]] = []
            sync = None
            if not replication["in_recovery"]:  # the queries marked ``primary: true``
                cur = conn.execute(STAT_REPLICATION_QUERY)
                columns = [d.name for d in cur.description or []]
                stat = [dict(zip(columns, r, strict=False)) for r in cur.fetchall()]
                names = conn.execute("SHOW synchronous_standby_names").fetchone()
                sync = sync_replicas(str(names[0]) if names else "")
        return Sample(replication, float(start[0]) if start else 0.0, version, stat, sync)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self.collections += 1
            collections = self.collections
        try:
            sample: Sample | None = self.read()
            error = 0.0
        except psycopg.Error as exc:
            log.warning("unable to collect metrics: %s", str(exc).strip().splitlines()[0] if str(exc) else exc)
            sample, error = None, 1.0
        prefix = f"{NAMESPACE}_collector"
        up = GaugeMetricFamily(f"{prefix}_up", "1 if PostgreSQL is up, 0 otherwise.", labels=[CLUSTER_LABEL])
        up.add_metric([self.cluster], 0.0 if sample is None else 1.0)
        yield up
        yield GaugeMetricFamily(f"{prefix}_last_collection_error",
                                "1 if the last collection ended with error, 0 otherwise.", value=error)
        yield CounterMetricFamily(f"{prefix}_collections", "Total number of times PostgreSQL was accessed for "
                                  "metrics.", value=collections)
        yield GaugeMetricFamily(f"{prefix}_fencing_on", "1 if the instance is fenced, 0 otherwise", value=0.0)
        if sample is None:
            return
        yield from self._sample_metrics(sample)

    def _sample_metrics(self, sample: Sample) -> Iterator[Metric]:
        prefix = f"{NAMESPACE}_collector"
        major_minor = ".".join(sample.version.split()[0].split(".")[:2])
        version = GaugeMetricFamily(f"{prefix}_postgres_version", "Postgres version",
                                    labels=["full", CLUSTER_LABEL])
        with contextlib.suppress(ValueError):
            version.add_metric([major_minor, self.cluster], float(major_minor))
        yield version
        if sample.sync_replicas is not None:
            sync = GaugeMetricFamily(f"{prefix}_sync_replicas", "Number of requested synchronous replicas "
                                     "(synchronous_standby_names)", labels=["value"])
            sync.add_metric(["observed"], float(sample.sync_replicas))
            yield sync
        for name, help_text in REPLICATION_METRICS.items():
            yield GaugeMetricFamily(f"{NAMESPACE}_pg_replication_{name}", help_text,
                                    value=sample.replication[name])
        yield GaugeMetricFamily(f"{NAMESPACE}_pg_postmaster_start_time",
                                "Time at which postgres started (based on epoch)", value=sample.start_time)
        if not sample.stat_replication:
            return
        for column, (usage, help_text) in STAT_REPLICATION_METRICS.items():
            name = f"{NAMESPACE}_pg_stat_replication_{column}"
            # a counter keeps its own name, as CloudNativePG's query collector writes it (no ``_total``)
            family = Metric(name, help_text, "counter" if usage == "COUNTER" else "gauge")
            for row in sample.stat_replication:
                value = row.get(column)
                if value is not None:
                    family.add_sample(name, {label: str(row.get(label) or "") for label in STAT_REPLICATION_LABELS},
                                      float(value))
            yield family


def _handler(registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, kind = generate_latest(registry), "text/plain; version=0.0.4; charset=utf-8"
            elif path == "/healthz":
                body, kind = b"ok\n", "text/plain"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


def serve(port: int, dsn: str, cluster: str) -> int:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PgCollector(dsn, cluster))
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(registry))
    server.daemon_threads = True
    stopping = threading.Event()

    def stop(*_: object) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    log.info("exporter for %s on 127.0.0.1:%d (cluster %s)", dsn, port, cluster)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gamedaylib.lab.pgexporter",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--node", required=True, help="the node (pod) this exporter belongs to")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True, help="a direct connection to the node's PostgreSQL")
    parser.add_argument("--cluster", required=True, help="the cluster's name (label cluster=)")
    parser.add_argument("--cluster-dir", help="the cluster folder (names the process for cleanup)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format=f"%(asctime)s pgexporter-{args.node} %(levelname)s %(message)s")
    return serve(args.port, args.dsn, args.cluster)


if __name__ == "__main__":
    sys.exit(main())
