"""The archive of a run: Papermill execution, ``report.html``, the incident report, the history.

One folder per run (``outputs/<gameday_id>/<run_id>/``) holding ``runbook.ipynb``, ``report.html``,
``journal.jsonl``, ``scorecard.json``, ``samples.csv``, ``incident-report.md`` and ``params.yaml``.
Whatever happens (a failed cell, a dead kernel, a timeout, a signal), ``finalize`` leaves every file
in place and marks a run that did not reach its end ``aborted``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gamedaylib.exceptions import GamedayError
from gamedaylib.journal import JOURNAL_FILE, Journal, utcnow
from gamedaylib.parameters import effective_targets, redact, redact_text
from gamedaylib.playbook import GAMEDAY_ID, METRIC_NAMES, PHASES_BY_ID
from gamedaylib.scorecard import Metric, Scorecard

NOTEBOOK_NAME = "nats_partition_gameday.ipynb"
RUNBOOK_FILE = "runbook.ipynb"
HTML_FILE = "report.html"
SCORECARD_FILE = "scorecard.json"
SAMPLES_FILE = "samples.csv"
REPORT_FILE = "incident-report.md"
PARAMS_FILE = "params.yaml"
ACTION_ITEMS_FILE = "action-items.csv"
ARCHIVE_FILES = (
    RUNBOOK_FILE, HTML_FILE, JOURNAL_FILE, SCORECARD_FILE, SAMPLES_FILE, REPORT_FILE, PARAMS_FILE, ACTION_ITEMS_FILE,
)
HISTORY_METRICS = METRIC_NAMES[:6]
HEADLESS_ENV = "GAMEDAY_HEADLESS"  # set to "1" for headless runs: forms take answers from parameters


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def notebook_path() -> Path:
    return Path(__file__).resolve().parent / "gamedays" / "nats_partition" / NOTEBOOK_NAME


@dataclass
class Execution:
    """How the Papermill run ended."""

    completed: bool
    reason: str = ""
    seconds: float = 0.0


def execute(
    params: Mapping[str, Any],
    archive_dir: Path,
    *,
    notebook: Path | None = None,
    kernel_name: str = "python3",
    cwd: Path | None = None,
) -> Execution:
    """Run the notebook headless into ``archive_dir/runbook.ipynb``. ``completed`` only when the
    notebook ran to its end (the journal has ``run.finished``): Papermill's own errors, a dead
    kernel and a cell timeout all count as not completed, with the reason."""
    import time

    import papermill
    from papermill.exceptions import PapermillExecutionError

    start = time.monotonic()
    reason = ""
    source = headless_notebook(notebook or notebook_path())
    os.environ[HEADLESS_ENV] = "1"  # the kernel inherits it
    try:
        papermill.execute_notebook(
            source,
            str(archive_dir / RUNBOOK_FILE),
            parameters=dict(params),
            kernel_name=kernel_name,
            execution_timeout=int(params["cell_timeout_seconds"]),
            progress_bar=False,
            cwd=str(cwd or project_root()),
            kernel_manager_class=_local_kernel_manager(),
        )
    except PapermillExecutionError as exc:
        reason = f"cell {exc.exec_count} raised {exc.ename}: {exc.evalue}"
    except KeyboardInterrupt:
        reason = "interrupted (SIGINT/SIGTERM)"
    except Exception as exc:  # noqa: BLE001 - nbclient: DeadKernelError, CellTimeoutError, ...; recorded
        reason = f"{type(exc).__name__}: {exc}"
    entries = list(Journal.read(archive_dir / JOURNAL_FILE))
    finished = any(e.get("kind") == "run.finished" for e in entries)
    if not reason and not finished:
        reason = "the notebook did not reach finish()"
    return Execution(completed=finished and not reason, reason=reason, seconds=time.monotonic() - start)


def _local_kernel_manager() -> type:
    """The kernel talks over local IPC sockets (files in Jupyter's runtime folder), not TCP ports:
    a headless gameday opens no listening port for its kernel."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class LocalKernelManager(AsyncKernelManager):
        @default("transport")
        def _default_transport(self) -> str:
            return "ipc"

    return LocalKernelManager


def headless_notebook(path: Path) -> Any:
    """The notebook without the cells tagged ``live-only`` (headless runs skip them)."""
    import nbformat

    from gamedaylib.playbook import LIVE_ONLY_TAG

    nb = nbformat.read(str(path), as_version=4)
    nb.cells = [c for c in nb.cells if LIVE_ONLY_TAG not in c.get("metadata", {}).get("tags", [])]
    return nb


def finalize(archive_dir: Path, params: Mapping[str, Any], execution: Execution) -> dict[str, Any]:
    """Make the archive complete whatever happened; returns the final scorecard dict."""
    archive_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(archive_dir / JOURNAL_FILE)
    (archive_dir / PARAMS_FILE).write_text(yaml.safe_dump(redact(dict(params)), sort_keys=True), encoding="utf-8")
    entries = journal.entries()
    card_path = archive_dir / SCORECARD_FILE
    if execution.completed and card_path.exists():
        data = json.loads(card_path.read_text(encoding="utf-8"))
    else:
        data = _aborted_scorecard(card_path, params, execution.reason, entries)
        if not any(e.get("kind") == "run.finished" for e in entries):
            entries.append(journal.record("run.finished", verdict="aborted", reason=execution.reason))
    samples = archive_dir / SAMPLES_FILE
    if not samples.exists():
        samples.write_text("ts,t_offset_s,phase\n", encoding="utf-8")
    from gamedaylib.forms import write_action_items_csv

    write_action_items_csv(entries, archive_dir / ACTION_ITEMS_FILE)  # what the team recorded, even if aborted
    report = archive_dir / REPORT_FILE
    try:
        text = render_incident_report(archive_dir, scorecard=data, params=params, journal=entries)
    except (ValueError, KeyError, TypeError) as exc:
        # the draft is an optional observer: the archive must exist anyway, and says what went wrong
        journal.record("error", error="incident-report", message=str(exc))
        text = (f"# Incident report: {data.get('gameday_id')} run {data.get('run_id')}\n\n"
                f"**Verdict:** {data.get('verdict')}\n\nThe draft could not be written: `{exc}`; "
                "see scorecard.json and journal.jsonl.\n")
    report.write_text(text, encoding="utf-8")
    return data


def _aborted_scorecard(
    path: Path, params: Mapping[str, Any], reason: str, entries: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    previous: dict[str, Any] = {}
    if path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            previous = {}
    started = next((e["ts"] for e in entries if e.get("kind") == "run.started"), None)
    card = Scorecard(
        gameday_id=str(params.get("gameday_id") or GAMEDAY_ID),
        run_id=str(params.get("run_id") or ""),
        target=str(params.get("target") or "lab"),
        profile=str(params.get("profile") or "rehearsal"),
        started_at=str(previous.get("started_at") or started or utcnow().isoformat()),
        finished_at=utcnow().isoformat(),
        completed=False,
        required_metrics=list(params.get("required_metrics") or []),
        targets=effective_targets(params) if "rto_target_seconds" in params else {},
        reason=reason or "aborted",
    )
    measured = {e["name"]: e for e in entries if e.get("kind") == "measurement"}
    for m in previous.get("metrics") or []:
        measured.setdefault(m["name"], m)
    for name, m in measured.items():
        if name in METRIC_NAMES:
            card.set_metric(Metric(name, m.get("value"), m.get("target", card.targets.get(name, 0)) or 0,
                                   m.get("comparison", "<="), m.get("status", "not_measured"),
                                   m.get("evidence") or "", m.get("unit", "")))
    card.fill_missing(f"the run was aborted before this was measured ({reason})")
    if previous.get("events"):
        card.events.update(previous["events"])
    card.write(path)
    return card.as_dict()


def render_incident_report(
    archive_dir: Path,
    *,
    scorecard: Mapping[str, Any],
    params: Mapping[str, Any],
    journal: Sequence[Mapping[str, Any]],
) -> str:
    """``incident-report.md`` from ``docs/incidents/template.md``: timeline, scorecard, observations,
    open questions (unanswered playbook questions), action items (from the journal: the form live, the
    parameter headless; the parameter when the run stopped before the post-mortem journaled them)."""
    from gamedaylib.forms import action_items_of
    from gamedaylib.incident import draft_incident_report, load_template

    from gamedaylib.incident import DEFAULT_TEMPLATE_PATH as template
    observations: dict[str, dict[str, str]] = {
        k: dict(v) for k, v in (params.get("observations") or {}).items()
    }
    for e in journal:
        if e.get("kind") == "observation" and e.get("phase"):
            observations.setdefault(e["phase"], {})[str(e.get("question"))] = str(e.get("answer") or "")
    open_questions = [
        (pid, q) for pid, phase in PHASES_BY_ID.items() for q in phase.questions
        if not observations.get(pid, {}).get(q)
    ]
    return draft_incident_report(
        load_template(template if template.exists() else None),
        scorecard=scorecard,
        journal_entries=journal,
        params=params,
        observations=observations,
        open_questions=open_questions,
        action_items=action_items_of(journal) or action_items_of(list(params.get("action_items") or [])),
    )


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


def render_archive_html(archive_dir: Path) -> Path:
    """The archive's ``report.html`` from its ``runbook.ipynb``; when the run left no readable notebook
    (it never started, or died mid-write), the blank runbook is copied in first."""
    import shutil

    import nbformat

    runbook = archive_dir / RUNBOOK_FILE
    try:
        nbformat.read(str(runbook), as_version=4)
    except (OSError, ValueError, nbformat.reader.NotJSONError):
        shutil.copyfile(notebook_path(), runbook)
    return render_html(runbook, archive_dir / HTML_FILE)


def complete_live_archive(archive_dir: Path, saved_notebook: Path) -> Path:
    """A live run's archive made whole: the notebook as the facilitator saved it, every string in it
    passed through :func:`redact_text`, becomes ``runbook.ipynb``; ``report.html`` is rendered from it.

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
    nb = nbformat.from_dict(_redacted_tree(nb))
    nbformat.write(nb, str(archive_dir / RUNBOOK_FILE))
    return render_html(archive_dir / RUNBOOK_FILE, archive_dir / HTML_FILE)


def _redacted_tree(value: Any, key: str = "") -> Any:
    """Every string of a notebook with secrets masked; embedded images left as they are."""
    if isinstance(value, Mapping):
        return {k: _redacted_tree(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted_tree(v, key) for v in value]
    if isinstance(value, str) and not key.startswith("image/"):
        return redact_text(value)
    return value


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


# ------------------------------------------------------------------ history


@dataclass
class RunSummary:
    run_id: str
    path: Path
    started_at: str
    verdict: str
    profile: str
    target: str
    values: dict[str, float | None] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)


def list_runs(output_dir: Path, gameday_id: str | None = None) -> list[RunSummary]:
    """Every archived run under ``output_dir`` (one row per ``scorecard.json``), oldest first."""
    runs = []
    for card in sorted(output_dir.glob("*/*/" + SCORECARD_FILE)):
        try:
            data = json.loads(card.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if gameday_id and data.get("gameday_id") != gameday_id:
            continue
        metrics = {m["name"]: m for m in data.get("metrics") or []}
        runs.append(RunSummary(
            run_id=str(data.get("run_id")), path=card.parent, started_at=str(data.get("started_at") or ""),
            verdict=str(data.get("verdict")), profile=str(data.get("profile")), target=str(data.get("target")),
            values={n: metrics.get(n, {}).get("value") for n in HISTORY_METRICS},
            statuses={n: metrics.get(n, {}).get("status", "not_measured") for n in HISTORY_METRICS},
        ))
    runs.sort(key=lambda r: (r.started_at, r.run_id))
    return runs


def history_table(runs: Sequence[RunSummary]) -> str:
    heads = ["run_id", "started_at", "target", "profile", "verdict", *HISTORY_METRICS]
    rows = [heads]
    for r in runs:
        cells = [r.run_id, r.started_at[:19], r.target, r.profile, r.verdict]
        for n in HISTORY_METRICS:
            v = r.values.get(n)
            cells.append("-" if v is None else f"{v:g}" + ("" if r.statuses.get(n) == "pass" else "!"))
        rows.append(cells)
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(heads))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def history_chart(runs: Sequence[RunSummary], path: Path) -> Path | None:
    """RTO, RPO and loss across runs (PNG); None with fewer than two runs."""
    if len(runs) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    labels = [r.run_id for r in runs]
    for ax, (name, title) in zip(axes, [("rto_seconds", "RTO (s)"), ("rpo_seconds", "RPO (s)"),
                                        ("event_loss_count", "events lost")]):
        values = [r.values.get(name) for r in runs]
        xs = [i for i, v in enumerate(values) if v is not None]
        ax.plot(xs, [values[i] for i in xs], marker="o")
        ax.set_ylabel(title)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xticks(range(len(labels)))
    axes[-1].set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    fig.suptitle("GAMEDAY history")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
