"""The partition proxy as a process of its own, in front of two real TCP echo servers (two "NATS
nodes", one listener each): it forwards to each, it blackholes every node at once (bytes vanish both
ways, new connections hang), it resets, it heals at its deadline and closes what lived through a
blackhole, and its control API refuses a cut without a deadline."""

from __future__ import annotations

import json
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from labtools import metric, wait_for

from gamedaylib.lab.processes import free_ports

pytestmark = pytest.mark.timeout(120)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@dataclass
class Proxy:
    ports: list[int]  # one listener per upstream "node"
    control: str

    @property
    def port(self) -> int:
        return self.ports[0]

    def connect(self, node: int = 0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.ports[node]), timeout=3)
        return sock

    def post(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(self.control + "/partition", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.control + "/partition", timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    echoes = [_EchoServer(("127.0.0.1", 0), _Echo) for _ in range(2)]
    for echo in echoes:
        threading.Thread(target=echo.serve_forever, daemon=True).start()
    lab_dir: Path = tmp_path_factory.mktemp("proxy-lab")
    port_0, port_1, control = free_ports(3)
    config = {
        "lab_dir": str(lab_dir),
        "knobs": {"lab_partition_mode": "blackhole", "lab_nats_nodes": 2},
        "ports": {
            "nats_0": echoes[0].server_address[1], "nats_1": echoes[1].server_address[1],
            "proxy_0": port_0, "proxy_1": port_1, "proxy_control": control,
        },
        "events_dsn": "",
        "max_partition_seconds": 60,
    }
    (lab_dir / "config.json").write_text(json.dumps(config))
    with open(lab_dir / "proxy.log", "wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "gamedaylib.lab.proxy", "--lab-config", str(lab_dir / "config.json")],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        p = Proxy([port_0, port_1], f"http://127.0.0.1:{control}")

        def ready() -> bool:
            try:
                return p.status()["active"] is False
            except OSError:
                return False

        wait_for(ready, 15, "the proxy's control API")
        yield p
        process.terminate()
        assert process.wait(10) == 0, "the proxy must exit cleanly on SIGTERM"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for echo in echoes:
            echo.shutdown()
            echo.server_close()


def echo_ok(sock: socket.socket, data: bytes = b"ping") -> bool:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            return False
        got += chunk
    return got == data


def test_forwards_bytes_both_ways_to_each_node(proxy: Proxy) -> None:
    for node in (0, 1):
        with proxy.connect(node) as sock:
            assert echo_ok(sock, b"x" * 1_000_000)


def test_a_cut_blackholes_every_node_at_once(proxy: Proxy) -> None:
    old = [proxy.connect(node) for node in (0, 1)]
    assert all(echo_ok(sock) for sock in old)
    code, status = proxy.post({"active": True, "duration_seconds": 30, "mode": "blackhole"})
    assert code == 200 and status["active"]
    try:
        for node in (0, 1):
            new = proxy.connect(node)
            for sock in (old[node], new):
                sock.settimeout(0.5)
                sock.sendall(b"lost")
                with pytest.raises(socket.timeout):
                    sock.recv(100)
            new.close()
    finally:
        proxy.post({"active": False})
        for sock in old:
            sock.close()
    for node in (0, 1):
        with proxy.connect(node) as sock:
            assert echo_ok(sock)


def test_blackhole_drops_bytes_hangs_new_connections_and_heal_closes_them(proxy: Proxy) -> None:
    old = proxy.connect()
    assert echo_ok(old)
    code, status = proxy.post({"active": True, "duration_seconds": 30, "mode": "blackhole"})
    assert code == 200 and status["active"] and status["mode"] == "blackhole"
    assert status["since"] and status["deadline"]
    try:
        old.settimeout(1.0)
        old.sendall(b"lost")  # the connection stays open ...
        with pytest.raises(socket.timeout):
            old.recv(100)  # ... and nothing comes back
        new = proxy.connect()  # accepted ...
        new.settimeout(1.0)
        new.sendall(b"hello")
        with pytest.raises(socket.timeout):
            new.recv(100)  # ... and hangs
        assert metric(proxy.control + "/metrics", "proxy_partition_active") == 1
    finally:
        code, status = proxy.post({"active": False})
    assert code == 200 and status["active"] is False
    for sock in (old, new):  # healed: closed, so no half-delivered stream is resumed
        sock.settimeout(3.0)
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass
        sock.close()
    with proxy.connect() as sock:
        assert echo_ok(sock)


def test_reset_mode_resets_open_and_new_connections(proxy: Proxy) -> None:
    old = proxy.connect()
    assert echo_ok(old)
    code, status = proxy.post({"active": True, "duration_seconds": 30, "mode": "reset"})
    assert code == 200 and status["mode"] == "reset"
    try:
        old.settimeout(3.0)
        with pytest.raises(ConnectionResetError):
            old.recv(100)
            old.sendall(b"x")
            old.recv(100)
        with pytest.raises(ConnectionResetError):  # at connect or at the first read: both are a reset
            with proxy.connect() as new:
                new.settimeout(3.0)
                new.recv(100)
                new.sendall(b"x")
                new.recv(100)
    finally:
        old.close()
        proxy.post({"active": False})
    with proxy.connect() as sock:
        assert echo_ok(sock)


def test_cut_heals_itself_at_its_deadline(proxy: Proxy) -> None:
    cuts = proxy.status()["cuts"]
    code, status = proxy.post({"active": True, "duration_seconds": 2})
    assert code == 200 and status["active"] and status["cuts"] == cuts + 1
    time.sleep(1)
    assert proxy.status()["active"]
    wait_for(lambda: not proxy.status()["active"], 3, "the deadline to heal the cut")
    with proxy.connect() as sock:
        assert echo_ok(sock)


@pytest.mark.parametrize(
    "body",
    [
        {"active": True},  # no deadline
        {"active": True, "duration_seconds": 0},
        {"active": True, "duration_seconds": 61},  # over max_partition_seconds
        {"active": True, "duration_seconds": "10"},
        {"active": True, "duration_seconds": 10, "mode": "drop"},
        {"active": "yes"},
    ],
)
def test_control_api_refuses_bad_cuts(proxy: Proxy, body: dict[str, Any]) -> None:
    code, answer = proxy.post(body)
    assert code == 400 and answer["error"]
    assert proxy.status()["active"] is False
