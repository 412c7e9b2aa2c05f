from __future__ import annotations

import json

import jsonschema
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from gamedaylib import archive
from gamedaylib.journal import Journal
from gamedaylib.parameters import validate
from gamedaylib.scorecard import SCHEMA


def test_finalize_marks_an_unfinished_run_aborted_and_keeps_what_was_measured(tmp_path) -> None:
    params = validate({"archive_dir": str(tmp_path)})
    j = Journal(tmp_path / archive.JOURNAL_FILE)
    j.record("run.started", run_id=params["run_id"])
    j.record("measurement", name="rto_seconds", value=12.0, target=120, comparison="<=", status="pass",
             evidence="t0->recovered", unit="s")
    card = archive.finalize(tmp_path, params, archive.Execution(False, "DeadKernelError: kernel died"))
    jsonschema.validate(card, SCHEMA)
    assert card["verdict"] == "aborted"
    assert "kernel died" in card["reason"]
    by_name = {m["name"]: m for m in card["metrics"]}
    assert by_name["rto_seconds"]["value"] == 12.0
    assert by_name["rpo_seconds"]["status"] == "not_measured"
    assert json.loads((tmp_path / "scorecard.json").read_text())["verdict"] == "aborted"
    for name in ("journal.jsonl", "scorecard.json", "samples.csv", "incident-report.md", "params.yaml"):
        assert (tmp_path / name).exists(), name
    assert "ABORTED" in (tmp_path / "incident-report.md").read_text()
    assert Journal.read(tmp_path / archive.JOURNAL_FILE)
    kinds = [e["kind"] for e in Journal.read(tmp_path / archive.JOURNAL_FILE)]
    assert kinds[-1] == "run.finished"


def test_report_html_hides_code_and_loads_nothing_from_the_network(tmp_path) -> None:
    nb = new_notebook(cells=[
        new_markdown_cell("# Title\n\nSee [Grafana](https://grafana.example.com/d/x)."),
        new_code_cell("secret_code_marker = 1", outputs=[new_output("display_data", data={"text/markdown": "**shown**"})]),
    ])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                            "version_minor": 0}}
    path = tmp_path / "runbook.ipynb"
    nbformat.write(nb, str(path))
    html = archive.render_html(path, tmp_path / "report.html").read_text()
    assert "secret_code_marker" not in html
    assert "shown" in html
    assert archive.remote_loads(html) == []
    assert "grafana.example.com" in html  # a link is not a load


def test_report_html_opens_with_the_verdict_and_the_metrics(tmp_path) -> None:
    """A reader who stops after the first screen sees the verdict, why, and every metric's status."""
    params = validate({"archive_dir": str(tmp_path)})
    Journal(tmp_path / archive.JOURNAL_FILE).record("run.started", run_id=params["run_id"])
    archive.finalize(tmp_path, params, archive.Execution(False, "interrupted (SIGINT/SIGTERM)"))
    nbformat.write(new_notebook(cells=[new_markdown_cell("# The runbook body")]), str(tmp_path / "runbook.ipynb"))
    html = archive.render_html(tmp_path / "runbook.ipynb", tmp_path / "report.html").read_text()
    top = html[: html.index("The runbook body")]
    assert "verdict" in top and "aborted" in top and "interrupted (SIGINT/SIGTERM)" in top
    assert "RTO (Recovery Time)" in top and "not measured" in top
    assert archive.remote_loads(html) == []


def test_remote_loads_detects_what_a_browser_would_fetch() -> None:
    assert archive.remote_loads('<script src="https://cdn.example/x.js"></script>')
    assert archive.remote_loads('<link rel="stylesheet" href="//cdn.example/x.css">')
    assert archive.remote_loads('<script>import("https://cdn.example/m.mjs")</script>')
    stripped = archive.strip_remote('<script src="https://cdn.example/x.js"></script>'
                                    '<script type="module">await import("https://cdn.example/m.mjs")</script>ok')
    assert archive.remote_loads(stripped) == [] and stripped.endswith("ok")


def _card(run_dir, run_id, started, verdict, rto):
    run_dir.mkdir(parents=True)
    (run_dir / "scorecard.json").write_text(json.dumps({
        "gameday_id": "GAMEDAY-001", "run_id": run_id, "target": "lab", "profile": "rehearsal",
        "started_at": started, "finished_at": started, "verdict": verdict,
        "metrics": [{"name": "rto_seconds", "value": rto, "target": 120, "comparison": "<=",
                     "status": "pass", "evidence": "e"},
                    {"name": "event_loss_count", "value": 3, "target": 0, "comparison": "==",
                     "status": "fail", "evidence": "e"}],
        "events": {}}))


def test_history_newest_last_with_chart(tmp_path) -> None:
    _card(tmp_path / "GAMEDAY-001" / "b", "b", "2026-01-02T00:00:00+00:00", "fail", 30.0)
    _card(tmp_path / "GAMEDAY-001" / "a", "a", "2026-01-01T00:00:00+00:00", "pass", 20.0)
    runs = archive.list_runs(tmp_path)
    assert [r.run_id for r in runs] == ["a", "b"]
    table = archive.history_table(runs)
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["run_id", "started_at", "target", "profile", "verdict"]
    assert lines[-1].startswith("b") and "fail" in lines[-1] and "3!" in lines[-1]
    chart = archive.history_chart(runs, tmp_path / "history.png")
    assert chart is not None and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert archive.history_chart(runs[:1], tmp_path / "one.png") is None
