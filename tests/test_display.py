"""How a run shows itself: the banner of each phase, and waits that say how they ended (headless: a
progress line at most every few seconds and one when the wait ends; every number of one line from
the same reading)."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from runfakes import FakeTarget, healthy, start_run

from gamedaylib.banner import Banner
from gamedaylib.clock import utcnow
from gamedaylib.display import NotebookDisplay, in_kernel, kernel_is_live

pytestmark = pytest.mark.timeout(60)


def test_outside_a_kernel_nothing_is_displayed_and_nothing_is_live() -> None:
    assert in_kernel() is False and kernel_is_live() is False


def test_the_banner_names_the_phase_the_run_and_the_faults_state(tmp_path: Path) -> None:
    display = NotebookDisplay(live=False, stream=io.StringIO())
    run, _ = start_run(tmp_path, observers=[display])
    try:
        start = display.banner(run, "start")
        assert isinstance(start, Banner) and start.title == "Start" and start.accent == "info"
        assert start.subtitle == "GAMEDAY-001 · run unit-1 · lab · rehearsal"
        assert start.offset.startswith("before T+0")
        run.phase("injection")
        during = display.banner(run, "buffering")
        assert during.title == "Event Buffering" and during.accent == "alarm"
        # the offset is its reading's (one number per moment): a reading taken just before T+0 reads T-00:00
        assert during.offset.startswith(("T+00:0", "T-00:00"))
        assert [t.label for t in during.tiles] == ["partition", "consumer lag", "gateway buffer", "canaries lost"]
        assert during.tiles[0].value == "ACTIVE"
        run.heal()
        assert display.banner(run, "heal").accent == "ok"
        assert display.banner(run, "finish").title == "Finish"
    finally:
        run.close()


def test_headless_waits_print_sparsely_and_say_how_they_ended(tmp_path: Path) -> None:
    out = io.StringIO()
    display = NotebookDisplay(live=False, stream=out, print_every=60)
    run, _ = start_run(tmp_path, observers=[display])
    try:
        run.phase("injection")
        found = run.wait("waiting for a full buffer", utcnow() + timedelta(seconds=0.6),
                         done=lambda r: (r.buffer_size or 0) > 1000, detail="partition ends at T+00:01")
        assert found is None
        lines = out.getvalue().splitlines()
        assert len(lines) == 2, lines  # the first progress line, then (60 s later at the earliest) only the end
        assert lines[0].startswith("waiting for a full buffer: 0 of 1 s (partition ends at T+00:01) · T+00:0")
        assert lines[-1].startswith("✘ waiting for a full buffer: not done by the deadline, 1 of 1 s (partition "
                                    "ends at T+00:01) · T+00:0")
        assert "· partition ACTIVE · consumer lag 0 · gateway buffer 8 · canaries lost —" in lines[-1]

        out.truncate(0), out.seek(0)
        found = run.wait("services reconnecting", utcnow() + timedelta(seconds=5), done=lambda r: True)
        assert found is not None
        assert out.getvalue().splitlines()[-1].startswith("✔ services reconnecting: done after 0 s (at most 5 s) · ")

        out.truncate(0), out.seek(0)
        run.wait("partition half-way", utcnow() + timedelta(seconds=0.2))  # nothing to wait for but time
        assert "✔ partition half-way: 0 of 0 s, reached" in out.getvalue().splitlines()[-1]  # time was the goal
    finally:
        run.close()


def test_a_wait_ended_by_a_stop_condition_says_it_ended_early(tmp_path: Path) -> None:
    def overflowing(target: FakeTarget, n: int) -> dict[str, Any]:
        values = healthy(target, n)
        if target.active:
            values.update(buffer_size=40.0, buffer_fraction_max=1.0)
        return values

    out = io.StringIO()
    run, _ = start_run(tmp_path, overflowing, observers=[NotebookDisplay(live=False, stream=out)])
    try:
        run.take_baseline(0)
        run.phase("injection")
        run.wait("partition running", utcnow() + timedelta(seconds=20), watch=True)
        assert run.stopped_by is not None
        assert out.getvalue().splitlines()[-1].startswith("■ partition running: ended early after ")
    finally:
        run.close()
