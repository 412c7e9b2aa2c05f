"""What the team types and clicks during a gameday: observation forms, incident-response stamps, the
pre-gameday checklist and the action items.

Every form works two ways:

- **live** (a facilitator in JupyterLab): ipywidgets; pressing a button journals what was entered,
  with its timestamp. A changed answer recorded again is a new journal entry (the journal keeps both).
- **headless** (Papermill): the answers come from parameters; they are journaled once, the widgets
  render disabled with those values, and a *static* rendering (HTML, Markdown and plain text) is
  displayed too, so an archived notebook or ``report.html`` shows every answer without widget state
  (widget state is lost by Papermill and JupyterLab: papermill issue 400, ipywidgets issue 3888).

In live sessions the static rendering is displayed as well and updated in place on every Record, so
a notebook saved after a live session also reads without a kernel.

Reading the journal back (answers, open questions, team response, action items) is
``gamedaylib.observations``: no widgets there.
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import ipywidgets as widgets
from IPython.display import display, update_display

from gamedaylib.clock import Clock, parse_time
from gamedaylib.exceptions import InvalidParameters
from gamedaylib.journal import Journal
from gamedaylib.observations import (
    ACTION_ITEM_FIELDS,
    ACTION_ITEMS_CSV_COLUMNS,
    action_item,
    action_items_of,
    answered,
    answered_at,
)
from gamedaylib.playbook import INCIDENT_STAMPS, Playbook

OPEN = "open"
# what a room reads from the back: the same inline styles in the notebook and in report.html
_PROSE = "font-family:Helvetica,Arial,sans-serif;font-size:18px;line-height:1.45;color:#111"
_CELL = "text-align:left;vertical-align:top;padding:5px 12px;border-bottom:1px solid #d7dbe0"
_LABEL = "font-size:20px;font-weight:700"
STAMP_LABELS: dict[str, str] = {
    "alert_seen": "alert seen",
    "paged": "paged",
    "acknowledged": "acknowledged",
    "status_page_updated": "status page updated",
}


# --------------------------------------------------------------------------------------------------
# static rendering (what survives without a kernel)


@dataclass(frozen=True)
class StaticTable:
    """A table displayed as HTML, Markdown and plain text at once (nbconvert, nbformat readers and
    JupyterLab each pick the richest they understand)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""

    def html(self) -> str:
        head = "".join(f"<th style='{_CELL};border-bottom:2px solid #555'>{_h(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td style='{_CELL}'>{_cell_html(v)}</td>" for v in row) + "</tr>"
            for row in self.rows
        )
        note = f"<p style='margin:2px 0'>{_h(self.note)}</p>" if self.note else ""
        return (
            f"<div class='gameday-static' style='{_PROSE}'><div style='font-size:22px;font-weight:700;"
            f"margin:8px 0 4px'>{_h(self.title)}</div>{note}"
            f"<table style='border-collapse:collapse;font-size:18px'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>"
        )

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "---|" * len(self.columns))
        for row in self.rows:
            lines.append("| " + " | ".join(_cell_md(v) for v in row) + " |")
        return "\n".join(lines)

    def text(self) -> str:
        lines = [self.title]
        if self.note:
            lines.append(self.note)
        for row in self.rows:
            lines.append("- " + " | ".join(f"{c}: {v}" for c, v in zip(self.columns, row, strict=False)))
        return "\n".join(lines)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/html": self.html(), "text/markdown": self.markdown(), "text/plain": self.text()}


def _when(value: object) -> str:
    """A journaled time to the second, ``2026-12-01T23:19:40+00:00`` (no microseconds); "" stays ""."""
    if not value:
        return ""
    try:
        return parse_time(str(value)).isoformat(timespec="seconds")
    except ValueError:
        return str(value)


def _h(value: object) -> str:
    return html.escape(str(value), quote=False)


def _cell_html(value: str) -> str:
    return _h(value).replace("\n", "<br>")


