from __future__ import annotations

from pathlib import Path

import pytest

from gamedaylib.exceptions import CommandFailed
from gamedaylib.journal import Journal
from gamedaylib.shell import FakeRunner, ShellRunner


def test_real_runner_output_exit_code_duration(tmp_path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    runner = ShellRunner(journal=journal)
    ok = runner.run("echo hello; echo oops >&2", timeout=10, phase="preflight")
    assert ok.returncode == 0 and ok.ok
    assert ok.stdout.strip() == "hello"
    assert ok.stderr.strip() == "oops"
    assert ok.duration_s >= 0
    bad = runner.run("exit 3", timeout=10)
    assert bad.returncode == 3 and not bad.ok
    with pytest.raises(CommandFailed) as info:
        bad.check()
    assert info.value.returncode == 3
    entries = [e for e in journal.entries() if e["kind"] == "command"]
    assert [e["returncode"] for e in entries] == [0, 3]
    assert entries[0]["phase"] == "preflight"


def test_timeout(tmp_path) -> None:
    result = ShellRunner().run("sleep 5", timeout=0.3)
    assert result.timed_out and result.returncode is None and not result.ok
    assert result.duration_s < 3


def test_dry_run_shows_and_does_not_run(tmp_path) -> None:
    marker = tmp_path / "marker"
    journal = Journal(tmp_path / "journal.jsonl")
    result = ShellRunner(dry_run=True, journal=journal).run(f"touch {marker}", timeout=5)
    assert result.dry_run and result.ok
    assert not marker.exists()
    assert journal.entries()[-1]["dry_run"] is True
    assert "dry-run" in result.as_markdown()


def test_secrets_redacted_in_what_is_shown_and_journaled(tmp_path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    runner = ShellRunner(journal=journal)
    result = runner.run("echo postgresql://u:hunter2@127.0.0.1/db; true password=abc", timeout=5)
    assert "hunter2" not in result.command and "hunter2" not in result.stdout
    assert "hunter2" not in (tmp_path / "journal.jsonl").read_text()
    assert "abc" not in result.command


def test_fake_runner_takes_a_handler(tmp_path) -> None:
    runner = FakeRunner(lambda cmd: (0, "Running\n", "") if "get pods" in cmd else (1, "", "no"))
    assert runner.run("kubectl get pods", timeout=1).stdout == "Running\n"
    assert runner.run("kubectl delete x", timeout=1).returncode == 1
    assert runner.calls == ["kubectl get pods", "kubectl delete x"]


def test_a_dry_run_fake_runner_calls_nothing_and_a_failed_step_raises_with_its_tail(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    runner = FakeRunner(lambda cmd: pytest.fail("a dry run must not run anything"), dry_run=True, journal=journal)
    shown = runner.run("kubectl delete networkchaos nats-partition -n teei-prod", timeout=1, phase="heal")
    assert shown.dry_run and shown.ok and runner.calls == []
    assert journal.entries()[-1]["dry_run"] is True and journal.entries()[-1]["phase"] == "heal"
    failed = FakeRunner(lambda cmd: (2, "", "error: the server doesn't have a resource type\n")).run("k", timeout=1)
    with pytest.raises(CommandFailed) as info:
        failed.check()
    assert info.value.returncode == 2 and "resource type" in info.value.stderr_tail
    assert "exited 2" in str(info.value)
    assert ShellRunner().run("true", timeout=5).check().ok
    timed_out = ShellRunner().run("sleep 5", timeout=0.2)
    assert "timed out" in timed_out.as_markdown()
    with pytest.raises(CommandFailed, match="timed out"):
        timed_out.check()
