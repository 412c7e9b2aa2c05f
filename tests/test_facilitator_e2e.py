"""The facilitator's side of a headless run, end to end: one `gameday run` against a real lab with the
team's answers given as parameters and the notification webhooks pointing at the lab's webhook sink.

Checks what an analyst and the team would: the answers, stamps and action items in the archived
notebook (read with nbformat, no widget state), in report.html and in incident-report.md; the open
questions; action-items.csv; and the real HTTP posts the sink received (run id, phase, time), while
the webhook URLs appear nowhere in the archive."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from runtools import GAMEDAY, archive_of, journal, metrics, scorecard

from gamedaylib.gamedays import scenario
from gamedaylib.lab.client import Lab
from gamedaylib.lab.sink import read_posts
from gamedaylib.notebook import LIVE_ONLY_TAG, PARAMETERS_TAG
from gamedaylib.report import remote_loads

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

SECRET = "T0KEN-do-not-archive-7f3a"
PEOPLE: dict[str, Any] = {
    "observations": {
        "buffering": {"Did circuit breakers engage?": "Breaker opened after 3 retries on api-gateway"},
        "postmortem": {"What went well?": "Nobody lost an event; replay took under a minute"},
    },
    "stamps": {"alert_seen": 5, "acknowledged": 25},
    "action_items": [{"title": "Page on consumer lag above 1000", "owner": "sre-oncall", "due": "2026-03-01",
                      "ticket": "OPS-4242"}],
    "checklist": {"Backup": True, "Rollback": True},
    "notify_webhook_env": "GAMEDAY_TEST_SLACK_URL",
    "status_page_webhook_env": "GAMEDAY_TEST_STATUS_URL",
}


@dataclass
class Run:
    proc: subprocess.CompletedProcess[str]
    archive: Path
    lab_dir: Path
    urls: tuple[str, str]
    posts: list[dict[str, Any]]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("facilitator")
    lab_dir = tmp / "lab"
    lab = Lab(lab_dir)
    try:
        lab.up()
        status = json.loads(subprocess.run(
            [GAMEDAY, "lab", "status", "--json", "--lab-dir", str(lab_dir)],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout)
        slack = f"{status['sink_url']}/slack/{SECRET}"
        status_page = f"{status['sink_url']}/statuspage/{SECRET}"
        params = tmp / "people.yaml"
        params.write_text(yaml.safe_dump({**PEOPLE, "lab_dir": str(lab_dir), "partition_seconds": 8}))
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "GAMEDAY_TEST_SLACK_URL": slack,
               "GAMEDAY_TEST_STATUS_URL": status_page}
        proc = subprocess.run(
            [GAMEDAY, "run", "--params", str(params), "--output-dir", str(tmp / "out")],
            capture_output=True, text=True, timeout=420, check=False, env=env,
        )
        posts = read_posts(lab_dir, "/slack") + read_posts(lab_dir, "/statuspage")
    finally:
        lab.down()
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    yield Run(proc, archive_of(proc), lab_dir, (slack, status_page), posts)


def _notebook_outputs(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)  # what a reader without widget state sees
    return "\n".join(
        str(o.get("text", "")) + "\n".join(str(v) for k, v in o.get("data", {}).items() if k.startswith("text/"))
        for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )


def test_headless_people_answers_in_notebook_report_and_incident(run: Run) -> None:
    """Observations, stamps, action items given as parameters appear verbatim in runbook.ipynb outputs,
    report.html and incident-report.md; unanswered questions are listed as open; action-items.csv."""
    outputs = _notebook_outputs(run.archive / "runbook.ipynb")
    html = (run.archive / "report.html").read_text(encoding="utf-8")
    report = (run.archive / "incident-report.md").read_text(encoding="utf-8")
    for phase_answers in PEOPLE["observations"].values():
        for answer in phase_answers.values():
            assert answer in outputs and answer in html and answer in report, answer
    for text in ("Page on consumer lag above 1000", "OPS-4242", "sre-oncall"):
        assert text in outputs and text in html and text in report, text
    # the stamps: given as seconds after T+0, shown as T-offsets in all three
    for offset in ("T+00:05", "T+00:25"):
        assert offset in outputs and offset in html and offset in report, offset
    assert "- **What could be improved?** _open_" in report
    assert "Were all buffered events delivered?" in report.split("## Open questions", 1)[1]
    with open(run.archive / "action-items.csv", newline="", encoding="utf-8") as fh:
        assert [(r["title"], r["ticket"]) for r in csv.DictReader(fh)] == [
            ("Page on consumer lag above 1000", "OPS-4242")]
    # the checklist state was journaled at pre-flight; team response from the stamps
    entries = journal(run.archive)
    checklist = [e for e in entries if e["kind"] == "checklist"]
    assert len(checklist) == 1 and checklist[0]["phase"] == "preflight" and not checklist[0]["complete"]
    team = metrics(scorecard(run.archive))["team_response_seconds"]
    assert team["status"] in ("pass", "fail"), team
    assert "acknowledged" in team["evidence"]
    # answers are journaled once each, not per display
    obs = [e for e in entries if e["kind"] == "observation"]
    assert len(obs) == 2


def test_notifications_reach_the_webhook_sink_and_urls_stay_out_of_the_archive(run: Run) -> None:
    run_id = scorecard(run.archive)["run_id"]
    slack = [p["body"] for p in run.posts if p["path"].startswith("/slack")]
    status = [p["body"] for p in run.posts if p["path"].startswith("/statuspage")]
    assert [b["event"] for b in slack] == ["chaos_start", "heal", "end"], slack
    assert [b["status"] for b in status] == ["maintenance", "monitoring", "resolved"], status
    for body in slack + status:
        assert body["run_id"] == run_id and body["gameday_id"] == "GAMEDAY-001"
        datetime.fromisoformat(body["time"])
    assert [b["phase"] for b in slack[:2]] == ["injection", "heal"]
    assert slack[2]["phase"], slack[2]
    assert run_id in slack[0]["text"]
    journaled = [e for e in journal(run.archive) if e["kind"] == "notification"]
    assert len(journaled) == 6 and all(e["ok"] for e in journaled), journaled
    for path in run.archive.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data, path
            for url in run.urls:
                assert url.encode() not in data, path


def test_live_run_all_waits_shows_progress_and_redraws_in_place(tmp_path: Path) -> None:
    """The notebook run top to bottom as a live session would ("Run All"; nbclient cannot answer input
    like JupyterLab, so ``live = True`` says it is a person's screen): the waits block until the
    partition has really run (never raced past), show a progress widget (left as a static line when
    done) and a chart instead of progress lines, and the forms wait for the team (questions stay open)."""
    import time

    from nbclient import NotebookClient

    notebook = scenario("GAMEDAY-001").notebook
    lab_dir, archive = tmp_path / "lab", tmp_path / "archive"
    nb = nbformat.read(notebook, as_version=4)
    nb.cells = [c for c in nb.cells if LIVE_ONLY_TAG not in c.metadata.get("tags", [])]
    cell = next(c for c in nb.cells if PARAMETERS_TAG in c.metadata.get("tags", []))
    cell.source += (f"\nlab_dir = {str(lab_dir)!r}\narchive_dir = {str(archive)!r}\npartition_seconds = 8\n"
                    "live = True\n")
    lab = Lab(lab_dir)
    try:
        lab.up()
        started = time.monotonic()
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        took = time.monotonic() - started
    finally:
        lab.down()
    entries = journal(archive)
    assert any(e["kind"] == "run.finished" for e in entries)
    t0 = next(datetime.fromisoformat(e["t0"]) for e in entries if e["kind"] == "fault.active")
    healed = next(datetime.fromisoformat(e["at"]) for e in entries if e["kind"] == "fault.healed")
    assert (healed - t0).total_seconds() >= 8 and took >= 8  # the heal waited for the partition to run
    by_call = {c.source.strip(): c.outputs for c in nb.cells if c.cell_type == "code"}
    buffering, heal, replay = (by_call[f'gd.phase("{p}")'] for p in ("buffering", "heal", "replay"))
    assert not [o for o in buffering + heal + replay if o.output_type == "stream"]  # live: no progress lines
    assert [o for o in buffering if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]  # the form
    # a finished wait's progress bar is replaced by a static line: no widget text left in the notebook
    waited = [o for o in heal if re.match(r"✔ partition running: (\d+) of \1 s, reached",
                                          o.get("data", {}).get("text/markdown", ""))]
    assert waited, [o.get("data", {}).keys() for o in heal]
    assert not [o for o in heal if "HBox(" in str(o.get("data", {}).get("text/plain", ""))]
    assert [o for o in buffering if "image/png" in o.get("data", {})]  # the live chart
    card = scorecard(archive)
    team = metrics(card)["team_response_seconds"]
    assert team["status"] == "not_measured" and "acknowledged" in team["evidence"]
    assert not [e for e in entries if e["kind"] == "observation"]  # nobody typed: all open
    checklist = [e for e in entries if e["kind"] == "checklist"]
    assert [(e["phase"], e["source"]) for e in checklist] == [("preflight", "pre-flight")]

    # the last cell tells the facilitator how to finish the archive; doing so adds the notebook and
    # report.html, secrets masked and nothing loaded from the network
    finish = "".join(o.get("data", {}).get("text/markdown", "") for o in by_call["gd.archive()"])
    assert f"gameday archive {archive}" in finish
    saved = tmp_path / "saved.ipynb"
    by_call["gd.finish()"].append(nbformat.v4.new_output("stream", text=f"dsn postgresql://u:{SECRET}@db/x\n"))
    nbformat.write(nb, saved)
    proc = subprocess.run([GAMEDAY, "archive", str(archive), "--notebook", str(saved)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(archive)
    html = (archive / "report.html").read_text(encoding="utf-8")
    assert "verdict" in html.lower() and "gd.finish()" not in html and remote_loads(html) == []
    archived = nbformat.read(archive / "runbook.ipynb", as_version=4)
    assert [c for c in archived.cells if c.cell_type == "code" and c.outputs]
    assert SECRET not in (archive / "runbook.ipynb").read_text(encoding="utf-8") and SECRET not in html
