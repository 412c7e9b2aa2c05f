"""Healing is guaranteed: each fault is staged for real during the partition of a short rehearsal
against one shared lab, through `gameday run`. For each: the partition ends up healed (the proxy's
``GET /partition``), the archive exists with verdict ``aborted``, the journal is readable and ends
with the reason, the exit status is 2, and the time from the fault to the heal is measured."""

from __future__ import annotations

import math
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from safetytools import SHORT, LabHandle, Run, gameday, read_journal, record_figure, scorecard, ts

from gamedaylib.gamedays.nats_partition.params import NatsPartitionParams
from gamedaylib.lock import GamedayLock
from gamedaylib.parameters import validate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ARCHIVE_FILES = ("runbook.ipynb", "report.html", "journal.jsonl", "scorecard.json", "samples.csv",
                 "incident-report.md", "params.yaml")


def assert_aborted(run: Run, lab: LabHandle, reason: str) -> tuple[Path, list[dict[str, Any]]]:
    rc = run.wait()
    assert rc == 2, run.stderr[-3000:]
    archive = run.archive()
    for name in ARCHIVE_FILES:
        assert (archive / name).exists(), name
    card = scorecard(archive)
    assert card["verdict"] == "aborted"
    assert reason in card.get("reason", ""), card.get("reason")
    entries = read_journal(archive)
    assert any(e["kind"] == "fault.active" for e in entries), "the fault was really applied"
    assert entries[-1]["kind"] == "run.finished", entries[-1]
    assert reason in entries[-1]["reason"], entries[-1]
    assert lab.partition()["active"] is False
    GamedayLock(lab.lab_dir / "gameday.lock").check_free()  # released (or stale): the next run may go
    return archive, entries


def test_exception_in_a_phase_cell_heals_at_once(lab: LabHandle, start_run: Any) -> None:
    lab.settle()
    cuts = lab.partition()["cuts"]
    run = start_run(lab, fault_phase="buffering", **SHORT)
    _, entries = assert_aborted(run, lab, "rehearsed fault")
    assert lab.partition()["cuts"] == cuts + 1
    failed = next(e for e in entries if e["kind"] == "phase.finished" and e.get("status") == "failed")
    assert failed["phase"] == "buffering" and failed["error"] == "GamedayAborted"
    healed = next(e for e in entries if e["kind"] == "fault.healed")
    assert healed["seq"] > failed["seq"]
    record_figure("exception in a phase cell", ts(healed, "at") - ts(failed))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_to_gameday_run_heals(lab: LabHandle, start_run: Any, signum: int) -> None:
    lab.settle()
    run = start_run(lab, **SHORT)
    lab.wait_active()
    time.sleep(1.0)
    fault = time.time()
    os.kill(run.proc.pid, signum)
    healed = lab.wait_healed(timeout=30)
    record_figure(f"{signal.Signals(signum).name} to gameday run", healed - fault)
    assert_aborted(run, lab, "interrupted")


def test_sigkill_of_the_kernel_heals(lab: LabHandle, start_run: Any) -> None:
    lab.settle()
    run = start_run(lab, **SHORT)
    kernel = run.kernel_pid()
    lab.wait_active()
    time.sleep(1.0)
    fault = time.time()
    os.kill(kernel, signal.SIGKILL)
    healed = lab.wait_healed(timeout=30)
    record_figure("SIGKILL of the kernel", healed - fault)
    assert_aborted(run, lab, "")
    assert "kernel" in scorecard(run.archive())["reason"].lower()


