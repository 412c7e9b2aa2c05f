"""report.html: the executed notebook as a page read without a kernel or network, opening with the
verdict and every metric's why; a live session's archive completed from the saved notebook, masked."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from gamedaylib import archive
from gamedaylib.exceptions import GamedayError
from gamedaylib.gamedays.nats_partition import SCENARIO
from gamedaylib.gamedays.nats_partition.params import NatsPartitionParams
from gamedaylib.gamedays.nats_partition.playbook import PLAYBOOK
from gamedaylib.journal import JOURNAL_FILE, Journal
from gamedaylib.parameters import as_dict, validate
from gamedaylib.report import (
    complete_live_archive,
    remote_loads,
    render_archive_html,
    render_html,
    strip_remote,
    summary_html,
)

pytestmark = pytest.mark.timeout(120)

PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                                     "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"))
STOPPED = {"condition": "stop_buffer_fraction", "value": 1.0, "threshold": 0.9, "at": "2026-01-01T00:00:04+00:00",
           "words": "gateway buffer 100 % full in its fullest replica (20 events held of 20) at T+00:04; limit 90 %",
           "blind": False}


def stopped_card() -> dict:
    return {"gameday_id": "GAMEDAY-001", "run_id": "r9", "target": "lab", "profile": "rehearsal",
            "started_at": "2026-01-01T00:00:00.123456+00:00", "finished_at": "2026-01-01T00:01:00+00:00",
            "verdict": "fail", "reason": STOPPED["words"], "stopped_by": STOPPED,
            "metrics": [{"name": "event_loss_count", "label": "Event Loss Count", "value": 455, "target": 0,
                         "comparison": "==", "status": "fail", "evidence": "at least 455", "unit": "events",
                         "required": True},
                        {"name": "alert_fire_seconds", "label": "Alert Fire Time", "value": None, "target": 60,
                         "comparison": "<=", "status": "not_measured", "evidence": "not measured: no Alertmanager",
                         "reason": "no Alertmanager <x>", "unit": "s", "required": False}],
            "events": {}}


def test_report_html_hides_code_drops_widget_state_and_loads_nothing(tmp_path: Path) -> None:
    nb = new_notebook(cells=[
        new_markdown_cell("# Title\n\nSee [Grafana](https://grafana.example.com/d/x)."),
        new_code_cell("secret_code_marker = 1", outputs=[
            new_output("display_data", data={"text/markdown": "**shown**", "image/png": PNG.decode()})]),
    ])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                            "version_minor": 0}}
    path = tmp_path / "runbook.ipynb"
    nbformat.write(nb, str(path))
    html = render_html(path, tmp_path / "report.html").read_text()
    assert "secret_code_marker" not in html and "shown" in html
    assert "data:image/png;base64," in html  # images embedded
    assert remote_loads(html) == []
    assert "grafana.example.com" in html  # a link is not a load


def test_a_stopped_runs_report_says_why_and_every_metrics_why_before_any_phase(tmp_path: Path) -> None:
    """A reader who stops after the first screen sees the verdict, why in words with units, and every
    metric's status and reason (the summary comes before any phase output in the DOM)."""
    (tmp_path / archive.SCORECARD_FILE).write_text(json.dumps(stopped_card()))
    nbformat.write(new_notebook(cells=[new_markdown_cell("# The runbook body")]), str(tmp_path / "runbook.ipynb"))
    html = render_html(tmp_path / "runbook.ipynb", tmp_path / "report.html").read_text()
    top = html[: html.index("The runbook body")]
    assert "gameday-summary" in top and "verdict" in top and ">fail<" in top
    assert "gateway buffer 100 % full in its fullest replica (20 events held of 20) at T+00:04; limit 90 %" in top
    assert "Event Loss Count" in top and "455 events" in top and "&#10008; FAIL" in top
    assert "Alert Fire Time <span style='color:#555;font-size:85%'>(not required)</span>" in top
    assert "no Alertmanager &lt;x&gt;" in top
    assert "2026-01-01 00:00:00 UTC &rarr; 00:01:00 (60 s)" in top  # to the second, with the duration
    for name in archive.ARCHIVE_FILES:
        if name != archive.HTML_FILE:
            assert f"<a href='{name}' style=" in top
    assert remote_loads(html) == []


