"""``report.html``: the executed notebook as a page an analyst reads without a kernel or network.

Code cells hidden, images embedded, widget state dropped, nothing loaded from elsewhere; the top of
the page is the verdict and every metric at a glance (from the archive's ``scorecard.json``). A live
session's archive is completed the same way from the notebook the facilitator saved, every string
in it masked by ``secrets``.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gamedaylib.archive import ARCHIVE_FILES, HTML_FILE, RUNBOOK_FILE, SCORECARD_FILE
from gamedaylib.exceptions import GamedayError
from gamedaylib.journal import JOURNAL_FILE
from gamedaylib.secrets import redact_notebook

__all__ = ["complete_live_archive", "remote_loads", "render_archive_html", "render_html", "strip_remote",
           "summary_html"]

_REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc=[\"']?(?:https?:)?//[^>]*>\s*</script>", re.IGNORECASE)
_REMOTE_LINK = re.compile(r"<link[^>]*\bhref=[\"']?(?:https?:)?//[^>]*>", re.IGNORECASE)
_INLINE_REMOTE_SCRIPT = re.compile(
    r"<script\b[^>]*>(?:(?!</script>).)*?[\"'](?:https?:)?//(?:(?!</script>).)*?</script>", re.DOTALL | re.IGNORECASE
)
_MATHJAX_BLOCK = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.DOTALL | re.IGNORECASE)


def render_html(notebook: Path, html_path: Path) -> Path:
    """``report.html``: code cells hidden, images embedded, nothing loaded from the network."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    nb.metadata.pop("widgets", None)  # widget state would pull the widget manager from a CDN
    exporter = HTMLExporter(template_name="lab")
    exporter.log.setLevel(logging.ERROR)  # our charts carry their own titles; nbconvert's alt-text notice is noise
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nb)
    card = html_path.parent / SCORECARD_FILE
    if card.exists():  # the archive's own report: the verdict first, for whoever reads only the top
        summary = summary_html(json.loads(card.read_text(encoding="utf-8")))
        body = re.sub(r"(<body\b[^>]*>)", lambda m: m.group(1) + summary, body, count=1)
    html_path.write_text(strip_remote(body), encoding="utf-8")
    return html_path


def render_archive_html(archive_dir: Path, blank_notebook: Path) -> Path:
    """The archive's ``report.html`` from its ``runbook.ipynb``; when the run left no readable notebook
    (it never started, or died mid-write), ``blank_notebook`` (the gameday's own) is copied in first."""
    import nbformat

    runbook = archive_dir / RUNBOOK_FILE
    try:
        nbformat.read(str(runbook), as_version=4)
    except (OSError, ValueError, nbformat.reader.NotJSONError):
        shutil.copyfile(blank_notebook, runbook)
    return render_html(runbook, archive_dir / HTML_FILE)


def complete_live_archive(archive_dir: Path, saved_notebook: Path) -> Path:
    """A live run's archive made whole: the notebook as the facilitator saved it, every string in it
    masked (``secrets.redact_notebook``), becomes ``runbook.ipynb``; ``report.html`` is rendered from it.

    Checks both inputs first and writes nothing when either is wrong."""
    import nbformat

    if not (archive_dir / JOURNAL_FILE).is_file():
        raise GamedayError(f"{archive_dir} is not a gameday archive (no {JOURNAL_FILE}); give the folder "
                           "the runbook's last cell printed")
    try:
        nb = nbformat.read(str(saved_notebook), as_version=4)
    except (OSError, ValueError, nbformat.reader.NotJSONError) as exc:
        raise GamedayError(f"cannot read the saved notebook {saved_notebook}: {exc}") from exc
    if not any(c.cell_type == "code" and c.get("outputs") for c in nb.cells):
        raise GamedayError(f"{saved_notebook} has no outputs: save the notebook after the live run, "
                           "before closing it")
    nb = nbformat.from_dict(redact_notebook(nb))
    nbformat.write(nb, str(archive_dir / RUNBOOK_FILE))
    return render_html(archive_dir / RUNBOOK_FILE, archive_dir / HTML_FILE)


