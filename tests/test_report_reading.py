"""report.html and incident-report.md as an analyst reads them, from real runs: `gameday run` against a lab
with a staged flaw (`lab_buffer_capacity=20`, `lab_overflow=drop`), once without a stop condition that can
fire (the run fails on its loss), once with a low `stop_buffer_fraction` (stopped), once aborted in a
phase. Each report, opened in Chromium at 1920×1080, states the reason and every metric's why on the
first screen, before any phase output; the loss is reconciled near the top; the incident report names
the moments and the configuration that mattered and says what to change.

Screenshots go to ``tests/artifacts/report-*.png`` (ignored by git): look at them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runtools import archive_of, run_gameday, scorecard

from gamedaylib.lab.client import Lab
from gamedaylib.report import remote_loads

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
SCREEN = {"width": 1920, "height": 1080}
FLAW = {"lab_buffer_capacity": 20, "lab_overflow": "drop"}
RUNS = {  # name -> (extra parameters, exit status)
    "fail": ({"stop_buffer_fraction": 1.0}, 1),
    "stopped": ({"stop_buffer_fraction": 0.3}, 1),
    "aborted": ({"stop_buffer_fraction": 1.0, "fault_phase": "heal"}, 2),
}
MICROSECONDS = re.compile(r"\d{2}:\d{2}:\d{2}\.\d{3,}")


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The three runs, one after another on one flawed lab (stopped at the end)."""
    tmp = tmp_path_factory.mktemp("reports")
    lab_dir, out = tmp / "lab", tmp / "out"
    lab = Lab(lab_dir)
    found: dict[str, Path] = {}
    try:
        lab.up(dict(FLAW))
        for name, (extra, status) in RUNS.items():
            params = {**FLAW, "lab_dir": str(lab_dir), "partition_seconds": 12, **extra}
            args = [a for k, v in params.items() for a in ("-p", f"{k}={v}")]
            proc = run_gameday("run", *args, "--output-dir", str(out), timeout=500)
            assert proc.returncode == status, (name, proc.returncode, proc.stderr[-3000:])
            found[name] = archive_of(proc)
    finally:
        lab.down()
    yield found


def _read_top(path: Path, shot: Path) -> dict[str, Any]:
    """What the first screen of report.html holds, as Chromium lays it out at 1920×1080."""
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(viewport=SCREEN)
            context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
                ("file:", "data:")) else (outside.append(route.request.url), route.abort()))
            page = context.new_page()
            page.goto(path.as_uri())
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(shot))
            top = page.evaluate("""() => {
                const summary = document.querySelector('.gameday-summary');
                const cell = document.querySelector('.jp-Cell');
                const box = el => { const r = el.getBoundingClientRect(); return {top: r.top, bottom: r.bottom}; };
                return {
                    first: document.body.firstElementChild === summary,
                    before: !cell || !!(summary.compareDocumentPosition(cell) & Node.DOCUMENT_POSITION_FOLLOWING),
                    reason: summary.querySelector('.gameday-reason').innerText,
                    reasonBox: box(summary.querySelector('.gameday-reason')),
                    loss: summary.querySelector('.gameday-loss').innerText,
                    lossBox: box(summary.querySelector('.gameday-loss')),
                    links: [...summary.querySelectorAll('a')].map(a => a.getAttribute('href')),
                    text: summary.innerText,
                    rows: [...summary.querySelectorAll('tr[data-metric]')].map(tr => ({
                        name: tr.dataset.metric, why: tr.querySelector('.gameday-why').innerText,
                        status: tr.querySelector('.gameday-status').innerText,
                        background: getComputedStyle(tr.querySelector('.gameday-status')).backgroundColor,
                        ...box(tr)})),
                };
            }""")
        finally:
            browser.close()
    assert not outside, outside
    return top


@pytest.mark.parametrize("name", list(RUNS))
def test_the_first_screen_says_why_and_gives_every_metric_its_why(archives: dict[str, Path], name: str) -> None:
    archive = archives[name]
    card = scorecard(archive)
    top = _read_top(archive / "report.html", ARTIFACTS / f"report-{name}.png")
    assert top["first"] and top["before"], "the summary must come before any phase output"
    assert [r["name"] for r in top["rows"]] == [m["name"] for m in card["metrics"]] and len(top["rows"]) == 8
    for row in top["rows"]:
        assert row["why"].strip(), row
        assert row["bottom"] <= SCREEN["height"], f"{row['name']} is below the first screen"
    assert top["reasonBox"]["bottom"] <= SCREEN["height"]
    for row, metric in zip(top["rows"], card["metrics"]):
        if metric["status"] == "fail":
            assert row["status"].strip() == "✘ FAIL" and row["background"] == "rgb(176, 0, 32)", row
    assert not MICROSECONDS.search(top["text"])
    if name == "fail":
        assert card["verdict"] == "fail" and card["stopped_by"] is None
        assert top["reason"].startswith("Missed: Event Loss Count")
    elif name == "stopped":
        assert card["verdict"] == "fail" and card["stopped_by"]["condition"] == "stop_buffer_fraction"
        assert top["reason"].startswith("A stop condition ended the fault early: gateway buffer")
        assert "% full" in top["reason"] and "limit 30 %" in top["reason"]
    else:
        assert card["verdict"] == "aborted"
        assert top["reason"].startswith("The run did not reach its end (") and "fault_phase='heal'" in top["reason"]
        assert all(r["status"].strip() == "– not measured" or r["why"] for r in top["rows"])