def _cell_md(value: str) -> str:
    return str(value).replace("|", "\\|").replace("\n", "<br>")


class _Shown:
    """A static table displayed once and then updated in place (``display_id``)."""

    def __init__(self, table: StaticTable) -> None:
        self.display_id = f"gameday-{uuid.uuid4().hex}"
        self.table = table
        display(table, display_id=self.display_id)

    def update(self, table: StaticTable) -> None:
        self.table = table
        update_display(table, display_id=self.display_id)


class Form:
    """What every form shares: its widget shown with its static table below, the table kept current."""

    widget: widgets.Widget
    _shown: _Shown | None

    def static_table(self) -> StaticTable:
        raise NotImplementedError

    def refresh(self) -> None:
        if self._shown is not None:
            self._shown.update(self.static_table())

    def show(self, fallback: str | None = None) -> None:
        """Display the widget with a plain-text fallback of one short line instead of its long repr
        (an archive without widget state shows that line), then the static table with the values."""
        bundle = dict(self.widget._repr_mimebundle_() or {})
        bundle["text/plain"] = fallback or repr(self)
        display(bundle, raw=True)
        self._shown = _Shown(self.static_table())


# --------------------------------------------------------------------------------------------------
# reading the journal


def _canonical_question(playbook: Playbook, phase_id: str, question: str) -> str:
    """The playbook's wording of ``question`` (matched ignoring case and surrounding blanks), or the
    question itself when the playbook does not ask it."""
    wanted = " ".join(question.split()).casefold()
    for q in playbook.phase(phase_id).questions:
        if " ".join(q.split()).casefold() == wanted:
            return q
    return question


# --------------------------------------------------------------------------------------------------
# observation form


@dataclass(repr=False)
class ObservationForm(Form):
    """The form of one phase. ``widget`` is what is displayed; ``record()`` is what the button does."""

    journal: Journal
    playbook: Playbook
    phase_id: str
    live: bool
    textareas: dict[str, widgets.Textarea]
    record_button: widgets.Button
    status: widgets.HTML
    widget: widgets.VBox
    extra_questions: tuple[str, ...] = ()
    _shown: _Shown | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        got = answered(self.journal).get(self.phase_id, {})
        return (f"<observation form {self.phase_id}: {sum(q in got for q in self.questions)} of {len(self.questions)} "
                "answered>")

    @property
    def questions(self) -> tuple[str, ...]:
        return tuple(self.textareas)

    def record(self, source: str = "form") -> list[dict[str, Any]]:
        """Journal every answer that differs from the latest one journaled for its question; returns
        the entries written. Unchanged answers are not journaled again."""
        latest = answered(self.journal).get(self.phase_id, {})
        written = []
        for question, area in self.textareas.items():
            answer = area.value
            if answer.strip() == "" and question not in latest:
                continue
            if latest.get(question) == answer:
                continue
            written.append(
                self.journal.record("observation", self.phase_id, question=question, answer=answer, source=source)
            )
        self.status.value = _h(f"recorded {len(written)} answer(s)" if written else "nothing new to record")
        self.refresh()
        return written

    def static_table(self) -> StaticTable:
        entries = self.journal.entries()
        latest = answered(entries).get(self.phase_id, {})
        when = answered_at(entries)
        rows = []
        for q in self.questions:
            if q in latest:
                suffix = "" if q in self.playbook.phase(self.phase_id).questions else " (not a playbook question)"
                rows.append((q + suffix, latest[q], _when(when.get((self.phase_id, q), ""))))
            else:
                rows.append((q, OPEN, ""))
        title = f"Observations: {self.playbook.title_of(self.phase_id)}"
        return StaticTable(title, ("question", "answer", "recorded at"), tuple(rows))