_VERDICT_COLOURS = {"pass": "#1b7a2b", "fail": "#b3261e", "aborted": "#8a5300"}
_STATUS_MARKS = {"pass": "&#10004; pass", "fail": "&#10008; FAIL", "not_measured": "&ndash; not measured"}


def summary_html(card: Mapping[str, Any]) -> str:
    """The top of ``report.html``: verdict, run, and the success metrics at a glance."""
    from html import escape

    verdict = str(card.get("verdict", "?"))
    colour = _VERDICT_COLOURS.get(verdict, "#444")
    reason = f"<p style='margin:4px 0'>{escape(str(card['reason']))}</p>" if card.get("reason") else ""
    rows = []
    for m in card.get("metrics", []):
        value = "&mdash;" if m.get("value") is None else f"{escape(str(m['value']))} {escape(m.get('unit', ''))}"
        target = f"{escape(m.get('comparison', ''))} {escape(str(m.get('target', '')))} {escape(m.get('unit', ''))}"
        note = escape(m.get("reason", "")) if m.get("status") == "not_measured" else ""
        rows.append(
            "<tr>" + "".join(
                f"<td style='text-align:left;padding:3px 10px'>{c}</td>"
                for c in (escape(m.get("label", m.get("name", ""))) + ("" if m.get("required") else " <i>(info)</i>"),
                          target, value, _STATUS_MARKS.get(m.get("status"), escape(str(m.get("status")))), note)
            ) + "</tr>"
        )
    files = " &middot; ".join(f"<a href='{f}'>{f}</a>" for f in ARCHIVE_FILES if f != HTML_FILE)
    return (
        "<section class='gameday-summary' style='font-family:sans-serif;margin:16px 24px;padding:12px 16px;"
        f"border-left:8px solid {colour};background:#f6f7f9'>"
        f"<h1 style='margin:0 0 4px'>{escape(str(card.get('gameday_id', '')))}: verdict "
        f"<span style='color:{colour};text-transform:uppercase'>{escape(verdict)}</span></h1>"
        f"<p style='margin:4px 0'>run {escape(str(card.get('run_id', '')))} &middot; target "
        f"{escape(str(card.get('target', '')))} &middot; profile {escape(str(card.get('profile', '')))} &middot; "
        f"{escape(str(card.get('started_at', ''))[:19])} &rarr; {escape(str(card.get('finished_at', ''))[:19])} UTC</p>"
        f"{reason}"
        "<table style='border-collapse:collapse;margin-top:8px'><thead><tr>"
        + "".join(f"<th style='text-align:left;padding:3px 10px'>{h}</th>"
                  for h in ("metric", "target", "result", "status", "why not measured"))
        + f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "<p style='margin:8px 0 0;font-size:90%'>Metrics marked <i>(info)</i> are not required for a pass. "
        f"Details, evidence and charts follow below. Archive: {files}</p></section>"
    )


def strip_remote(html: str) -> str:
    """Remove every ``<script src>`` and ``<link href>`` that points off the machine."""
    html = _MATHJAX_BLOCK.sub("", html)
    html = _REMOTE_SCRIPT.sub("", html)
    html = _INLINE_REMOTE_SCRIPT.sub("", html)
    return _REMOTE_LINK.sub("", html)


def remote_loads(html: str) -> list[str]:
    """What in ``html`` would be fetched from the network when opened (empty = none)."""
    pattern = re.compile(
        r"<(?:script|img|iframe|link|source|video|audio)\b[^>]*\b(?:src|href)=[\"']?((?:https?:)?//[^\"' >]+)", re.IGNORECASE
    )
    found = pattern.findall(html)
    for script in re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.DOTALL | re.IGNORECASE):
        found += re.findall(r"[\"']((?:https?:)?//[^\"']+)[\"']", script)
    found += re.findall(r"@import\s+url\([\"']?((?:https?:)?//[^)\"']+)", html, re.IGNORECASE)
    return found
