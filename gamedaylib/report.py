"""``report.html``: the executed notebook as a page an analyst reads without a kernel or network.

Code cells hidden, images embedded, nothing loaded from elsewhere, no widget text (``strip_widgets``).
The top of the page (``summary_html``, from the archive's ``scorecard.json`` and ``params.yaml``) is what
an analyst reads first, before any phase output: the verdict and why in words (an aborted or stopped
run says what happened), every metric with its one-line why and its status coloured, the loss
reconciled across its parts, the configuration that mattered, and links to the charts and files; a
run that stopped before drawing its timeline gets one drawn from samples.csv and the journal. Type is
large (inline styles, and the page's own ``<style>`` for the notebook's prose). A live session's
archive is completed the same way from the notebook the facilitator saved, every string in it masked
by ``secrets``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import yaml

from gamedaylib import findings
from gamedaylib.archive import (
    ARCHIVE_FILES,
    HTML_FILE,
    PARAMS_FILE,
    RUNBOOK_FILE,
    SAMPLES_FILE,
    SCORECARD_FILE,
)
from gamedaylib.clock import parse_time
from gamedaylib.exceptions import GamedayError
from gamedaylib.journal import JOURNAL_FILE, Journal
from gamedaylib.sampler import read_samples
from gamedaylib.secrets import redact_notebook

__all__ = ["complete_live_archive", "remote_loads", "render_archive_html", "render_html", "strip_remote",
           "strip_widgets", "summary_html"]

_REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc=[\"']?(?:https?:)?//[^>]*>\s*</script>", re.IGNORECASE)
_REMOTE_LINK = re.compile(r"<link[^>]*\bhref=[\"']?(?:https?:)?//[^>]*>", re.IGNORECASE)
_INLINE_REMOTE_SCRIPT = re.compile(
    r"<script\b[^>]*>(?:(?!</script>).)*?[\"'](?:https?:)?//(?:(?!</script>).)*?</script>", re.DOTALL | re.IGNORECASE
)
_MATHJAX_BLOCK = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.DOTALL | re.IGNORECASE)


def render_html(notebook: Path, html_path: Path) -> Path:
    """``report.html``: code cells hidden, images embedded, nothing loaded from the network, no widget
    text. In an archive, the summary (``summary_html``) comes first, before any phase's output."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    nb.metadata.pop("widgets", None)  # widget state would pull the widget manager from a CDN
    strip_widgets(nb)
    exporter = HTMLExporter(template_name="lab")
    exporter.log.setLevel(logging.ERROR)  # our charts carry their own titles; nbconvert's alt-text notice is noise
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nb)
    archive = html_path.parent
    card_path = archive / SCORECARD_FILE
    if card_path.exists():  # the archive's own report: the verdict first, for whoever reads only the top
        card = json.loads(card_path.read_text(encoding="utf-8"))
        drawn = _timeline_png(archive)  # first: the charts linked below include the one drawn here
        summary = summary_html(card, charts=_charts_of(archive), params=_params_of(archive), timeline_png=drawn)
        body = re.sub(r"(<body\b[^>]*>)", lambda m: m.group(1) + summary, body, count=1)
    body = re.sub(r"(</head>)", lambda m: PAGE_STYLE + m.group(1), body, count=1)
    html_path.write_text(strip_remote(body), encoding="utf-8")
    return html_path


_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
_WIDGET_REPR = re.compile(r"^\s*(?:[A-Z][A-Za-z]*(?:Box|Progress|Area|Button|Text|HTML|Checkbox|Slider|Dropdown|"
                          r"Label|Output|Tab|Accordion))\(")


def strip_widgets(nb: Any) -> None:
    """Every widget output made static (in place): the widget view is dropped; what it falls back to is
    kept only when it is words (a wait that never finished: "partition half-way: 3 of 10 s"), never a
    widget's repr (``HBox(children=(FloatProgress(...``) nor a form's placeholder (``<observation form
    ...>``): every form shows its values in the static table displayed right after it."""
    for cell in nb.cells:
        outputs = cell.get("outputs")
        if not outputs:
            continue
        kept = []
        for output in outputs:
            data = output.get("data")
            if data and _WIDGET_MIME in data:
                data.pop(_WIDGET_MIME, None)
                text = data.get("text/plain")
                text = ("".join(text) if isinstance(text, list) else str(text or "")).strip()
                if not text or text.startswith(("<", "[")) or _WIDGET_REPR.match(text):
                    continue
                data.clear()
                data["text/plain"] = text
            kept.append(output)
        cell["outputs"] = kept


def _charts_of(archive: Path) -> list[str]:
    return [name for name in CHART_FILES if (archive / name).is_file()]


