"""The production-shaped lab with real processes: a 3-node NATS cluster (routes, EVENTS and the durable
consumer replicated three times, a consumer leader JetStream placed), each node's own exporter view,
no node advertised to clients, a consumer leader stepped down through the NATS API while events keep
flowing, two gateway replicas behind the one gateway_url, and one of them killed during a partition:
the ground truth shows what it held as lost. No optional part is needed (combination "neither")."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import pytest
from labtools import RunningLab, metric, optional_parts, running_lab, wait_for

from gamedaylib.lab import processes as proc

pytestmark = pytest.mark.timeout(300)

STREAM, CONSUMER = "EVENTS", "reporting"
EXPORTER_CONSUMER_LABELS = {
    "server_id", "server_name", "cluster", "domain", "meta_leader", "is_meta_leader", "account",
    "account_name", "account_id", "stream_name", "stream_leader", "is_stream_leader", "stream_raft_group",
    "consumer_name", "consumer_leader", "is_consumer_leader", "consumer_desc",
}  # fmt: skip  (prometheus-nats-exporter v0.20.2, collector/jsz.go)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with optional_parts("neither"), running_lab(tmp_path_factory, {"lab_event_rate": 20}) as lab:
        yield lab


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def consumer_views(lab: RunningLab) -> dict[str, dict[str, Any]]:
    """Each node's view of the durable consumer (``/jsz``), by server name."""
    views = {}
    for url in lab.state["nats_monitor_urls"]:
        name = get_json(url + "/varz")["server_name"]
        jsz = get_json(url + "/jsz?consumers=true&config=true")
        for account in jsz.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                for consumer in stream.get("consumer_detail") or []:
                    if stream["name"] == STREAM and consumer["name"] == CONSUMER:
                        views[name] = {"stream": stream, "consumer": consumer}
    return views


def consumer_leader(lab: RunningLab) -> str | None:
    leaders = {view["consumer"].get("cluster", {}).get("leader") for view in consumer_views(lab).values()}
    return leaders.pop() if len(leaders) == 1 else None  # every node agrees, or not yet


def test_a_three_node_cluster_forms_with_events_and_the_consumer_replicated_three_times(lab: RunningLab) -> None:
    servers = lab.state["nats_servers"]
    assert servers == ["nats-0", "nats-1", "nats-2"] and lab.state["nats_cluster"] == "nats"
    for url, name in zip(lab.state["nats_monitor_urls"], servers):
        varz = get_json(url + "/varz")
        assert varz["server_name"] == name and varz["cluster"]["name"] == "nats"
        peers = {route["remote_name"] for route in get_json(url + "/routez")["routes"]}
        assert peers == set(servers) - {name}, f"{name} routes to {peers}"

    def replicated() -> dict[str, dict[str, Any]] | None:
        views = consumer_views(lab)
        if set(views) != set(servers):
            return None
        for view in views.values():
            for asset in (view["stream"]["cluster"], view["consumer"]["cluster"]):
                if not asset.get("leader") or len(asset.get("replicas") or []) != 2:
                    return None
        return views

    views = wait_for(replicated, 30, "EVENTS and reporting on every node, each with a leader and 2 replicas")
    leaders = {view["consumer"]["cluster"]["leader"] for view in views.values()}
    assert len(leaders) == 1 and leaders <= set(servers), "every node names the same consumer leader"
    assert all(view["consumer"]["config"]["num_replicas"] == 3 for view in views.values())


def test_each_node_exporter_reports_that_node_view_under_the_real_exporter_labels(lab: RunningLab) -> None:
    leader = wait_for(lambda: consumer_leader(lab), 30, "a consumer leader")
    seen = {}
    for url in lab.state["exporter_metrics_urls"]:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        lines = [line for line in text.splitlines()
                 if line.startswith("jetstream_consumer_num_pending{") and f'consumer_name="{CONSUMER}"' in line]
        assert len(lines) == 1, text
        labels = dict(part.split("=", 1) for part in lines[0][lines[0].index("{") + 1 : lines[0].rindex("}")]
                      .replace('"', "").split(","))
        assert set(labels) == EXPORTER_CONSUMER_LABELS
        assert labels["cluster"] == "nats" and labels["stream_name"] == STREAM and labels["account"] == "$G"
        assert labels["consumer_leader"] == leader
        assert labels["is_consumer_leader"] == ("true" if labels["server_name"] == leader else "false")
        seen[labels["server_name"]] = labels["is_consumer_leader"]
    assert seen == {name: "true" if name == leader else "false" for name in lab.state["nats_servers"]}


async def _connect_info(url: str) -> tuple[Any, list[str]]:
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
    try:
        return nc._server_info.get("connect_urls"), [s.uri.netloc for s in nc._server_pool]
    finally:
        await nc.close()


