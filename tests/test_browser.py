"""A facilitator's session in a real browser: JupyterLab on 127.0.0.1 driven through Debian's Chromium
with Playwright (no browser download). Type an observation, press Record, find it in the journal;
save a screenshot of the status banner to ``tests/artifacts/status-banner.png``.

Until the runbook notebook exists this drives a small notebook of our own that uses the real
``gamedaylib.banner`` and ``gamedaylib.forms``.
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
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"autoStartDefaultKernel": True}))
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
        while not re.search(r"\[\d+\]", prompt.inner_text() or ""):
            dismiss_kernel_dialog(page)
            text = prompt.inner_text() or ""
            if "*" not in text and time.monotonic() - sent > 5:
                prompt.click()
                page.locator(".jp-NotebookPanel-toolbar [data-command='notebook:run-cell-and-select-next']").click()
                sent = time.monotonic()
            assert time.monotonic() < deadline, f"cell {i} did not finish within {timeout:g} s"
            time.sleep(0.2)
        assert "Traceback" not in cell.inner_text(), cell.inner_text()


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


def add_cell_below(page, index: int, code: str) -> None:
    """What a facilitator does: select a cell, insert one below (B), type into it."""
    page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    new = page.locator(".jp-Notebook .jp-Cell").nth(index + 1)
    new.locator(".cm-content").click()
    page.keyboard.type(code)
    page.keyboard.press("Escape")


@pytest.mark.skipif(not RUNBOOK.exists(), reason="the runbook notebook does not exist yet")
def test_runbook_preflight_and_an_observation_in_the_browser(
    jupyter: tuple[str, str, Path], tmp_path: Path
) -> None:
    """The real runbook against a real lab: parameters, start and pre-flight cells run in JupyterLab;
    the facilitator adds a form cell, types an observation, presses Record; it is in the journal."""
    from playwright.sync_api import sync_playwright

    from gamedaylib.lab.client import Lab

    base, token, root = jupyter
    lab_dir, archive = tmp_path / "lab", tmp_path / "archive"
    nb = nbformat.read(RUNBOOK, as_version=4)
    params = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = nb.cells[params].source
    assert "lab_dir: 'str' = '.gameday/lab'" in source and "archive_dir: 'str' = ''" in source
    nb.cells[params].source = source.replace("lab_dir: 'str' = '.gameday/lab'", f"lab_dir = {str(lab_dir)!r}").replace(
        "archive_dir: 'str' = ''", f"archive_dir = {str(archive)!r}"
    )
    start = next(i for i, c in enumerate(nb.cells) if "Gameday.start" in c.source)
    preflight = next(i for i, c in enumerate(nb.cells) if c.source.strip() == 'gd.phase("preflight")')
    nbformat.write(nb, root / RUNBOOK.name)
    answer = f"lag rose within 2 s; retries logged ({secrets.token_hex(3)})"
    outside: list[str] = []

    lab = Lab(lab_dir)
    try:
        lab.up()
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
                page.goto(f"{base}/lab/tree/{RUNBOOK.name}?token={token}", wait_until="domcontentloaded")
                try:
                    wait_until_idle(page)
                    run_cells(page, [params, start, preflight], timeout=180)
                    banner = page.locator(".jp-Notebook .jp-Cell").nth(preflight).locator(".gameday-banner").first
                    banner.wait_for(timeout=30_000)
                    # the banner at the top of the phase was redrawn in place with what pre-flight measured
                    wait_for(lambda: re.search(r"consumer lag \d", banner.get_attribute("aria-label") or ""), 15,
                             "the measured lag in the banner")
                    banner.screenshot(path=str(ARTIFACTS / "status-banner.png"))
                    # what the runbook's phases call: the phase's form, live
                    add_cell_below(page, preflight, "gd.run.observe('buffering')")
                    run_cells(page, [preflight + 1])
                    cell = page.locator(".jp-Notebook .jp-Cell").nth(preflight + 1)
                    boxes = cell.locator(".widget-textarea textarea")
                    wait_for(lambda: boxes.count() == 4, 30, "the four question boxes")
                    boxes.nth(0).fill(answer)  # "How quickly did consumer lag start increasing?"
                    cell.locator("button", has_text="Record").click()
                    journal = archive / "journal.jsonl"

                    def recorded() -> list[dict]:
                        entries = [json.loads(x) for x in journal.read_text().splitlines()] if journal.exists() else []
                        return [e for e in entries if e["kind"] == "observation" and e["answer"] == answer]

                    (entry,) = wait_for(recorded, 30, "the answer in the runbook's journal")
                    assert entry["question"] == "How quickly did consumer lag start increasing?"
                    assert entry["source"] == "form"
                    entries = [json.loads(x) for x in journal.read_text().splitlines()]
                    checklists = [e for e in entries if e["kind"] == "checklist"]
                    assert [(e["phase"], e["source"]) for e in checklists] == [("preflight", "pre-flight")]
                    cell.locator(".gameday-static", has_text=answer).first.wait_for(timeout=15_000)
                    page.screenshot(path=str(ARTIFACTS / "runbook-page.png"))
                except BaseException:
                    page.screenshot(path=str(ARTIFACTS / "runbook-failure.png"), full_page=True)
                    raise
            finally:
                browser.close()
    finally:
        lab.down()
    assert not outside, f"the page tried to reach outside this machine: {outside[:5]}"
