"""The facilitator's screen as the notebook display draws it, with a real run (sampler, journal, waits)
against a scripted system and every display call recorded as a notebook kernel would receive it:

- one moment shows one number: each time the banner is redrawn during a wait, the phase's chart is
  drawn from the same reading and writes the same buffer and lag figures at the end of its lines;
- a wait says what it waits for and how it ended, and ends as a static, full bar (no widget text);
- a phase's failed check is coloured, times are shown to the second, and the type is large;
- the verdict is as large as the banner and says why in words.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from matplotlib.text import Annotation

from gamedaylib import charts, display
from gamedaylib.banner import Banner, VerdictBanner
from gamedaylib.clock import utcnow
from gamedaylib.display import NotebookDisplay, Rich, wait_words
from gamedaylib.gamedays.nats_partition import SCENARIO
from gamedaylib.observers import WaitProgress
from gamedaylib.phase import PhaseResult
from gamedaylib.readings import Reading
from gamedaylib.run import Run
from gamedaylib.targets.base import Check, Endpoints, FaultStatus, GroundTruth

pytestmark = pytest.mark.timeout(180)

WIDGET_TEXT = re.compile(r"\b(?:HBox|VBox|FloatProgress|Textarea|Button|HTML|Label)\(")


class Target:
    """A target with nothing to probe (the readings are scripted)."""

    name = "lab"
    endpoints = Endpoints()

    def preflight(self) -> list[Check]:
        return []

    def service_logs(self, service: str, *, since: datetime | None = None) -> list[str]:
        return []

    def ground_truth(self) -> GroundTruth | None:
        return None

    def close(self) -> None:
        pass


class Partition:
    description = "a scripted partition"

    def __init__(self) -> None:
        self.active = False

    def preflight(self) -> list[Check]:
        return []

    def inject(self, *, deadline_seconds: float) -> datetime:
        self.active = True
        return utcnow()

    def heal(self) -> datetime | None:
        if not self.active:
            return None
        self.active = False
        return utcnow()

    def status(self) -> FaultStatus:
        return FaultStatus(self.active)

    def manifest(self) -> str:
        return ""


class Rising:
    """A system whose buffer and lag grow by one step per reading."""

    reading_type = Reading

    def __init__(self) -> None:
        self.n = 0

    def read(self) -> Reading:
        self.n += 1
        return Reading(at=utcnow(), lag_pending=3.0 * self.n, lag_ack_pending=1.0, buffer_size=float(self.n),
                       buffer_capacity=400.0, buffer_fraction_max=self.n / 200, fault_active=True)

    def close(self) -> None:
        pass


def buffering(run: Run, result: PhaseResult) -> None:
    run.inject(result, deadline_seconds=30)
    run.wait("partition half-way", utcnow() + timedelta(seconds=3.0), watch=False,
             detail="partition ends at T+00:05")
    run.check(result, "no event dropped", False, "37 dropped since pre-flight, first at 23:19:47.123456",
              fatal=True)
    result.values["healed at"] = "2026-12-01T23:19:57.280289+00:00"


@dataclasses.dataclass
class Shown:
    obj: Any
    display_id: str | None
    update: bool

    @property
    def bundle(self) -> dict[str, Any]:
        if isinstance(self.obj, dict):
            return self.obj
        make = getattr(self.obj, "_repr_mimebundle_", None)
        got = make() if make else {}
        return dict((got[0] if isinstance(got, tuple) else got) or {})


@dataclasses.dataclass
class Screen:
    run: Run
    display: NotebookDisplay
    shown: list[Shown]  # every display call, in order
    figures: list[Any]  # every chart drawn, in order
    card: dict[str, Any]


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Screen]:
    """One live run (a buffering phase with a wait, then finish) whose every display call is recorded."""
    import IPython.display

    tmp_path = tmp_path_factory.mktemp("screen")
    shown: list[Shown] = []
    figures: list[Any] = []
    real_timeline = charts.timeline

    def timeline(*args: Any, **kwargs: Any) -> Any:
        fig = real_timeline(*args, **kwargs)
        figures.append(fig)
        return fig

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(display, "in_kernel", lambda: True)
        patch.setattr(IPython.display, "display",
                      lambda obj, display_id=None, raw=False, **_: shown.append(Shown(obj, display_id, False)))
        patch.setattr(IPython.display, "update_display",
                      lambda obj, display_id=None, **_: shown.append(Shown(obj, display_id, True)))
        patch.setattr(charts, "timeline", timeline)
        scenario = dataclasses.replace(SCENARIO, make_reader=lambda run: Rising(),
                                       make_fault=lambda target, params: Partition(),
                                       phases={**SCENARIO.phases, "buffering": buffering})
        screen_display = NotebookDisplay(live=True, redraw_every=1.0)
        run = Run.start(scenario, {"archive_dir": str(tmp_path / "run"), "lab_dir": str(tmp_path / "lab"),
                                   "sample_interval_seconds": 0.25, "live": True},
                        target=Target(), observers=[screen_display], live=True)
        try:
            run.phase("buffering")
            card = run.finish()
        finally:
            run.close()
    yield Screen(run, screen_display, shown, figures, card)


def _buffer_of(text: str) -> str:
    found = re.search(r"gateway buffer ([\d,]+)", text)
    assert found, text
    return found.group(1)


def test_one_moment_shows_one_number(screen: Screen) -> None:
    run, screen_display, shown, figures = screen.run, screen.display, screen.shown, screen.figures
    drawn = [m for m in reversed(screen_display.moments) if m["chart"]]
    assert len(drawn) >= 3 and len(figures) == len(drawn)  # redrawn during the wait, at its end, at the phase's end
    for moment, fig in zip(drawn, figures):
        buffer_ax = next(ax for ax in fig.axes if ax.get_title(loc="left").startswith("Gateway buffer"))
        lag_ax = next(ax for ax in fig.axes if ax.get_title(loc="left").startswith("Consumer lag"))
        written = {ax: [t.get_text() for t in ax.texts if isinstance(t, Annotation)] for ax in (buffer_ax, lag_ax)}
        assert written[buffer_ax] == [_buffer_of(moment["banner"])], (moment, written)
        lag = re.search(r"consumer lag ([\d,]+)", moment["banner"])
        assert lag and written[lag_ax] == [lag.group(1)]
        assert run.clock.offset(moment["at"]) in moment["banner"] and run.clock.offset(moment["at"]) in \
            fig.get_suptitle()
    # the banner on screen is the last one drawn, and it is the chart's last moment
    banners = [s.obj for s in shown if isinstance(s.obj, Banner)]
    assert banners[-1].text() == screen_display.moments[0]["banner"]
    charts_shown = [s for s in shown if type(s.obj).__name__ == "Image"]
    assert len({s.display_id for s in charts_shown}) == 1  # one chart for the phase, redrawn in place


def test_a_wait_says_what_it_waits_for_and_ends_as_a_full_static_bar(screen: Screen) -> None:
    shown = screen.shown
    wait_id = next(s.display_id for s in shown if s.display_id and s.display_id.startswith("gameday-wait-"))
    outputs = [s for s in shown if s.display_id == wait_id]
    first, last = outputs[0], outputs[-1]
    assert "application/vnd.jupyter.widget-view+json" in first.bundle  # live: a progress bar ...
    assert re.fullmatch(r"partition half-way: \d of 3 s \(partition ends at T\+00:05\)",
                        first.bundle["text/plain"])  # ... whose plain text is its words, never a repr
    assert last.update and isinstance(last.obj, Rich)  # then a static line in its place
    assert re.fullmatch(r"✔ partition half-way: 3 of 3 s, reached \(partition ends at T\+00:05\)", last.obj.text)
    assert "width:100%" in last.obj.html and "font-size:20px" in last.obj.html
    plain = [str(s.bundle.get("text/plain", "")) for s in shown]
    assert not [p for p in plain if WIDGET_TEXT.search(p)]


def test_a_phase_result_reads_from_the_back_of_the_room(screen: Screen) -> None:
    result = next(s.obj for s in screen.shown if isinstance(s.obj, Rich) and "no event dropped" in s.obj.html)
    row = re.search(r"<tr><td[^>]*>no event dropped</td><td style='([^']*)'>([^<]*)</td>", result.html)
    assert row and row.group(2) == "✘ FAILED" and "background:#b00020" in row.group(1)
    assert "23:19:47.123456" not in result.html and "first at 23:19:47" in result.html
    assert "23:19:57+00:00" in result.html and ".280289" not in result.html
    assert "font-size:18px" in result.html


def test_the_verdict_is_as_large_as_the_banner_and_says_why(screen: Screen) -> None:
    card = screen.card
    verdict = [s.obj for s in screen.shown if isinstance(s.obj, VerdictBanner)][-1]
    assert verdict.verdict == card["verdict"] == "fail"
    assert verdict.reason.startswith("Required but not measured: RTO (Recovery Time)")
    html = verdict._repr_mimebundle_()["text/html"]
    assert "font-size:64px" in html


def test_headless_progress_lines_carry_the_numbers_of_their_own_reading(screen: Screen) -> None:
    run = screen.run
    out = io.StringIO()
    headless = NotebookDisplay(live=False, stream=out, print_every=60)
    reading = Reading(at=utcnow(), lag_pending=1234.0, buffer_size=52.0, buffer_capacity=400.0,
                      buffer_fraction_max=0.13)
    headless.waiting(run, WaitProgress("partition half-way", 7.2, 10.0, "", "partition ends at T+00:20"), reading)
    headless.waiting(run, WaitProgress("partition half-way", 8.0, 10.0, "", "partition ends at T+00:20"), reading)
    headless.waiting(run, WaitProgress("partition half-way", 10.0, 10.0, "done", "partition ends at T+00:20"),
                     reading)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # one while waiting (at most every print_every), one when it ended
    offset = run.clock.offset(reading.at)  # the reading's own moment, beside its own numbers
    assert lines[0].startswith(f"partition half-way: 7 of 10 s (partition ends at T+00:20) · {offset} · ")
    assert lines[1].startswith(f"✔ partition half-way: 10 of 10 s, reached (partition ends at T+00:20) · {offset}")
    assert all("consumer lag 1,234" in line and "gateway buffer 52" in line for line in lines)


@pytest.mark.parametrize(("progress", "why", "words"), [
    (WaitProgress("partition half-way", 7.4, 10, ""), "", "partition half-way: 7 of 10 s"),
    (WaitProgress("partition half-way", 10.02, 10, "done", "partition ends at T+00:20"), "",
     "✔ partition half-way: 10 of 10 s, reached (partition ends at T+00:20)"),
    (WaitProgress("services reconnecting to NATS", 2.6, 30, "done"), "",
     "✔ services reconnecting to NATS: done after 3 s (at most 30 s)"),
    (WaitProgress("waiting for full recovery", 60.1, 60, "deadline"), "",
     "✘ waiting for full recovery: not done by the deadline, 60 of 60 s"),
    (WaitProgress("partition running", 3.2, 10, "stopped"), "gateway buffer 100 % full at T+00:04; limit 90 %",
     "■ partition running: ended early after 3 of 10 s: gateway buffer 100 % full at T+00:04; limit 90 %"),
])
def test_wait_words(progress: WaitProgress, why: str, words: str) -> None:
    assert wait_words(progress, why) == words