def observation_form(
    journal: Journal,
    playbook: Playbook,
    phase_id: str,
    *,
    answers: Mapping[str, str] | None,
    live: bool,
    show: bool = True,
) -> ObservationForm:
    """The playbook's questions of ``phase_id`` as a form (one Textarea per question).

    Live: ``answers`` only pre-fill the boxes; "Record" journals them. Headless: ``answers`` are
    journaled once (not again when the cell runs twice), the widgets are disabled, and the static
    table (question, answer, recorded at; ``open`` when unanswered) is displayed."""
    if phase_id not in playbook.phase_ids:
        raise InvalidParameters(f"unknown phase id {phase_id!r}", "phase_id")
    given = {_canonical_question(playbook, phase_id, q): a for q, a in (answers or {}).items()}
    questions = list(playbook.phase(phase_id).questions)
    extra = tuple(q for q in given if q not in questions)
    areas: dict[str, widgets.Textarea] = {}
    rows: list[widgets.Widget] = []
    for q in (*questions, *extra):
        area = widgets.Textarea(
            value=str(given.get(q, "") or ""),
            placeholder="type what the team saw",
            disabled=not live,
            layout=widgets.Layout(width="98%", height="72px"),
            style={"font_size": "18px"},
        )
        areas[q] = area
        rows.append(widgets.HTML(f"<span style='{_LABEL}'>{_h(q)}</span>"))
        rows.append(area)
    button = widgets.Button(
        description="Record",
        button_style="primary",
        icon="check",
        disabled=not live,
        tooltip="journal every changed answer with its time",
        layout=widgets.Layout(width="200px", height="44px"),
        style={"font_size": "18px", "font_weight": "bold"},
    )
    status = widgets.HTML("", style={"font_size": "18px"})
    rows.append(widgets.HBox([button, status]))
    box = widgets.VBox(rows)
    form = ObservationForm(journal, playbook, phase_id, live, areas, button, status, box, extra)
    if live:
        button.on_click(lambda _b: form.record())
    else:
        form.record(source="parameter")
        status.value = "headless run: answers from the <code>observations</code> parameter"
    if show:
        form.show(f"[observation form: {playbook.title_of(phase_id)}; answers in the table below]")
    return form


# --------------------------------------------------------------------------------------------------
# incident-response stamps


def _resolve_stamp(value: Any, clock: Clock) -> tuple[datetime | None, str]:
    """A stamp parameter (ISO time or seconds after T+0) as a time, or None with the reason."""
    if isinstance(value, bool):
        return None, f"not a time: {value!r}"
    if isinstance(value, (int, float)):
        if clock.t0 is None:
            return None, f"{value:g} s after T+0, but T+0 is not known (no confirmed injection)"
        return clock.t0 + timedelta(seconds=float(value)), f"{value:g} s after T+0"
    try:
        return parse_time(value), "ISO time"
    except (TypeError, ValueError) as exc:
        return None, f"not an ISO-8601 time: {value!r} ({exc})"


_T_OFFSET = re.compile(r"^T([+-])(?:(\d+):)?(\d{1,3}):(\d{2})$")
_CLOCK_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


def parse_stamp_time(text: str, clock: Clock) -> datetime:
    """A time typed by the facilitator: ``T+05:10`` / ``T+1:02:03`` (from T+0), ``14:03[:20]`` (UTC,
    today, or yesterday if that would be in the future) or an ISO-8601 time."""
    value = text.strip()
    m = _T_OFFSET.match(value)
    if m:
        if clock.t0 is None:
            raise InvalidParameters(f"{value!r} counts from T+0, but T+0 is not known yet", "stamps")
        sign, hours, minutes, secs = m.groups()
        seconds = int(hours or 0) * 3600 + int(minutes) * 60 + int(secs)
        return clock.t0 + timedelta(seconds=seconds if sign == "+" else -seconds)
    m = _CLOCK_TIME.match(value)
    if m:
        now = clock.now()
        hour, minute, second = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise InvalidParameters(f"not a time of day: {value!r}", "stamps")
        at = now.replace(hour=hour, minute=minute, second=second, microsecond=0)
        return at - timedelta(days=1) if at > now + timedelta(minutes=1) else at
    try:
        return parse_time(value)
    except ValueError:
        raise InvalidParameters(
            f"cannot read {value!r}: type HH:MM[:SS] (UTC), T+mm:ss or an ISO-8601 time", "stamps"
        ) from None