def test_the_loss_is_reconciled_near_the_top(archives: dict[str, Path]) -> None:
    card = scorecard(archives["fail"])
    events = card["events"]
    assert events["canaries_lost"] > 0 and events["service_reported_dropped"] > 0
    top = _read_top(archives["fail"] / "report.html", ARTIFACTS / "report-fail-loss.png")
    assert top["lossBox"]["top"] < 1.5 * SCREEN["height"]
    loss = top["loss"]
    lost = events["canaries_lost"] + events["ground_truth_lost"]
    assert f"{lost} events were accepted and never stored: {events['canaries_lost']} canaries + " \
           f"{events['ground_truth_lost']} users' events" in loss
    assert f"{events['service_reported_dropped']:.0f}" in loss and "events_dropped_total" in loss
    loss_row = next(r for r in top["rows"] if r["name"] == "event_loss_count")
    assert f"{events['canaries_lost']} canaries + {events['ground_truth_lost']} users' events" in loss_row["why"]


def test_the_report_links_its_charts_and_shows_no_raw_bytes(archives: dict[str, Path]) -> None:
    for name, archive in archives.items():
        html = (archive / "report.html").read_text(encoding="utf-8")
        top = _read_top(archive / "report.html", ARTIFACTS / f"report-{name}.png")
        assert "timeline.png" in top["links"] and (archive / "timeline.png").is_file()
        if name != "aborted":
            assert "canaries.png" in top["links"] and (archive / "canaries.png").is_file()
        assert not re.search(r"\bb'[^']*\\n", html), "raw bytes in the report"
        assert not remote_loads(html)
    # the aborted run drew no chart of its own: the report draws the timeline, marks where it failed
    aborted = (archives["aborted"] / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64" in aborted.split("</section>", 1)[0]


def test_the_incident_report_is_enough_for_a_post_mortem(archives: dict[str, Path]) -> None:
    card = scorecard(archives["fail"])
    text = (archives["fail"] / "incident-report.md").read_text(encoding="utf-8")
    timeline = text.split("## Timeline", 1)[1].split("## Observations", 1)[0]
    for moment in ("alert fired: ", "gateway buffer full in its fullest replica", "the gateways start dropping",
                   "the gateways' last drop:", "fault confirmed in force (T+0)", "full recovery"):
        assert moment in timeline, moment
    dropped = f"{card['events']['service_reported_dropped']:.0f}"
    config = text.split("### Configuration that mattered", 1)[1].split("###", 1)[0]
    assert "`lab_buffer_capacity=20`" in config and "`lab_overflow=drop`" in config
    assert f"the gateways dropped {dropped} events" in config
    improvements = text.split("## Improvements for next gameday", 1)[1].split("##", 1)[0]
    assert "Fix: " not in improvements and "missed its target" not in improvements
    first = improvements.strip().splitlines()[0]
    assert first.startswith("- [ ] Event Loss Count") and f"dropped {dropped} events" in first
    assert "Size the gateway buffer" in first and "`events_dropped_total`" in first
    assert not MICROSECONDS.search(text.split("## Success metrics", 1)[0] + timeline)

    stopped = (archives["stopped"] / "incident-report.md").read_text(encoding="utf-8")
    assert "stop condition stop_buffer_fraction: gateway buffer" in stopped
    assert stopped.split("## Improvements for next gameday", 1)[1].strip().startswith(
        "- [ ] The gateway buffer reached the stop limit")
    aborted = (archives["aborted"] / "incident-report.md").read_text(encoding="utf-8")
    assert "**Verdict: ABORTED.** The run did not reach its end" in aborted
    assert "**phase failed: Partition Heals**" in aborted


def test_scorecards_keep_the_loss_parts(archives: dict[str, Path]) -> None:
    for name in ("fail", "stopped"):
        events = json.loads((archives[name] / "scorecard.json").read_text())["events"]
        assert {"canaries_lost", "service_reported_dropped", "ground_truth_lost"} <= set(events)
