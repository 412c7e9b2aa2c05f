from __future__ import annotations

import io
import re

import pytest

from gamedaylib.banner import GREEN, GREY, RED, LiveWait, StatusBanner, render, status_banner_html

pytestmark = pytest.mark.timeout(60)


def test_banner_says_state_in_words_and_colour() -> None:
    active = status_banner_html(
        phase_title="Event Buffering", t_offset="T+05:12", partition_active=True, lag=1234, buffer=56, canaries_lost=3
    )
    for text in ("Event Buffering", "T+05:12", "ACTIVE", "1,234", "56", "canaries lost"):
        assert text in active
    assert RED in active
    healed = status_banner_html(
        phase_title="Event Replay", t_offset="T+15:00", partition_active=False, lag=0, buffer=0, canaries_lost=0,
        verdict="pass",
    )
    assert ">OFF<" in healed and "PASS" in healed and GREEN in healed and RED not in healed
    unknown = status_banner_html(
        phase_title="Pre-Flight", t_offset="before T+0", partition_active=None, lag=None, buffer=None,
        canaries_lost=None,
    )
    assert "UNKNOWN" in unknown and GREY in unknown and "—" in unknown


def test_banner_is_self_contained_and_escaped() -> None:
    html = status_banner_html(
        phase_title="<script>alert(1)</script>", t_offset="T+00:01", partition_active=True, lag=1, buffer=1,
        canaries_lost=0,
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert not re.search(r"(src|href)=|url\(|@import|<link|<style", html)  # inline CSS only, nothing fetched
    assert re.search(r"font-size:\s*(3[4-9]|4\d)px", html)  # big enough for a shared screen


def test_render_adapter_takes_the_runbooks_names() -> None:
    html = render(
        gameday_id="GAMEDAY-001", run_id="r1", phase="buffering", offset="T+00:05",
        numbers={"lag": 12.0, "buffer": 3, "breaker": 2}, target="lab", profile="rehearsal", partition_active=True,
    )
    assert "Event Buffering" in html and "GAMEDAY-001" in html and "run r1" in html and ">12<" in html


def test_status_banner_text_form() -> None:
    b = StatusBanner()
    b.show(phase_title="Heal", t_offset="T+00:20", partition_active=True, lag=5, buffer=2, canaries_lost=0)
    b.update(partition_active=False)
    assert b.state is not None and b.state.partition_active is False and b.state.lag == 5
    assert b.state.text() == "[Heal] | T+00:20 | no partition | lag 5 | buffer 2 | canaries lost 0"


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def test_headless_wait_stops_at_deadline_and_prints_sparsely() -> None:
    t, out = FakeTime(), io.StringIO()
    w = LiveWait("partition", 20, live=False, print_every=5, stream=out, monotonic=t.monotonic, sleep=t.sleep,
                 status=lambda: "lag 7")
    assert w.wait_until(lambda: False, interval=1) is False
    assert t.now == pytest.approx(20)
    lines = out.getvalue().splitlines()
    assert 4 <= len(lines) <= 6, lines
    assert lines[-1] == "partition: 20/20 s lag 7 deadline reached"


def test_wait_returns_as_soon_as_condition_holds() -> None:
    t, out = FakeTime(), io.StringIO()
    w = LiveWait("recovery", 60, live=False, stream=out, monotonic=t.monotonic, sleep=t.sleep)
    assert w.wait_until(lambda: t.now >= 7, interval=1) is True
    assert t.now == pytest.approx(7)
    assert out.getvalue().splitlines()[-1].endswith("done")


def test_live_wait_redraws_and_never_overshoots() -> None:
    t = FakeTime()
    drawn: list[float] = []
    w = LiveWait("partition", 10.5, live=True, redraw=lambda: drawn.append(t.now), redraw_every=2,
                 monotonic=t.monotonic, sleep=t.sleep)
    assert w.wait_until(None, interval=3) is False
    assert t.now == pytest.approx(10.5)  # the last sleep is cut to the deadline
    assert len(drawn) >= 4 and w._progress is not None and w._progress.value == pytest.approx(10.5)


def test_real_wait_is_bounded() -> None:
    import time

    start = time.monotonic()
    assert LiveWait("short", 0.3, live=False, stream=io.StringIO()).wait_until(lambda: False, interval=5) is False
    assert time.monotonic() - start < 1.0