def _params_of(archive: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load((archive / PARAMS_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _timeline_png(archive: Path) -> bytes | None:
    """The timeline drawn from ``samples.csv`` and the journal, for a run that stopped before the
    runbook drew its own (an aborted run); written to the archive as ``timeline.png`` too. A chart
    is optional: a failure is journaled, never raised."""
    path, samples = archive / CHART_FILES[0], archive / SAMPLES_FILE
    if path.exists() or not samples.is_file():
        return None
    from gamedaylib import charts  # matplotlib is loaded only when a chart is drawn

    journal = Journal(archive / JOURNAL_FILE)
    try:
        frame = read_samples(samples)
        if not len(frame):
            return None
        entries = journal.entries()
        t0 = findings.journal_t0(entries)
        gameday = next((str(e.get("gameday_id")) for e in entries if e.get("kind") == "run.started"), "")
        fig = charts.timeline(frame, entries, t0=t0, title=f"{gameday} timeline (from samples.csv)".strip())
        charts.save(fig, path)
    except (ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
        journal.record("error", error="chart", message=f"timeline.png for report.html: {exc}")
        return None
    return path.read_bytes()


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


_VERDICT_COLOURS = {"pass": "#1b6e20", "fail": "#b00020", "aborted": "#8a4b00"}
# status cells: a word and a colour (white on a dark colour: contrast at least 4.5:1)
_STATUS_CELLS = {
    "pass": ("&#10004; pass", "#e8f5e9", "#1b5e20"),
    "fail": ("&#10008; FAIL", "#b00020", "#ffffff"),
    "not_measured": ("&ndash; not measured", "#eceff1", "#37474f"),
}
_CELL = "text-align:left;vertical-align:top;padding:6px 14px;border-bottom:1px solid #d7dbe0"
_LINK = "color:#0b57d0;text-decoration:underline"
CHART_FILES = ("timeline.png", "canaries.png")
# the notebook's own prose and tables, larger in report.html (the page's own style: nothing external)
PAGE_STYLE = ("<style id='gameday-report-style'>:root{--jp-content-font-size1:18px;--jp-content-font-size0:17px;"
              "--jp-ui-font-size1:16px;--jp-code-font-size:16px;--jp-content-line-height:1.5}"
              ".jp-RenderedHTMLCommon table{font-size:17px}.jp-RenderedHTMLCommon td,"
              ".jp-RenderedHTMLCommon th{padding:6px 12px}</style>")


def summary_html(card: Mapping[str, Any], *, charts: Sequence[str] = (), params: Mapping[str, Any] | None = None,
                 timeline_png: bytes | None = None) -> str:
    """The top of ``report.html``, everything an analyst reads first: the verdict and why in words, every
    metric with its one-line why (failures coloured), the loss reconciled across its parts, the
    configuration that mattered, and links to the charts (``charts``: file names in the archive) and
    files. ``timeline_png`` is embedded (a run that stopped before drawing its own)."""
    verdict = str(card.get("verdict", "?"))
    colour = _VERDICT_COLOURS.get(verdict, "#424242")
    events = card.get("events") or {}
    rows = []
    for m in card.get("metrics", []):
        unit = escape(str(m.get("unit") or ""))
        value = "&mdash;" if m.get("value") is None else f"{escape(_num(m['value']))} {unit}"
        target = f"{escape(str(m.get('comparison', '')))} {escape(_num(m.get('target')))} {unit}"
        word, background, ink = _STATUS_CELLS.get(str(m.get("status")), (escape(str(m.get("status"))), "#ffffff",
                                                                          "#111111"))
        name = escape(str(m.get("label") or m.get("name", "")))
        if not m.get("required"):
            name += " <span style='color:#555;font-size:85%'>(not required)</span>"
        status = (f"<td class='gameday-status gameday-status-{escape(str(m.get('status')))}' style='{_CELL};"
                  f"background:{background};color:{ink};font-weight:700;white-space:nowrap'>{word}</td>")
        cells = [f"<td style='{_CELL};white-space:nowrap'>{name}</td>",
                 f"<td style='{_CELL};white-space:nowrap'>{target}</td>",
                 f"<td style='{_CELL};white-space:nowrap;font-weight:700'>{value}</td>", status,
                 f"<td class='gameday-why' style='{_CELL}'>{escape(findings.metric_why(m, events))}</td>"]
        rows.append(f"<tr data-metric='{escape(str(m.get('name', '')))}'>{''.join(cells)}</tr>")
    head = "".join(f"<th style='{_CELL};border-bottom:2px solid #555'>{h}</th>"
                   for h in ("metric", "target", "result", "status", "why"))
    loss = findings.loss_lines(events)
    measured = any(m.get("name") == "event_loss_count" and m.get("status") != "not_measured"
                   for m in card.get("metrics", []))
    loss_rows = "".join(
        f"<tr><td style='{_CELL}'>{escape(line.label)}</td><td style='{_CELL};font-weight:700'>"
        f"{'&mdash;' if line.value is None else escape(_num(line.value))}</td><td style='{_CELL}'>"
        f"{escape(line.counts)}</td></tr>" for line in loss)
    config = findings.configuration(params or {}, card) if params else []
    links = [f"<a href='{escape(f)}' style='{_LINK}'>{escape(f)}</a>" for f in charts]
    files = " &middot; ".join(f"<a href='{f}' style='{_LINK}'>{f}</a>" for f in ARCHIVE_FILES if f != HTML_FILE)
    started, finished = card.get("started_at"), card.get("finished_at")
    took = ""
    if started and finished:
        try:
            took = f" ({_duration(parse_time(str(finished)) - parse_time(str(started)))})"
        except ValueError:
            took = ""
    image = ""
    if timeline_png is not None:
        image = ("<img alt='the run\'s timeline (drawn from samples.csv and the journal)' "
                 f"src='data:image/png;base64,{base64.b64encode(timeline_png).decode()}' "
                 "style='max-width:100%;margin-top:12px'>")
    return (
        "<section class='gameday-summary' style='font-family:Helvetica,Arial,sans-serif;font-size:18px;"
        f"line-height:1.45;color:#111;margin:16px 24px;padding:16px 22px;border-left:14px solid {colour};"
        "background:#f6f7f9'>"
        "<div style='display:flex;align-items:center;gap:20px;flex-wrap:wrap'>"
        f"<span style='font-size:30px;font-weight:800'>{escape(str(card.get('gameday_id', '')))}</span>"
        f"<span class='gameday-verdict' style='background:{colour};color:#ffffff;font-size:38px;font-weight:800;"
        f"padding:2px 20px;border-radius:8px;letter-spacing:0.04em;text-transform:uppercase'>{escape(verdict)}</span>"
        f"<span style='font-size:18px;color:#333'>run {escape(str(card.get('run_id', '')))} &middot; target "
        f"{escape(str(card.get('target', '')))} &middot; profile {escape(str(card.get('profile', '')))} &middot; "
        f"{escape(findings.fmt_time(started))} &rarr; {escape(findings.fmt_time(finished, date=False))}"
        f"{escape(took)}</span></div>"
        f"<p class='gameday-reason' style='font-size:22px;font-weight:600;margin:12px 0 10px'>"
        f"{escape(findings.verdict_reason(card))}</p>"
        "<table class='gameday-metrics' style='border-collapse:collapse;font-size:18px;background:#ffffff'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "<h3 style='font-size:22px;margin:18px 0 6px'>Where the events went</h3>"
        f"<p class='gameday-loss' style='margin:4px 0 8px'>{escape(findings.loss_summary(card))}</p>"
        + (f"<table class='gameday-loss-parts' style='border-collapse:collapse;font-size:17px;background:#ffffff'>"
           f"<tbody>{loss_rows}</tbody></table>" if measured else "")
        + ("<h3 style='font-size:22px;margin:18px 0 6px'>Configuration that mattered</h3><ul style='margin:4px 0'>"
           + "".join(f"<li>{_code(c)}</li>" for c in config) + "</ul>" if config else "")
        + "<p style='margin:14px 0 0;font-size:17px'>"
        + (f"<b>Charts:</b> {' &middot; '.join(links)} &middot; " if links else "")
        + f"<b>Archive:</b> {files}. Metrics marked <i>(not required)</i> do not decide the verdict. The "
        "phases' checks, measurements, evidence and charts follow below.</p>"
        f"{image}</section>"
    )


def _num(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"
    return "" if value is None else str(value)


def _duration(delta: Any) -> str:
    seconds = max(0.0, delta.total_seconds())
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _code(text: str) -> str:
    """``a `b` c`` as HTML with ``<code>`` (the configuration lines name parameters that way)."""
    parts = escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def strip_remote(html: str) -> str:
    """Remove every ``<script src>`` and ``<link href>`` that points off the machine."""
    html = _MATHJAX_BLOCK.sub("", html)
    html = _REMOTE_SCRIPT.sub("", html)
    html = _INLINE_REMOTE_SCRIPT.sub("", html)
    return _REMOTE_LINK.sub("", html)


def remote_loads(html: str) -> list[str]:
    """What in ``html`` would be fetched from the network when opened (empty = none)."""
    pattern = re.compile(
        r"<(?:script|img|iframe|link|source|video|audio)\b[^>]*\b(?:src|href)=[\"']?((?:https?:)?//[^\"' >]+)",
        re.IGNORECASE,
    )
    found = pattern.findall(html)
    for script in re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.DOTALL | re.IGNORECASE):
        found += re.findall(r"[\"']((?:https?:)?//[^\"']+)[\"']", script)
    found += re.findall(r"@import\s+url\([\"']?((?:https?:)?//[^)\"']+)", html, re.IGNORECASE)
    return found
