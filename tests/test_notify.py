from __future__ import annotations

import http.server
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from runfakes import start_run

from gamedaylib.journal import Journal
from gamedaylib.lab.sink import read_posts
from gamedaylib.notify import Notifier

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The lab's real webhook sink, as its own process."""
    lab_dir = tmp_path_factory.mktemp("lab")
    port = free_port()
    config = lab_dir / "config.json"
    config.write_text(json.dumps({"lab_dir": str(lab_dir), "ports": {"sink": port}}))
    with open(lab_dir / "sink.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gamedaylib.lab.sink", "--lab-config", str(config)], stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((lab_dir / "sink.log").read_text()) from None
                time.sleep(0.1)
        yield url, lab_dir
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_notifications_arrive_with_run_id_phase_and_time(sink: tuple[str, Path], tmp_path: Path) -> None:
    url, lab_dir = sink
    env = {"GD_SLACK": url + "/slack/T000/B000/secret-token", "GD_STATUS": url + "/status/api/incidents"}
    journal = Journal(tmp_path / "journal.jsonl")
    notifier = Notifier.from_env("GD_SLACK", "GD_STATUS", "run-42", journal=journal, environ=env)
    assert "secret-token" not in repr(notifier)
    results = notifier.send("chaos_start", "injection", "NATS partition started")
    notifier.send("heal", "heal", "partition healed")
    notifier.send("end", "postmortem", "gameday over: PASS")
    assert [d.ok for d in results] == [True, True]

    slack = [p["body"] for p in read_posts(lab_dir, "/slack/")]
    status = [p["body"] for p in read_posts(lab_dir, "/status/")]
    assert len(slack) == 3 and len(status) == 3
    assert slack[0]["text"].endswith("NATS partition started") and "run-42" in slack[0]["text"]
    assert slack[0]["run_id"] == "run-42" and slack[0]["phase"] == "injection" and slack[0]["time"]
    assert [s["status"] for s in status] == ["maintenance", "monitoring", "resolved"]
    assert status[2]["message"] == "gameday over: PASS" and status[2]["run_id"] == "run-42"

    text = (tmp_path / "journal.jsonl").read_text()
    assert "secret-token" not in text and url not in text and "127.0.0.1" not in text
    notes = [e for e in journal.entries() if e["kind"] == "notification"]
    assert len(notes) == 6
    assert notes[0]["detail"] == "sent to slack webhook (from $GD_SLACK): 200"
    assert notes[1]["detail"] == "sent to status page webhook (from $GD_STATUS): 200"


def test_failures_are_journaled_not_raised(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hooks/secret-path"
    journal = Journal(tmp_path / "journal.jsonl")
    notifier = Notifier.from_env("GD_SLACK", "GD_MISSING", "r", journal=journal, environ={"GD_SLACK": dead},
                                 timeout=2)
    results = notifier.send("heal", "heal", "healed")
    assert [d.ok for d in results] == [False, False]
    assert results[0].detail.startswith("failed to send to slack webhook (from $GD_SLACK):")
    assert results[1].detail == "not sent to status page webhook: $GD_MISSING is not set"
    text = (tmp_path / "journal.jsonl").read_text()
    assert "secret-path" not in text and dead not in text
    assert Notifier.from_env("", "", "r", environ={}).send("end", None, "x") == []


def test_http_error_status_is_journaled(tmp_path: Path) -> None:
    """A webhook answering 500 (a tiny real HTTP server) is a journaled failure, not an exception."""
    class Failing(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        journal = Journal(tmp_path / "journal.jsonl")
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        (d,) = Notifier(url, None, "r", journal=journal, webhook_env="GD_X").send("end", "postmortem", "x")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert (d.ok, d.status, d.detail) == (False, 500, "failed to send to slack webhook (from $GD_X): HTTP 500")
    (entry,) = journal.entries()
    assert entry["kind"] == "notification" and entry["ok"] is False and entry["status"] == 500


class Captured(http.server.BaseHTTPRequestHandler):
    posts: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        Captured.posts.append({"path": self.path,
                               "body": json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_run_announces_chaos_start_heal_and_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The playbook's communication: chaos_start once T+0 is confirmed, heal once healed, end after the
    verdict; the webhook URL (a secret) is never journaled."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Captured)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Captured.posts = []
    name = "GD_UNIT_HOOK_" + secrets.token_hex(4).upper()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/{secrets.token_hex(8)}"
    monkeypatch.setenv(name, url)
    try:
        run, _ = start_run(tmp_path, notify_webhook_env=name)
        run.take_baseline(0)
        run.phase("injection")
        run.phase("heal")
        card = run.finish()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    bodies = [p["body"] for p in Captured.posts]
    assert [b["event"] for b in bodies] == ["chaos_start", "heal", "end"]
    assert [b["phase"] for b in bodies] == ["injection", "heal", "heal"]
    assert all(b["run_id"] == "unit-1" and b["gameday_id"] == "GAMEDAY-001" for b in bodies)
    assert "cut off from every NATS server" in bodies[0]["text"] and run.clock.t0 is not None
    assert run.clock.t0.isoformat(timespec="seconds") in bodies[0]["text"]
    assert "partition ended at" in bodies[1]["text"] and "(T+00:01, runbook)" in bodies[1]["text"]
    assert card["verdict"] == "fail" and "reason" not in card  # required metrics never measured here
    assert bodies[2]["text"] == "[GAMEDAY-001 unit-1] gameday finished: verdict fail"
    notes = [e for e in run.journal.entries() if e["kind"] == "notification"]
    assert [(n["event"], n["ok"]) for n in notes] == [("chaos_start", True), ("heal", True), ("end", True)]
    text = (run.archive_dir / "journal.jsonl").read_text()
    assert url not in text and url.rsplit("/", 1)[1] not in text
    assert notes[0]["detail"] == f"sent to slack webhook (from ${name}): 200"