@dataclass(repr=False)
class StampButtons(Form):
    journal: Journal
    clock: Clock
    phase_id: str
    live: bool
    buttons: dict[str, widgets.Button]
    widget: widgets.Widget
    when: widgets.Text
    status: widgets.HTML
    on_stamp: Callable[[str], object] | None = None  # told after every stamp (the run re-measures)
    _shown: _Shown | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        done = sorted({str(e.get("stamp")) for e in self.journal.entries() if e.get("kind") == "stamp" and e.get("at")})
        return f"<stamp buttons: stamped {', '.join(done) or 'nothing yet'}>"

    def press(self, name: str) -> dict[str, Any] | None:
        """What a button does: stamp now, or at the time typed in ``when`` (then cleared). A time
        that cannot be read is shown, not journaled."""
        typed = self.when.value.strip()
        if not typed:
            return self.stamp(name)
        try:
            at = parse_stamp_time(typed, self.clock)
        except InvalidParameters as exc:
            self.status.value = (f"<span style='color:#b00020;font-size:18px'>"
                                 f"{_h(exc.problems.get('stamps', str(exc)))}</span>")
            return None
        self.when.value = ""
        self.status.value = ""
        return self.stamp(name, at, source=f"button, time typed: {typed}")

    def stamp(self, name: str, at: datetime | None = None, *, source: str = "button") -> dict[str, Any]:
        """Journal ``name`` at ``at`` (default: now)."""
        if name not in INCIDENT_STAMPS:
            raise InvalidParameters(f"unknown stamp {name!r}; known: {list(INCIDENT_STAMPS)}", "stamps")
        at = at or self.clock.now()
        entry = self.journal.record(
            "stamp", self.phase_id, stamp=name, at=at.isoformat(), t_offset=self.clock.offset(at), source=source
        )
        button = self.buttons[name]
        button.description = f"{STAMP_LABELS[name]} ✓ {at.strftime('%H:%M:%S')}"
        button.button_style = "success"
        self.refresh()
        if self.on_stamp is not None:
            self.on_stamp(name)
        return entry

    def static_table(self) -> StaticTable:
        rows = []
        recorded: dict[str, Mapping[str, Any]] = {}
        for e in self.journal.entries():
            if e.get("kind") == "stamp":
                recorded.setdefault(str(e.get("stamp")), e)  # the first one counts
        for name in INCIDENT_STAMPS:
            first = recorded.get(name)
            if first is None:
                rows.append((STAMP_LABELS[name], "not stamped", ""))
            elif not first.get("at"):
                rows.append((STAMP_LABELS[name], "unknown", str(first.get("reason", ""))))
            else:
                rows.append((STAMP_LABELS[name], _when(first["at"]), str(first.get("t_offset", ""))))
        return StaticTable("Incident-response stamps", ("moment", "time (UTC)", "T-offset / note"), tuple(rows))