def test_no_node_tells_clients_about_the_other_nodes(lab: RunningLab) -> None:
    ports = lab.state["ports"]
    proxied = [f"nats://127.0.0.1:{ports[f'proxy_{i}']}" for i in range(3)]
    for url in proxied + lab.state["nats_urls"]:
        connect_urls, pool = asyncio.run(_connect_info(url))
        assert not connect_urls, f"{url} advertised {connect_urls}: clients could bypass the partition proxy"
        assert pool == [url.removeprefix("nats://")]


def test_both_gateway_replicas_serve_the_one_gateway_url(lab: RunningLab) -> None:
    wait_for(lambda: {a["gateway"] for a in lab.answers()} >= {"gateway-0", "gateway-1"}, 30,
             "the simulated users to be answered by both replicas")
    served: dict[str, list[str]] = {}
    for _ in range(40):  # new connections, as independent clients: the kernel spreads them
        key = f"spread-{uuid.uuid4().hex}"
        body = json.dumps({"type": "page.view", "idempotency_key": key, "payload": {}}).encode()
        request = urllib.request.Request(lab.url("gateway_url") + "/v1/events", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 202
            served.setdefault(response.headers["X-Gateway-Replica"], []).append(key)
    assert set(served) == {"gateway-0", "gateway-1"}, served
    keys = [key for keys in served.values() for key in keys]
    wait_for(lambda: all(lab.stored()[key] == 1 for key in keys), 30, "every post stored once")
    for replica, url in enumerate(lab.state["gateway_metrics_urls"]):
        assert metric(url, "events_accepted_total") >= len(served[f"gateway-{replica}"])


async def _step_down(url: str) -> dict[str, Any]:
    nc = await nats.connect(url, connect_timeout=5)
    try:
        reply = await nc.request(f"$JS.API.CONSUMER.LEADER.STEPDOWN.{STREAM}.{CONSUMER}", b"", timeout=5)
        answer: dict[str, Any] = json.loads(reply.data)
        return answer
    finally:
        await nc.close()


def test_stepping_the_consumer_leader_down_moves_it_and_events_keep_flowing(lab: RunningLab) -> None:
    before = wait_for(lambda: consumer_leader(lab), 30, "a consumer leader")
    answer = asyncio.run(_step_down(lab.url("nats_url")))
    assert answer.get("success") is True, answer
    after = wait_for(lambda: (leader := consumer_leader(lab)) not in (None, before) and leader, 30,
                     "a new consumer leader")
    assert after != before
    since = time.monotonic()
    stored = lab.reporting("events_stored_total")
    wait_for(lambda: lab.reporting("events_stored_total") > stored + 40, 30, "events stored after the move")
    time.sleep(max(0.0, 4 - (time.monotonic() - since)))
    accepted, missing = lab.settled_missing(older_than=2)
    assert accepted and missing == [], f"{len(missing)} accepted events lost across the leader move"
    assert not [key for key, count in lab.stored().items() if count > 1]


def test_killing_a_gateway_replica_during_a_partition_loses_exactly_what_it_held(lab: RunningLab) -> None:
    """Last in the module: it kills gateway-1."""
    victim_url = lab.state["gateway_metrics_urls"][1]
    users, victim = lab.state["pids"]["users"], lab.state["pids"]["gateway-1"]
    held_before_cut = metric(victim_url, "event_buffer_size")  # in flight: may or may not get stored
    assert lab.partition(True, 60)["active"]
    try:
        wait_for(lambda: metric(victim_url, "event_buffer_size") >= 20, 30, "gateway-1 to hold events")
        os.kill(users, signal.SIGSTOP)  # no new post while the buffer is read and the replica killed
        try:
            time.sleep(0.5)  # posts already on the wire are taken (or not) meanwhile
            held = metric(victim_url, "event_buffer_size")
            os.kill(victim, signal.SIGKILL)
            assert proc.wait_gone([victim], 5) == []
        finally:
            os.kill(users, signal.SIGCONT)
    finally:
        lab.partition(False)
    wait_for(lambda: metric(lab.state["gateway_metrics_urls"][0], "nats_connected") == 1, 30,
             "gateway-0 to reconnect")
    wait_for(lambda: metric(lab.state["gateway_metrics_urls"][0], "event_buffer_size") == 0, 60,
             "gateway-0 to drain its buffer")
    _, missing = lab.settled_missing(older_than=2)
    answers = {a["idempotency_key"]: a for a in lab.answers()}
    assert {answers[key]["gateway"] for key in missing} <= {"gateway-1"}, "only the killed replica lost events"
    # what it held, minus what it had sent before the cut and JetStream stored (its ack was cut off)
    assert held - held_before_cut <= len(missing) <= held, (held_before_cut, held, len(missing))
    assert lab.lab.status()["processes"]["gateway-1"]["alive"] is False
