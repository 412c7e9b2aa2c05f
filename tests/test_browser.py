"""A facilitator's session in a real browser: JupyterLab on 127.0.0.1 driven through Debian's Chromium
with Playwright (no browser download), every request outside this machine refused.

- A small notebook of our own with the real banner and a live form: type an observation, press
  Record, find it in the journal.
- The real runbook, live, against a real lab (short partition), on a 1920×1080 screen: every phase cell
  run as a facilitator would, *acknowledged* pressed after the incident-response cell, then success
  metrics, finish; the notebook saved and `gameday archive` run. The success-metrics cell, scorecard.json
  and report.html agree on a measured Team Response Time, and the live report holds no widget text.

Screenshots go to ``tests/artifacts/`` (ignored by git): look at them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import nbformat
import pytest
from runtools import run_gameday, scorecard

from gamedaylib.clock import parse_time
from gamedaylib.report import remote_loads

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
QUESTION = "Did circuit breakers engage?"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def own_notebook(folder: Path, journal: Path) -> Path:
    """Banner + live observation form, using the real library."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# GAMEDAY-001 facilitator screen (browser test)"),
        nbformat.v4.new_code_cell(
            "from gamedaylib.journal import Journal\n"
            "from gamedaylib import forms\n"
            "from gamedaylib.banner import Banner\n"
            "from gamedaylib.gamedays.nats_partition.playbook import PLAYBOOK\n"
            "from gamedaylib.scenario import Tile\n"
            f"journal = Journal({str(journal)!r})"
        ),
        nbformat.v4.new_code_cell(
            "Banner('Event Buffering', 'T+05:12', (Tile('partition', 'ACTIVE', 'alarm'), Tile('consumer lag', '1,234'),\n"
            "       Tile('gateway buffer', '56', 'warn'), Tile('canaries lost', '0', 'ok')), 'GAMEDAY-001', 'alarm')"
        ),
        nbformat.v4.new_code_cell("form = forms.observation_form(journal, PLAYBOOK, 'buffering', answers=None, live=True)"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "facilitator.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture()
def jupyter(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """JupyterLab on 127.0.0.1 with a random token, isolated config; killed in finally."""
    root = tmp_path / "root"
    root.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "HOME": str(home),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "PYTHONWARNINGS": "ignore",
    }
    # no "news" prompt, no update check: nothing leaves the machine
    overrides = home / "settings" / "@jupyterlab" / "apputils-extension"
    overrides.mkdir(parents=True)
    (overrides / "notification.jupyterlab-settings").write_text(
        json.dumps({"checkForUpdates": False, "fetchNews": "false"})
    )
    tracker = home / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    # every cell rendered (no windowing): a cell scrolled out of view still shows its prompt and outputs
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"autoStartDefaultKernel": True,
                                                                     "windowingMode": "none"}))
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "jupyter.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1",
                f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                "--ServerApp.port_retries=0", "--allow-root", "--ServerApp.terminals_enabled=False",
                "--LabApp.extension_manager=readonly", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            stdout=log, stderr=log, env=env, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("JupyterLab did not start:\n" + (ARTIFACTS / "jupyter.log").read_text()[-3000:])
            time.sleep(0.5)
        yield base, token, root
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def start_session(base: str, token: str, path: str) -> None:
    """Start the notebook's kernel through the REST API, so the page attaches to it instead of
    racing to start its own (JupyterLab then asks "Select Kernel")."""
    body = json.dumps({"path": path, "name": path, "type": "notebook", "kernel": {"name": "python3"}}).encode()
    request = urllib.request.Request(
        f"{base}/api/sessions", data=body, method="POST",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status in (200, 201)


def dismiss_kernel_dialog(page) -> None:
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    if dialog.count():
        dialog.locator("button", has_text="Select").click()


def wait_until_idle(page, timeout: float = 90) -> None:
    """Wait until the notebook's kernel is connected and idle (and stays so for a second)."""
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    idle_since = None
    while True:
        dismiss_kernel_dialog(page)
        if page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count():
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 1.0:
                return
        else:
            idle_since = None
        assert time.monotonic() < deadline, "the kernel never became idle"
        time.sleep(0.3)


def run_cells(page, indices: list[int], timeout: float = 120) -> None:
    """Run the code cells at ``indices`` one at a time (select, toolbar "Run"), each to completion,
    and fail on a traceback. A run request lost while the kernel connects is sent again."""
    for i in indices:
        cell = page.locator(".jp-Notebook .jp-Cell").nth(i)
        prompt = cell.locator(".jp-InputPrompt")
        deadline = time.monotonic() + timeout
        sent = float("-inf")
        while not re.search(r"\[\d+\]", prompt.text_content() or ""):
            dismiss_kernel_dialog(page)
            text = prompt.text_content() or ""
            if "*" not in text and time.monotonic() - sent > 5:
                prompt.click()
                page.locator(".jp-NotebookPanel-toolbar [data-command='notebook:run-cell-and-select-next']").click()
                sent = time.monotonic()
            assert time.monotonic() < deadline, f"cell {i} did not finish within {timeout:g} s"
            time.sleep(0.2)
        assert "Traceback" not in (cell.text_content() or ""), cell.text_content()


def test_facilitator_records_an_observation_in_the_browser(jupyter: tuple[str, str, Path], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    base, token, root = jupyter
    journal = tmp_path / "journal.jsonl"
    notebook = own_notebook(root, journal)
    ARTIFACTS.mkdir(exist_ok=True)
    answer = f"yes, opened after ~3 s (browser {secrets.token_hex(3)})"
    outside: list[str] = []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})

            def local_only(route) -> None:
                host = urlsplit(route.request.url).hostname
                if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            context.route("**/*", local_only)
            page = context.new_page()
            page.goto(f"{base}/lab/tree/{notebook.name}?token={token}", wait_until="domcontentloaded")
            wait_until_idle(page)
            try:
                run_cells(page, [1, 2, 3])
                banner = page.locator(".gameday-banner").first
                banner.wait_for(timeout=30_000)
            except BaseException:
                page.screenshot(path=str(ARTIFACTS / "failure.png"))
                raise
            banner.screenshot(path=str(ARTIFACTS / "status-banner.png"))

            row = page.locator(".jupyter-widgets.widget-textarea textarea")
            wait_for(lambda: row.count() == 4, 30, "the four question boxes")
            page.locator(".widget-html", has_text=QUESTION).first.wait_for(timeout=10_000)
            # the third question of the buffering phase
            row.nth(2).click()
            row.nth(2).fill(answer)
            page.locator("button", has_text="Record").first.click()

            def recorded() -> list[dict]:
                if not journal.exists():
                    return []
                entries = [json.loads(line) for line in journal.read_text().splitlines()]
                return [e for e in entries if e["kind"] == "observation" and e["answer"] == answer]

            (entry,) = wait_for(recorded, 30, "the answer in the journal")
            assert entry["question"] == QUESTION and entry["phase"] == "buffering"
            # the static table (what survives without a kernel) shows it too, updated in place
            page.locator(".gameday-static", has_text=answer).first.wait_for(timeout=15_000)
            page.screenshot(path=str(ARTIFACTS / "facilitator-page.png"), full_page=False)

        finally:
            browser.close()
    assert not outside, f"the page tried to reach outside this machine: {outside[:5]}"
    assert (ARTIFACTS / "status-banner.png").stat().st_size > 5_000


RUNBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "nats_partition_gameday.ipynb"
SCREEN = {"width": 1920, "height": 1080}
# widget reprs a report must never show (what an archived widget without its state falls back to)
WIDGET_TEXT = ("HBox(", "VBox(", "FloatProgress(", "Textarea(", "Button(", "Checkbox(", "IntProgress(")


def _set_param(source: str, name: str, value: object) -> str:
    """The parameters cell with ``name`` set to ``value`` (the line as the notebook declares it)."""
    pattern = re.compile(rf"^{name}: '[^']*' = .*$", re.MULTILINE)
    assert pattern.search(source), f"no parameter {name} in the parameters cell"
    return pattern.sub(f"{name} = {value!r}", source, count=1)


def _cell_index(nb: nbformat.NotebookNode, source: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.source.strip() == source)


def start_cell(page, index: int) -> None:
    """Select code cell ``index`` and run it (toolbar "Run"), without waiting for it to finish."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputPrompt").click()
    page.locator(".jp-NotebookPanel-toolbar [data-command='notebook:run-cell-and-select-next']").click()


def wait_cell(page, index: int, timeout: float) -> str:
    """Wait for cell ``index`` to finish (its prompt shows a number); its text, which has no traceback."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    prompt = cell.locator(".jp-InputPrompt")
    wait_for(lambda: re.search(r"\[\d+\]", prompt.text_content() or ""), timeout, f"cell {index} to finish")
    text = cell.text_content() or ""
    assert "Traceback" not in text, text[-3000:]
    return text