def stamp_buttons(
    journal: Journal,
    clock: Clock,
    *,
    stamps: Mapping[str, Any] | None,
    live: bool,
    phase_id: str = "incident_response",
    show: bool = True,
    on_stamp: Callable[[str], object] | None = None,
) -> StampButtons:
    """Buttons "alert seen", "paged", "acknowledged", "status page updated"; each press journals
    ``kind="stamp"`` with its time. Headless: ``stamps`` (ISO time or seconds after T+0) are
    journaled once; a stamp whose time cannot be resolved is journaled with ``at=None`` and the
    reason. Stamps not given stay unstamped (team response is then ``not_measured``)."""
    buttons = {
        name: widgets.Button(
            description=STAMP_LABELS[name],
            disabled=not live,
            layout=widgets.Layout(width="340px", height="56px"),  # room for "acknowledged ✓ 23:52:13"
            style={"font_size": "20px", "font_weight": "bold"},
            tooltip=f"record the time of '{STAMP_LABELS[name]}'",
        )
        for name in INCIDENT_STAMPS
    }
    when = widgets.Text(
        placeholder="now — or type when it happened: HH:MM[:SS] UTC, T+mm:ss, or ISO time",
        disabled=not live, layout=widgets.Layout(width="60%", height="40px"), style={"font_size": "18px"},
    )
    status = widgets.HTML("", style={"font_size": "18px"})
    said = widgets.HTML(f"<span style='{_LABEL}'>happened at</span>", layout=widgets.Layout(margin="0 12px 0 0"))
    box = widgets.VBox([widgets.HBox(list(buttons.values()), layout=widgets.Layout(flex_flow="row wrap")),
                        widgets.HBox([said, when, status], layout=widgets.Layout(align_items="center"))])
    sb = StampButtons(journal, clock, phase_id, live, buttons, box, when, status, on_stamp)
    if live:
        for name, button in buttons.items():
            button.on_click(lambda _b, name=name: sb.press(name))
    else:
        already = {str(e.get("stamp")) for e in journal.entries() if e.get("kind") == "stamp"}
        for name, value in (stamps or {}).items():
            if name not in INCIDENT_STAMPS:
                raise InvalidParameters(f"unknown stamp {name!r}; known: {list(INCIDENT_STAMPS)}", "stamps")
            if name in already:
                continue
            at, how = _resolve_stamp(value, clock)
            if at is None:
                journal.record("stamp", phase_id, stamp=name, at=None, reason=how, source="parameter")
            else:
                sb.stamp(name, at, source="parameter")
    if show:
        sb.show("[incident-response stamp buttons; times in the table below]")
    return sb


# --------------------------------------------------------------------------------------------------
# pre-gameday checklist


def _checklist_label(item: str) -> str:
    return item.split(":", 1)[0].strip()


def _match_checklist(items: Sequence[str], given: Mapping[str, bool]) -> tuple[dict[str, bool], dict[str, bool]]:
    """Map given keys (the full item text or its bold label, e.g. "Backup") onto the playbook's
    items; returns (known, unknown)."""
    by_key: dict[str, str] = {}
    for item in items:
        by_key[item.casefold()] = item
        by_key[_checklist_label(item).casefold()] = item
    known: dict[str, bool] = {}
    unknown: dict[str, bool] = {}
    for key, value in given.items():
        match = by_key.get(str(key).strip().casefold())
        if match is None:
            unknown[str(key)] = bool(value)
        else:
            known[match] = bool(value)
    return known, unknown


@dataclass(repr=False)
class ChecklistForm(Form):
    journal: Journal
    live: bool
    checkboxes: dict[str, widgets.Checkbox]
    record_button: widgets.Button
    widget: widgets.Widget
    unknown: dict[str, bool] = field(default_factory=dict)
    _shown: _Shown | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"<pre-gameday checklist: {sum(self.state().values())} of {len(self.checkboxes)} done>"

    def state(self) -> dict[str, bool]:
        return {item: bool(box.value) for item, box in self.checkboxes.items()}

    def record(self, phase_id: str = "preflight", source: str = "form") -> dict[str, Any]:
        """Journal the checklist's state (``kind="checklist"``): every item, what is missing."""
        state = self.state()
        missing = [item for item, done in state.items() if not done]
        entry = self.journal.record(
            "checklist", phase_id, items=state, complete=not missing, missing=missing,
            unknown_items=dict(self.unknown), source=source,
        )
        self.refresh()
        return entry

    def static_table(self) -> StaticTable:
        rows = [(item, "☑ done" if done else "☐ not done") for item, done in self.state().items()]
        rows += [(f"{k} (not a playbook item)", "☑ done" if v else "☐ not done") for k, v in self.unknown.items()]
        done = sum(self.state().values())
        return StaticTable(
            "Pre-gameday checklist", ("item", "state"), tuple(rows), note=f"{done} of {len(self.checkboxes)} done"
        )