def test_summary_html_escapes_what_it_quotes() -> None:
    card = {**stopped_card(), "gameday_id": "<GD>", "reason": "<script>x</script>"}
    html = summary_html(card)
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;GD&gt;" in html


def test_remote_loads_detect_what_a_browser_would_fetch_and_strip_remote_removes_it() -> None:
    assert remote_loads('<script src="https://cdn.example/x.js"></script>')
    assert remote_loads('<link rel="stylesheet" href="//cdn.example/x.css">')
    assert remote_loads('<script>import("https://cdn.example/m.mjs")</script>')
    assert remote_loads("<style>@import url('https://fonts.example/f.css');</style>")
    assert remote_loads('<img src="https://tracker.example/p.gif">')
    assert remote_loads('<a href="https://example.com">a link</a>') == []
    stripped = strip_remote('<script src="https://cdn.example/x.js"></script>'
                            '<script type="module">await import("https://cdn.example/m.mjs")</script>'
                            '<link rel="stylesheet" href="https://cdn.example/x.css">ok')
    assert remote_loads(stripped) == [] and stripped.endswith("ok")


def test_an_archive_without_a_readable_notebook_gets_the_gamedays_own(tmp_path: Path) -> None:
    params = as_dict(validate(NatsPartitionParams, {"archive_dir": str(tmp_path), "run_id": "r1"}))
    archive.finalize(tmp_path, params, False, "the kernel died before the first cell", PLAYBOOK)
    (tmp_path / archive.RUNBOOK_FILE).write_text('{"cells": [', encoding="utf-8")  # died mid-write
    html = render_archive_html(tmp_path, SCENARIO.notebook).read_text()
    assert nbformat.read(str(tmp_path / archive.RUNBOOK_FILE), as_version=4).cells  # the blank notebook
    assert "the kernel died before the first cell" in html and "aborted" in html
    assert "Chaos Injection" in html and remote_loads(html) == []


def test_a_live_archive_is_completed_from_the_saved_notebook_masked(tmp_path: Path) -> None:
    Journal(tmp_path / JOURNAL_FILE).record("run.started", run_id="live-1")
    saved = tmp_path / "saved.ipynb"
    nb = new_notebook(cells=[new_code_cell("gd.phase('preflight')", outputs=[
        new_output("stream", name="stdout", text="connecting to postgresql://gameday:pw-l1ve-s3cret@db/events\n"),
        new_output("display_data", data={"image/png": PNG.decode(), "text/plain": "<Figure>"})])])
    nbformat.write(nb, str(saved))
    html = complete_live_archive(tmp_path, saved)
    kept = (tmp_path / archive.RUNBOOK_FILE).read_text()
    assert "pw-l1ve-s3cret" not in kept and "postgresql://gameday:***@db/events" in kept
    assert PNG.decode() in kept  # images are not masked
    assert html == tmp_path / archive.HTML_FILE and "pw-l1ve-s3cret" not in html.read_text()


def test_completing_a_live_archive_checks_both_inputs_and_writes_nothing_when_wrong(tmp_path: Path) -> None:
    not_an_archive = tmp_path / "somewhere"
    not_an_archive.mkdir()
    empty = tmp_path / "empty.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("gd.phase('preflight')")]), str(empty))
    with pytest.raises(GamedayError, match="not a gameday archive"):
        complete_live_archive(not_an_archive, empty)
    assert list(not_an_archive.iterdir()) == []
    run_dir = tmp_path / "run"
    Journal(run_dir / JOURNAL_FILE).record("run.started", run_id="live-2")
    with pytest.raises(GamedayError, match="has no outputs"):
        complete_live_archive(run_dir, empty)
    with pytest.raises(GamedayError, match="cannot read the saved notebook"):
        complete_live_archive(run_dir, tmp_path / "missing.ipynb")
    assert sorted(p.name for p in run_dir.iterdir()) == [JOURNAL_FILE]