def show_top(page, locator) -> None:
    """Scroll so that ``locator`` is at the top of the screen (what the room sees)."""
    locator.evaluate("el => el.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)


def team_response_in(text: str) -> str:
    """The Team Response Time row's result (``52.3`` of "Team Response Time  <= 120 s  52.3 s  ✔ Pass")."""
    found = re.search(r"Team Response Time\s+<=\s*[\d.]+\s*s\s+(\d+(?:\.\d+)?)\s*s\b", text)
    assert found, text[-2000:]
    return found.group(1)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not RUNBOOK.exists(), reason="the runbook notebook does not exist yet")
def test_live_session_measures_team_response_and_archives_a_clean_report(
    jupyter: tuple[str, str, Path], tmp_path: Path
) -> None:
    """The runbook live in JupyterLab against a real lab, as a facilitator runs it (see the module)."""
    from playwright.sync_api import sync_playwright

    from gamedaylib.lab.client import Lab

    base, token, root = jupyter
    lab_dir, archive = tmp_path / "lab", tmp_path / "archive"
    nb = nbformat.read(RUNBOOK, as_version=4)
    params = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = nb.cells[params].source
    for name, value in (("lab_dir", str(lab_dir)), ("archive_dir", str(archive)), ("partition_seconds", 12.0)):
        source = _set_param(source, name, value)
    nb.cells[params].source = source
    cells = {phase: _cell_index(nb, f'gd.phase("{phase}")') for phase in
             ("preflight", "injection", "buffering", "heal", "replay", "rto", "rpo", "incident_response",
              "postmortem")}
    start = next(i for i, c in enumerate(nb.cells) if "Gameday.start" in c.source)
    metrics_cell, finish_cell, archive_cell = (_cell_index(nb, s) for s in
                                              ("gd.success_metrics()", "gd.finish()", "gd.archive()"))
    nbformat.write(nb, root / RUNBOOK.name)
    saved = root / RUNBOOK.name
    answer = f"lag rose within 2 s; retries logged ({secrets.token_hex(3)})"
    outside: list[str] = []

    lab = Lab(lab_dir)
    try:
        lab.up()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport=SCREEN)

                def local_only(route) -> None:
                    host = urlsplit(route.request.url).hostname
                    if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
                        route.continue_()
                    else:
                        outside.append(route.request.url)
                        route.abort()

                context.route("**/*", local_only)
                page = context.new_page()
                page.goto(f"{base}/lab/tree/{RUNBOOK.name}?token={token}", wait_until="domcontentloaded")
                try:
                    wait_until_idle(page)
                    page.keyboard.press("Escape")
                    page.keyboard.press("Control+b")  # the room sees the notebook, not the file browser
                    run_cells(page, [params, start, cells["preflight"], cells["injection"]], timeout=180)
                    # the buffering wait, as the room sees it: banner, progress, the phase's chart
                    start_cell(page, cells["buffering"])
                    buffering = page.locator(".jp-Notebook .jp-Cell").nth(cells["buffering"])
                    buffering.locator(".jp-OutputArea img").first.wait_for(timeout=60_000)
                    show_top(page, buffering.locator(".gameday-banner").first)
                    page.screenshot(path=str(ARTIFACTS / "live-buffering-wait.png"))
                    wait_cell(page, cells["buffering"], 120)
                    # the phase's form, live: type an observation and record it
                    boxes = buffering.locator(".widget-textarea textarea")
                    wait_for(lambda: boxes.count() == 4, 30, "the four question boxes")
                    boxes.nth(0).fill(answer)  # "How quickly did consumer lag start increasing?"
                    buffering.locator("button", has_text="Record").click()
                    buffering.locator(".gameday-static", has_text=answer).first.wait_for(timeout=15_000)
                    show_top(page, buffering.locator(".gameday-banner").first)
                    page.screenshot(path=str(ARTIFACTS / "live-buffering-done.png"))
                    run_cells(page, [cells["heal"], cells["replay"], cells["rto"], cells["rpo"]], timeout=180)
                    run_cells(page, [cells["incident_response"]], timeout=180)
                    incident = page.locator(".jp-Notebook .jp-Cell").nth(cells["incident_response"])
                    pressed_at = time.time()
                    incident.locator("button", has_text="acknowledged").first.click()
                    journal = archive / "journal.jsonl"

                    def stamped() -> list[dict]:
                        entries = [json.loads(x) for x in journal.read_text().splitlines()] if journal.exists() else []
                        return [e for e in entries if e["kind"] == "stamp" and e["stamp"] == "acknowledged"]

                    (stamp,) = wait_for(stamped, 30, "the acknowledged stamp in the journal")
                    incident.locator(".gameday-static", has_text=stamp["at"][:19]).first.wait_for(timeout=15_000)
                    show_top(page, incident.locator(".gameday-banner").first)
                    page.screenshot(path=str(ARTIFACTS / "live-incident-response.png"))
                    run_cells(page, [cells["postmortem"], metrics_cell, finish_cell, archive_cell], timeout=180)
                    success = page.locator(".jp-Notebook .jp-Cell").nth(metrics_cell)
                    show_top(page, success)
                    page.screenshot(path=str(ARTIFACTS / "live-success-metrics.png"))
                    verdict = page.locator(".jp-Notebook .jp-Cell").nth(finish_cell).locator(".gameday-verdict")
                    verdict.first.wait_for(timeout=30_000)
                    show_top(page, verdict.first)
                    page.screenshot(path=str(ARTIFACTS / "live-verdict.png"))
                    live_value = team_response_in(success.inner_text())
                    page.locator(".jp-NotebookPanel-toolbar [data-command='docmanager:save']").click()

                    def saved_with_outputs() -> bool:
                        # headless Chromium draws a frame only when asked: JupyterLab's save waits for one
                        page.screenshot(clip={"x": 0, "y": 0, "width": 8, "height": 8})
                        text = saved.read_text()
                        return "gameday-verdict" in text and "gameday archive" in text

                    wait_for(saved_with_outputs, 120, "the saved notebook with its outputs", interval=1.0)
                except BaseException:
                    page.screenshot(path=str(ARTIFACTS / "live-failure.png"), full_page=True)
                    raise
            finally:
                browser.close()
    finally:
        lab.down()
    assert not outside, f"the page tried to reach outside this machine: {outside[:5]}"

    done = run_gameday("archive", str(archive), "--notebook", str(saved), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    card = scorecard(archive)
    team = next(m for m in card["metrics"] if m["name"] == "team_response_seconds")
    assert team["status"] in ("pass", "fail") and team["value"] is not None, team
    assert stamp["source"] == "button" and abs(parse_time(stamp["at"]).timestamp() - pressed_at) < 30
    assert float(live_value) == pytest.approx(team["value"]), (live_value, team)
    report = (archive / "report.html").read_text(encoding="utf-8")
    row = re.search(r"<tr data-metric='team_response_seconds'>(.*?)</tr>", report, re.DOTALL)
    assert row, "the report's summary has no Team Response Time row"
    assert re.search(rf">{re.escape(live_value)} s<", row.group(1)), row.group(1)
    assert not [w for w in WIDGET_TEXT if w in report], [w for w in WIDGET_TEXT if w in report]
    body = report.split("<body", 1)[1]
    assert body.index("class='gameday-summary'") < body.index('class="jp-Cell')  # the summary before any phase
    assert not remote_loads(report)
    # the archived notebook keeps the finished waits as static lines, never a widget's repr
    kept = json.dumps(nbformat.read(archive / "runbook.ipynb", as_version=4).cells)
    assert "partition half-way" in kept and not [w for w in WIDGET_TEXT if w in kept]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport=SCREEN).new_page()
            page.goto((archive / "report.html").as_uri())
            page.screenshot(path=str(ARTIFACTS / "report-live-pass.png"))
        finally:
            browser.close()