def checklist_form(
    journal: Journal, items: Sequence[str], *, checklist: Mapping[str, bool] | None, live: bool, show: bool = True
) -> ChecklistForm:
    """The playbook's pre-gameday checklist as checkboxes. Live: ticking is free; "Record checklist"
    (and the runbook's pre-flight, via ``record()``) journals the state. Headless: the ``checklist``
    parameter (keys: the item text or its label, e.g. ``"Backup"``) is journaled once, now."""
    known, unknown = _match_checklist(items, checklist or {})
    boxes = {
        item: widgets.Checkbox(
            value=known.get(item, False), description=item, disabled=not live, indent=False,
            layout=widgets.Layout(width="98%"),
        )
        for item in items
    }
    button = widgets.Button(description="Record checklist", button_style="primary", disabled=not live)
    box = widgets.VBox([*boxes.values(), button])
    form = ChecklistForm(journal, live, boxes, button, box, unknown)
    if live:
        button.on_click(lambda _b: form.record())
    elif not any(e.get("kind") == "checklist" for e in journal.entries()):
        form.record(source="parameter")
    if show:
        form.show("[pre-gameday checklist form; state in the table below]")
    return form


# --------------------------------------------------------------------------------------------------
# action items


@dataclass(repr=False)
class ActionItemsForm(Form):
    journal: Journal
    live: bool
    fields: dict[str, widgets.Text]
    add_button: widgets.Button
    widget: widgets.Widget
    _shown: _Shown | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"<action items: {len(self.items())}>"

    def add(self, item: Mapping[str, Any] | None = None, *, source: str = "form") -> dict[str, Any] | None:
        """Journal one action item (default: what the fields hold) and clear the fields."""
        value = action_item(item if item is not None else {k: w.value for k, w in self.fields.items()})
        if not value["title"].strip():
            return None
        entry = self.journal.record("action_item", "postmortem", **value, source=source)
        if item is None:
            for w in self.fields.values():
                w.value = ""
        self.refresh()
        return entry

    def items(self) -> list[dict[str, str]]:
        return action_items_of(self.journal)

    def static_table(self) -> StaticTable:
        rows = tuple(tuple(i[c] for c in ACTION_ITEMS_CSV_COLUMNS) for i in self.items())
        note = "" if rows else "no action items recorded"
        return StaticTable("Action items", ACTION_ITEMS_CSV_COLUMNS, rows, note=note)


def action_items_form(
    journal: Journal, *, items: Sequence[Mapping[str, Any]] | None, live: bool, show: bool = True
) -> ActionItemsForm:
    """Action items (title, owner, due, ticket). Live: fields + "Add"; each Add journals one item.
    Headless: ``items`` (the ``action_items`` parameter) are journaled once."""
    fields = {
        k: widgets.Text(placeholder=k, description=k, disabled=not live, layout=widgets.Layout(width="24%"))
        for k in ACTION_ITEM_FIELDS
    }
    fields["title"].layout = widgets.Layout(width="40%")
    button = widgets.Button(description="Add action item", button_style="primary", disabled=not live)
    box = widgets.VBox([widgets.HBox(list(fields.values())), button])
    form = ActionItemsForm(journal, live, fields, button, box)
    if live:
        button.on_click(lambda _b: form.add())
    else:
        already = {(i["title"], i["owner"], i["due"], i["ticket"]) for i in form.items()}
        for item in items or []:
            value = action_item(item)
            if tuple(value[k] for k in ACTION_ITEM_FIELDS) not in already:
                form.add(value, source="parameter")
    if show:
        form.show("[action items form; items in the table below]")
    return form