def test_sigkill_of_gameday_run_heals_by_deadline_and_is_marked_orphaned(lab: LabHandle, start_run: Any,
                                                                          tmp_path: Path) -> None:
    lab.settle()
    out = tmp_path / "orphans"
    run = start_run(lab, output_dir=out, **SHORT)
    kernel = run.kernel_pid()
    active = lab.wait_active()
    time.sleep(1.0)
    fault = time.time()
    run.kill()  # SIGKILL: nothing of gameday run survives to heal
    deadline = SHORT["partition_seconds"] + SHORT["partition_safety_margin_seconds"]
    healed = lab.wait_healed(timeout=deadline + 15)
    record_figure("SIGKILL of gameday run (proxy deadline)", healed - fault)
    assert healed - active <= deadline + 3, "the proxy's own deadline healed it"
    gone = time.monotonic() + 20
    while os.path.exists(f"/proc/{kernel}") and time.monotonic() < gone:
        time.sleep(0.2)  # the kernel notices its parent died and exits
    archive = Path(re.search(r" into (\S+)", run.stderr).group(1))
    assert not (archive / "scorecard.json").exists() or scorecard(archive)["verdict"] != "pass"
    hist = gameday("history", "--output-dir", str(out))
    assert hist.returncode == 0, hist.stderr
    assert f"marked run {archive.name} aborted" in hist.stderr
    assert "aborted" in hist.stdout.splitlines()[-2 if "chart:" in hist.stdout else -1]
    card = scorecard(archive)
    assert card["verdict"] == "aborted" and "orphaned" in card["reason"]
    entries = read_journal(archive)
    assert entries[-1]["kind"] == "run.finished" and "orphaned" in entries[-1]["reason"]
    assert (archive / "report.html").exists() and (archive / "incident-report.md").exists()
    assert gameday("history", "--output-dir", str(out)).stderr.count("marked run") == 0  # once only
    GamedayLock(lab.lab_dir / "gameday.lock").check_free()


def test_cell_timeout_heals(lab: LabHandle, start_run: Any) -> None:
    lab.settle()
    # validation refuses a cell timeout shorter than a phase's own waits, so the buffering cell is made
    # to hang (fault_phase=buffering:hang) past the shortest timeout validation accepts
    params = {**SHORT, "partition_seconds": 40, "partition_safety_margin_seconds": 15, "heal_confirm_seconds": 2,
              "lag_recovery_deadline_seconds": 10, "alert_fire_target_seconds": 5}
    timeout = math.ceil(validate(NatsPartitionParams, params).longest_wait_seconds()) + 1  # 23 s
    run = start_run(lab, fault_phase="buffering:hang", cell_timeout_seconds=timeout, **params)
    active = lab.wait_active(timeout=90)
    healed = lab.wait_healed(timeout=timeout + 30)
    # the buffering cell starts when the partition is confirmed: it times out `timeout` s later
    record_figure("per-cell timeout (approx.)", healed - (active + timeout))
    assert healed - active < timeout + 10 < 55, "the timeout healed it, long before the fault's deadline (55 s)"
    assert_aborted(run, lab, "")
    reason = scorecard(run.archive())["reason"].lower()
    assert "timeout" in reason or "timed out" in reason, reason


def test_stop_condition_heals_and_verification_goes_on(lab: LabHandle, start_run: Any) -> None:
    lab.settle()
    run = start_run(lab, stop_buffer_fraction=0.0005, **{**SHORT, "partition_seconds": 30,
                                                         "partition_safety_margin_seconds": 15})
    rc = run.wait()
    assert rc == 1, "the system crossed a stop condition: it missed a target (exit 1), the run could judge it"
    archive = run.archive()
    card = scorecard(archive)
    assert card["verdict"] == "fail"
    stopped = card["stopped_by"]
    assert stopped["condition"] == "stop_buffer_fraction" and stopped["threshold"] == 0.0005
    assert stopped["value"] > 0.0005 and stopped["at"] and "gateway buffer" in stopped["words"]
    assert "%" in stopped["words"] and "limit" in stopped["words"], "said in words with units"
    assert lab.partition()["active"] is False
    entries = read_journal(archive)
    assert entries[-1]["kind"] == "run.finished" and entries[-1]["verdict"] == "fail"
    fired = next(e for e in entries if e["kind"] == "stop_condition")
    assert fired["condition"] == "stop_buffer_fraction" and fired["value"] > 0.0005
    healed = next(e for e in entries if e["kind"] == "fault.healed")
    assert healed["seq"] > fired["seq"]
    record_figure("stop condition (stop_buffer_fraction)", ts(healed, "at") - ts(fired))
    active = next(e for e in entries if e["kind"] == "fault.active")
    assert ts(healed, "at") - ts(active, "t0") < 15, "healed at once, not at the planned end (30 s)"
    finished = {e["phase"] for e in entries if e["kind"] == "phase.finished"}
    assert {"replay", "rto", "rpo", "incident_response", "postmortem"} <= finished, "verification went on"
    measured = {m["name"]: m for m in card["metrics"]}
    assert measured["event_loss_count"]["status"] != "not_measured", "the post-mortem still has data"
    assert measured["rto_seconds"]["status"] != "not_measured"
