"""Helpers of the safety suite: one real lab per test module, driven through the `gameday` command line
as a user would. Runs start in the background; the lab proxy's ``GET /partition`` is watched to measure
time-to-heal (fault → ``active == false``). Figures go to ``outputs/safety/time_to_heal.json``
(``outputs/`` is not committed) and are printed at the end of the session.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import pytest
from runtools import settle

from gamedaylib.journal import Journal

ROOT = Path(__file__).resolve().parents[2]
GAMEDAY = str(Path(sys.executable).with_name("gameday"))
FIGURES: dict[str, float] = {}
FIGURES_FILE = ROOT / "outputs" / "safety" / "time_to_heal.json"

# a short rehearsal: the fault's own deadline (partition + margin) is 18 s
SHORT = {
    "partition_seconds": 12,
    "partition_safety_margin_seconds": 6,
    "heal_confirm_seconds": 10,
    "lag_recovery_deadline_seconds": 30,
    "alert_fire_target_seconds": 20,
    "sample_interval_seconds": 0.5,
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def gameday(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GAMEDAY, *args], capture_output=True, text=True, timeout=timeout, cwd=str(ROOT),
                          env=env or _env(), check=False)


def params_args(params: dict[str, Any]) -> list[str]:
    out = []
    for name, value in params.items():
        out += ["-p", f"{name}={json.dumps(value) if not isinstance(value, str) else value}"]
    return out


@dataclass
class LabHandle:
    lab_dir: Path
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def control(self) -> str:
        return self.state["proxy_control_url"].rstrip("/") + "/partition"

    def partition(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.control, timeout=3) as resp:
            return json.loads(resp.read())

    def status(self) -> dict[str, Any]:
        proc = gameday("lab", "status", "--json", "--lab-dir", str(self.lab_dir), timeout=60)
        return json.loads(proc.stdout)

    def wait_active(self, timeout: float = 60) -> float:
        """Wall-clock time at which the partition was seen active."""
        deadline = time.monotonic() + timeout
        while not self.partition()["active"]:
            assert time.monotonic() < deadline, "the partition never became active"
            time.sleep(0.05)
        return time.time()

    def wait_healed(self, timeout: float = 60) -> float:
        """Wall-clock time at which the partition was first seen healed."""
        deadline = time.monotonic() + timeout
        while self.partition()["active"]:
            assert time.monotonic() < deadline, "the partition was never healed"
            time.sleep(0.05)
        return time.time()

    def settle(self, timeout: float = 120) -> None:
        """Wait until no partition is in force and a new gameday's pre-flight would pass (every NATS
        node asked for the consumer's leader, every gateway replica's buffer: ``runtools.settle``)."""
        self.wait_healed(timeout)
        settle(self.state, timeout)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHandle]:
    """One lab per test module; the runs use it and leave it running; `lab down` in finally."""
    lab_dir = tmp_path_factory.mktemp("lab")
    try:
        up = gameday("lab", "up", "--lab-dir", str(lab_dir), timeout=180)
        assert up.returncode == 0, up.stderr[-3000:]
        handle = LabHandle(lab_dir, json.loads((lab_dir / "state.json").read_text(encoding="utf-8")))
        yield handle
    finally:
        gameday("lab", "down", "--lab-dir", str(lab_dir), timeout=120)


@dataclass
class Run:
    """A `gameday run` started in the background (output to files, so no pipe can fill up)."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def wait(self, timeout: float = 240) -> int:
        return self.proc.wait(timeout=timeout)

    @property
    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def archive(self) -> Path:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"no stdout; stderr:\n{self.stderr[-3000:]}"
        return Path(lines[-1].strip())

    def kernel_pid(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in _children(self.proc.pid):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"ipykernel" in cmd:
                    return pid
            time.sleep(0.1)
        raise AssertionError("no kernel process found")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[Any]:
    """``start_run(lab, **params)`` → Run; every run still alive at the end is killed."""
    runs: list[Run] = []
    kernels: list[int] = []

    def start(lab: LabHandle | None, *args: str, output_dir: Path | None = None, env: dict[str, str] | None = None,
              **params: Any) -> Run:
        n = len(runs)
        out, err = tmp_path / f"run{n}.out", tmp_path / f"run{n}.err"
        argv = [GAMEDAY, "run", *args, "--output-dir", str(output_dir or tmp_path / "out")]
        if lab is not None:
            argv += ["-p", f"lab_dir={lab.lab_dir}"]
        argv += params_args(params)
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen(argv, stdout=o, stderr=e, cwd=str(ROOT), env=env or _env())
        run = Run(proc, out, err)
        runs.append(run)
        return run

    try:
        yield start
    finally:
        for run in runs:
            kernels += _children(run.proc.pid)
            run.kill()
        for pid in kernels:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class TcpForwarder:
    """A real TCP proxy on ``127.0.0.1:<free port>`` in front of ``upstream`` (an ``http://host:port``
    URL): every accepted connection is piped, byte for byte, to a new connection to the upstream.
    ``stop()`` closes the listening socket and every open connection, so from then on the URL refuses
    connections (ECONNREFUSED), as a monitoring endpoint that went down would."""

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        assert parts.hostname and parts.port, upstream
        self.upstream = (parts.hostname, parts.port)
        self.accepted = 0  # connections piped so far
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="forwarder-accept", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._acceptor.start()
        return self

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            thread = threading.Thread(target=self._pipe, args=(client,), name="forwarder-pipe", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._open.update((client, upstream))
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, client)
        try:
            while not self._stopped.is_set():
                for key, _ in sel.select(timeout=0.1):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            with self._lock:
                self._open.difference_update((client, upstream))
            client.close()
            upstream.close()

    def stop(self) -> None:
        """Stop listening and cut every open connection; returns once the port refuses connections."""
        self._stopped.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        with self._lock:
            for sock in list(self._open):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for thread in self._threads:
            thread.join(timeout=5)

    def refuses(self) -> bool:
        """True when a connection to the forwarder's port is refused."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
        except ConnectionRefusedError:
            return True
        return False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_journal(archive: Path) -> list[dict[str, Any]]:
    """Every entry must parse (the journal stays readable whatever happened)."""
    lines = (archive / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines]
    assert entries == list(Journal.read(archive / "journal.jsonl"))
    return entries


def scorecard(archive: Path) -> dict[str, Any]:
    return json.loads((archive / "scorecard.json").read_text(encoding="utf-8"))


def ts(entry: dict[str, Any], key: str = "ts") -> float:
    return datetime.fromisoformat(entry[key]).timestamp()


def record_figure(fault: str, seconds: float) -> None:
    FIGURES[fault] = round(seconds, 2)
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    old = {}
    if FIGURES_FILE.exists():
        try:
            old = json.loads(FIGURES_FILE.read_text(encoding="utf-8"))
        except ValueError:
            old = {}
    old[fault] = FIGURES[fault]
    FIGURES_FILE.write_text(json.dumps(old, indent=2) + "\n", encoding="utf-8")
