"""A written gameday playbook in the seed's markdown form, read as data.

The form (``gamedays/*/playbook.md``)::

    # Gameday Playbook: Title
    **ID**: GAMEDAY-001
    **Scenario**: ...
    ## Pre-Gameday Checklist          - [ ] **Schedule**: Announce 48h in advance
    ## Gameday Timeline
    ### T-15 minutes: Pre-Flight      (also ``### T+0: Title``, ``### Phase 2: Title (T+0)``,
                                       ranges ``### T+5 to T+10 minutes: Title``)
    **Actions**:                      a bash block (one step per paragraph, its comments saying what it
                                      does) or a numbered list (steps for a person)
    **Validation**:                   a bash block, as Actions
    **Expected**: ...                 prose
    **Observations to Record**:       a list: questions the team answers
    **Success Criteria**:             a list: a checklist for the phase
    **Questions to Answer**:          a list
    **Debrief Topics**:               a list
    ## Success Metrics                | Metric | Target | Result | Status |, targets as ``threshold`` reads them
    ## Rollback Procedure             prose and a bash block

``read(text)`` gives a ``WrittenPlaybook``; ``WrittenPlaybook.to_playbook()`` the typed ``Playbook`` the
runbooks use. A playbook that cannot be read (no phase, a phase heading without its T-offset, phases out of
order, an unreadable metrics table, a target that is not one) raises ``PlaybookRefused`` naming the
heading. Phase ids are not written in a playbook: each phase has a ``slug`` of its title, and a gameday
maps titles to its own ids (``to_playbook(phase_ids=...)``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gamedaylib.authoring.threshold import Threshold, parse_threshold
from gamedaylib.exceptions import PlaybookRefused
from gamedaylib.playbook import MetricSpec, Phase, Playbook

__all__ = ["Section", "Step", "WrittenMetric", "WrittenPhase", "WrittenPlaybook", "load", "read", "slug"]

# the labels of a phase's sections, as written (compared case-insensitively)
ACTIONS, VALIDATION, EXPECTED = "Actions", "Validation", "Expected"
OBSERVATIONS, CRITERIA = "Observations to Record", "Success Criteria"
QUESTIONS, DEBRIEF = "Questions to Answer", "Debrief Topics"
STEP_SECTIONS = (ACTIONS, VALIDATION)
CHECKLIST_HEADING, METRICS_HEADING, ROLLBACK_HEADING = "Pre-Gameday Checklist", "Success Metrics", "Rollback Procedure"
SHELL_LANGUAGES = ("", "bash", "sh", "shell", "console", "zsh")

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
_LABEL = re.compile(r"^\*\*([^*]+?):?\*\*:?\s*(.*)$")
_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(?:\[[ xX]\]\s+)?(.*)$")
_RULE = re.compile(r"^\s*(?:-{3,}|\*{3,}|_{3,})\s*$")
_SIGN, _UNITS = r"[-+−]", r"minutes?|mins?|m|hours?|hrs?|h"
_OFFSET = rf"T\s*({_SIGN}?)\s*(\d+(?:\.\d+)?)\s*({_UNITS})?"
_RANGE_END = rf"(?:\s*(?:to|–|—|-|\.\.)\s*(?:T\s*({_SIGN}?)\s*)?(\d+(?:\.\d+)?)\s*({_UNITS})?)?"
_RANGE = re.compile(_OFFSET + _RANGE_END, re.IGNORECASE)
_PHASE_T_FIRST = re.compile(rf"^(?P<when>T\s*{_SIGN}?\s*\d[^:]*?):\s*(?P<title>.+)$", re.IGNORECASE)
_PHASE_T_LAST = re.compile(rf"^(?:Phase\s+\d+\s*:\s*)?(?P<title>.+?)\s*\((?P<when>T\s*{_SIGN}?\s*\d[^)]*)\)$",
                           re.IGNORECASE)
_QUESTION_IN_STEP = re.compile(r"\(([^()]*\?)\)")


@dataclass(frozen=True)
class Step:
    """One action step: a shell command (a paragraph of a bash block; ``what`` its comments) or, for a
    person, a numbered item (``command`` empty, ``what`` the instruction)."""

    section: str  # "Actions", "Validation", "Rollback Procedure"
    what: str  # what it does, in the playbook's words
    command: str = ""  # the shell text, continuation lines kept; "" for a step a person takes

    @property
    def is_shell(self) -> bool:
        return bool(self.command)

    @property
    def question(self) -> str | None:
        """A question the step asks in parentheses (``Review alert timeline (when did first alert fire?)``)."""
        found = _QUESTION_IN_STEP.search(self.what) if not self.command else None
        return _capitalized(found.group(1).strip()) if found else None


@dataclass(frozen=True)
class Section:
    """A ``**Label**:`` block of a phase: its prose, list items and steps."""

    label: str
    text: str  # verbatim markdown after the label
    items: tuple[str, ...] = ()
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class WrittenPhase:
    title: str
    heading: str  # the heading as written
    offset_minutes: int  # T-offset at its start
    end_offset_minutes: int | None  # a range's end (``T+5 to T+10 minutes``), else None
    text: str  # the phase's body, verbatim, as the facilitator reads it
    sections: tuple[Section, ...] = ()

    @property
    def slug(self) -> str:
        return slug(self.title)

    def section(self, label: str) -> Section | None:
        return next((s for s in self.sections if s.label.casefold() == label.casefold()), None)

    def _items(self, label: str) -> tuple[str, ...]:
        return tuple(i for s in self.sections if s.label.casefold() == label.casefold() for i in s.items)

    @property
    def steps(self) -> tuple[Step, ...]:
        """The Actions' and Validation's steps, in the playbook's order."""
        wanted = {label.casefold() for label in STEP_SECTIONS}
        return tuple(st for s in self.sections if s.label.casefold() in wanted for st in s.steps)

    @property
    def observations(self) -> tuple[str, ...]:
        return self._items(OBSERVATIONS)

    @property
    def criteria(self) -> tuple[str, ...]:
        return self._items(CRITERIA)

    @property
    def questions_to_answer(self) -> tuple[str, ...]:
        return self._items(QUESTIONS)

    @property
    def debrief_topics(self) -> tuple[str, ...]:
        return self._items(DEBRIEF)

    @property
    def expected(self) -> str:
        found = self.section(EXPECTED)
        return found.text if found else ""

    @property
    def questions(self) -> tuple[str, ...]:
        """Everything the team is asked in this phase, in the playbook's order: observations to record, the
        questions the steps ask, questions to answer, debrief topics."""
        asked: list[str] = []
        for s in self.sections:
            label = s.label.casefold()
            if label in (OBSERVATIONS.casefold(), QUESTIONS.casefold(), DEBRIEF.casefold()):
                asked += s.items
            elif label == ACTIONS.casefold():
                asked += [q for st in s.steps if (q := st.question)]
        return tuple(asked)


@dataclass(frozen=True)
class WrittenMetric:
    """A row of the Success Metrics table."""

    label: str  # the Metric column, as written
    target_text: str  # the Target column, as written
    target: Threshold
    result_unit: str = ""  # the Result column's unit word (``___ min`` -> "min")

    @property
    def name(self) -> str:
        """The metric's name in scorecard.json, from its label: ``RTO (Recovery Time)`` -> ``rto_seconds``,
        ``Event Loss Count`` -> ``event_loss_count`` (a duration drops a trailing "time" and ends in
        ``_seconds``)."""
        stem = slug(re.sub(r"\([^)]*\)", "", self.label)) or slug(self.label)
        if self.target.is_duration:
            stem = stem.removesuffix("_time")
            if not stem.endswith("_seconds"):
                stem += "_seconds"
        return stem

    @property
    def unit(self) -> str:
        """The target's unit; for a count with none written, the label's last word (``Split-Brain
        Samples`` -> ``samples``)."""
        if self.target.unit:
            return self.target.unit
        words = re.sub(r"\([^)]*\)", "", self.label).split()
        return words[-1].lower() if words else ""

    def spec(self) -> MetricSpec:
        return MetricSpec(self.name, self.label, self.target.comparison, self.unit)


@dataclass(frozen=True)
class WrittenPlaybook:
    title: str  # the first heading, as written
    fields: tuple[tuple[str, str], ...]  # the ``**Key**: value`` lines under the title
    phases: tuple[WrittenPhase, ...]
    metrics: tuple[WrittenMetric, ...] = ()
    checklist: tuple[str, ...] = ()
    rollback: tuple[Step, ...] = ()
    rollback_text: str = ""
    source: str = ""
    sections: tuple[tuple[str, str], ...] = ()  # (heading, text) of every ``##`` section, in order

    def meta(self, name: str) -> str | None:
        """A ``**Key**: value`` field under the title (case-insensitive key)."""
        return next((v for k, v in self.fields if k.casefold() == name.casefold()), None)

    @property
    def id(self) -> str | None:
        return self.meta("ID")

    @property
    def scenario(self) -> str:
        """What the playbook is about: its **Scenario** field, else its title without ``Gameday…:``."""
        return self.meta("Scenario") or re.sub(r"^[^:]*gameday[^:]*:\s*", "", self.title, flags=re.IGNORECASE)

    def section_text(self, heading: str) -> str | None:
        """The text of the ``## heading`` section (case-insensitive), or None."""
        return next((t for h, t in self.sections if h.casefold() == heading.casefold()), None)

    def phase(self, title_or_slug: str) -> WrittenPhase:
        """The phase with this title or slug; ``KeyError`` naming the phases otherwise."""
        wanted = title_or_slug.casefold()
        found = next((p for p in self.phases if wanted in (p.title.casefold(), p.slug)), None)
        if found is None:
            raise KeyError(f"no phase {title_or_slug!r}; the phases are {', '.join(p.title for p in self.phases)}")
        return found

    def to_playbook(self, phase_ids: Mapping[str, str] | None = None, gameday_id: str | None = None) -> Playbook:
        """The typed ``Playbook``: ``phase_ids`` maps a phase's title (or slug) to the gameday's id for it
        (the slug otherwise); ``gameday_id`` overrides the **ID** field."""
        ids = {k.casefold(): v for k, v in (phase_ids or {}).items()}
        the_id = gameday_id or self.id
        if not the_id:
            raise PlaybookRefused(self.title, "no **ID** field under the title and no id given", self.source)
        phases = tuple(Phase(ids.get(p.title.casefold(), ids.get(p.slug, p.slug)), p.title, p.offset_minutes,
                             p.questions) for p in self.phases)
        return Playbook(id=the_id, title=self.scenario, phases=phases,
                        metrics=tuple(m.spec() for m in self.metrics), checklist=self.checklist)


def slug(text: str) -> str:
    """``Pre-Flight`` -> ``pre_flight``: lowercase words joined by ``_``."""
    return "_".join(re.findall(r"[a-z0-9]+", text.casefold()))


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _inline(text: str) -> str:
    """A list item's text without emphasis markers, on one line."""
    return re.sub(r"\s+", " ", re.sub(r"\*\*(.+?)\*\*", r"\1", text)).strip()


# -- blocks ---------------------------------------------------------------------------------------------


@dataclass
class _Block:
    heading: str  # as written, without the #s
    level: int
    lines: list[str]


def _blocks(text: str) -> tuple[list[str], list[_Block]]:
    """(lines before the first heading, each heading's block); a ``#`` inside a code fence is not a
    heading."""
    preamble: list[str] = []
    blocks: list[_Block] = []
    fence = ""
    for line in text.splitlines():
        opened = _FENCE.match(line)
        if fence:
            if opened and opened.group(1).startswith(fence[0]) and len(opened.group(1)) >= len(fence):
                fence = ""
        elif opened:
            fence = opened.group(1)
        else:
            heading = _HEADING.match(line)
            if heading:
                blocks.append(_Block(heading.group(2), len(heading.group(1)), []))
                continue
        (blocks[-1].lines if blocks else preamble).append(line)
    return preamble, blocks


def _is_phase(heading: str) -> bool:
    try:
        return _phase_heading(heading) is not None
    except ValueError:
        return True  # a phase whose offset cannot be read: read() refuses it, naming it


def _fold(preamble: list[str], blocks: list[_Block]) -> tuple[list[str], list[_Block]]:
    """A phase's deeper headings (``#### Notes`` under ``### T+5 minutes: ...``) are part of its text."""
    folded: list[_Block] = []
    phase: _Block | None = None
    for block in blocks:
        if phase is not None and block.level > phase.level and not _is_phase(block.heading):
            phase.lines += ["#" * block.level + " " + block.heading, *block.lines]
            continue
        phase = block if block.level >= 2 and _is_phase(block.heading) else None
        folded.append(block)
    return preamble, folded


def _body(lines: list[str]) -> str:
    """A block's text without the trailing horizontal rule and blank lines."""
    kept = list(lines)
    while kept and (not kept[-1].strip() or _RULE.match(kept[-1])):
        kept.pop()
    while kept and not kept[0].strip():
        kept.pop(0)
    return "\n".join(kept)


def _items(lines: list[str]) -> list[str]:
    """The list items in ``lines`` (continuation lines joined), outside code fences."""
    items: list[str] = []
    fence = False
    for line in lines:
        if _FENCE.match(line):
            fence = not fence
            continue
        if fence:
            continue
        item = _ITEM.match(line)
        if item:
            items.append(item.group(1))
        elif items and line.startswith((" ", "\t")) and line.strip():
            items[-1] += " " + line.strip()
    return [_inline(i) for i in items if _inline(i)]


def _fenced(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(language, lines) of each code fence in ``lines``."""
    found: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for line in lines:
        opened = _FENCE.match(line)
        if current is None and opened:
            current = []
            found.append((opened.group(2).lower(), current))
        elif current is not None and opened:
            current = None
        elif current is not None:
            current.append(line)
    return found


def _shell_steps(section: str, lines: list[str]) -> list[Step]:
    """One step per paragraph of each shell block: its comment lines say what it does (a leading ``1.``
    dropped), the rest is the command; a paragraph of comments only is a step for a person."""
    steps: list[Step] = []
    for language, code in _fenced(lines):
        if language not in SHELL_LANGUAGES:
            continue
        paragraph: list[str] = []
        for line in [*code, ""]:
            if line.strip():
                paragraph.append(line)
                continue
            if paragraph:
                comments = [re.sub(r"^#+\s*(?:\d+[.)]\s*)?", "", ln.strip()) for ln in paragraph
                            if ln.lstrip().startswith("#")]
                command = "\n".join(ln for ln in paragraph if not ln.lstrip().startswith("#")).strip()
                steps.append(Step(section, "; ".join(c for c in comments if c), command))
                paragraph = []
    return steps


def _sections(lines: list[str]) -> list[Section]:
    """The ``**Label**:`` sections of a phase's body, in order."""
    found: list[tuple[str, list[str]]] = []
    fence = False
    for line in lines:
        if _FENCE.match(line):
            fence = not fence
        labelled = None if fence else _LABEL.match(line)
        if labelled:
            found.append((labelled.group(1).strip(), [labelled.group(2)] if labelled.group(2).strip() else []))
        elif found:
            found[-1][1].append(line)
    sections = []
    for label, body in found:
        steps = _shell_steps(label, body)
        items = _items(body)
        if label.casefold() in {s.casefold() for s in STEP_SECTIONS} and not steps:
            steps = [Step(label, i) for i in items]  # a numbered list of things a person does
        sections.append(Section(label, _body(body), tuple(items), tuple(steps)))
    return sections


# -- phases -----------------------------------------------------------------------------------------------


def _minutes(number: str, unit: str | None, sign: str) -> float:
    value = float(number) * (60.0 if unit and unit.lower().startswith("h") else 1.0)
    return -value if sign in ("-", "−") else value


def _phase_heading(heading: str) -> tuple[str, int, int | None] | None:
    """(title, start, end) of a phase heading; None for a heading that is not one; ``ValueError`` for a
    T-offset that cannot be read."""
    match = _PHASE_T_FIRST.match(heading) or _PHASE_T_LAST.match(heading)
    if match is None:
        return None
    when = match.group("when").strip()
    offset = _RANGE.fullmatch(when)
    if offset is None:
        raise ValueError(f"{when!r} is not a T-offset (write 'T+N minutes', 'T-15 minutes', 'T+0' or "
                         "'T+5 to T+10 minutes')")
    sign, number, unit, end_sign, end_number, end_unit = offset.groups()
    start = _minutes(number, unit or end_unit, sign)
    end = _minutes(end_number, end_unit or unit, end_sign if end_sign is not None else sign) \
        if end_number is not None else None
    for value in (start, end):
        if value is not None and value != int(value):
            raise ValueError(f"{when!r} is not a whole number of minutes")
    if end is not None and end < start:
        raise ValueError(f"{when!r} ends before it starts")
    return match.group("title").strip(), int(start), None if end is None else int(end)


def _metrics(block: _Block, source: str) -> list[WrittenMetric]:
    heading = "#" * block.level + " " + block.heading
    rows = [ln.strip() for ln in block.lines if ln.strip().startswith("|")]
    if len(rows) < 2:
        raise PlaybookRefused(heading, "no table (| Metric | Target | ... |) under this heading", source)

    def cells(row: str) -> list[str]:
        return [c.strip() for c in row.strip().strip("|").split("|")]

    header = [c.casefold() for c in cells(rows[0])]
    if "metric" not in header or "target" not in header:
        raise PlaybookRefused(heading, f"the table's header {rows[0]!r} has no 'Metric' and 'Target' columns",
                              source)
    if not re.fullmatch(r"\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?", rows[1]):
        raise PlaybookRefused(heading, f"the table's second line {rows[1]!r} is not its |---|---| rule", source)
    at_metric, at_target = header.index("metric"), header.index("target")
    at_result = header.index("result") if "result" in header else None
    found: list[WrittenMetric] = []
    for n, row in enumerate(rows[2:], start=1):
        values = cells(row)
        if len(values) != len(header):
            raise PlaybookRefused(heading, f"row {n} has {len(values)} cells, the header {len(header)}: {row!r}",
                                  source)
        label, target = _inline(values[at_metric]), values[at_target]
        if not label:
            raise PlaybookRefused(heading, f"row {n} names no metric: {row!r}", source)
        result = values[at_result] if at_result is not None else ""
        result_words = re.sub(r"_+", " ", result).split()
        hint = result_words[0] if result_words else ""
        try:
            threshold = parse_threshold(target, unit_hint=hint)
        except ValueError as exc:
            raise PlaybookRefused(heading, f"metric {label!r}: {exc}", source) from None
        found.append(WrittenMetric(label, target, threshold, hint))
    if not found:
        raise PlaybookRefused(heading, "the table has no metric rows", source)
    names = [m.name for m in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise PlaybookRefused(heading, f"two rows are the same metric {', '.join(twice)}", source)
    return found


def read(text: str, source: str = "") -> WrittenPlaybook:
    """The playbook written as ``text``; ``PlaybookRefused`` naming the heading for one that cannot be read
    (``source`` names the file in that message)."""
    preamble, blocks = _fold(*_blocks(text))
    titles = [b for b in blocks if b.level == 1]
    title = titles[0].heading if titles else ""
    if not title:
        raise PlaybookRefused("(the top)", "no '# Title' heading: is this a gameday playbook?", source)
    top = titles[0]
    fields = tuple((m.group(1).strip(), _inline(m.group(2)))
                   for ln in [*preamble, *top.lines] if (m := _LABEL.match(ln.strip())) and m.group(2).strip())

    phases: list[WrittenPhase] = []
    metrics: list[WrittenMetric] = []
    checklist: list[str] = []
    rollback: list[Step] = []
    rollback_text = ""
    sections: list[tuple[str, str]] = []
    parent: _Block | None = None  # the ## section this block is under
    phases_parent: _Block | None = None  # the ## section the phases are under
    for block in blocks:
        heading = "#" * block.level + " " + block.heading
        if block.level == 2:
            parent = block
            sections.append((block.heading, _body(block.lines)))
        try:
            phase = _phase_heading(block.heading) if block.level >= 2 else None
        except ValueError as exc:
            raise PlaybookRefused(heading, str(exc), source) from None
        if phase is not None:
            phase_title, start, end = phase
            if phases and start < phases[-1].offset_minutes:
                raise PlaybookRefused(heading, f"starts at T{start:+d} minutes, before the phase above it "
                                               f"({phases[-1].heading!r}): phases are written in time order",
                                      source)
            if any(slug(p.title) == slug(phase_title) for p in phases):
                raise PlaybookRefused(heading, f"a second phase titled {phase_title!r}", source)
            if not slug(phase_title):
                raise PlaybookRefused(heading, "the phase has no title", source)
            phases_parent = parent
            phases.append(WrittenPhase(phase_title, heading, start, end, _body(block.lines),
                                       tuple(_sections(block.lines))))
            continue
        if phases and block.level == phases[-1].heading.index(" ") and parent is phases_parent:
            raise PlaybookRefused(heading, "a heading among the phases without a T-offset (write "
                                           "'### T+N minutes: Title' or '### Phase N: Title (T+N minutes)')",
                                  source)
        name = block.heading.casefold()
        if block.level == 2 and name == METRICS_HEADING.casefold():
            metrics = _metrics(block, source)
        elif block.level == 2 and name == CHECKLIST_HEADING.casefold():
            checklist = _items(block.lines)
        elif block.level == 2 and name == ROLLBACK_HEADING.casefold():
            rollback = _shell_steps(ROLLBACK_HEADING, block.lines) or [Step(ROLLBACK_HEADING, i)
                                                                       for i in _items(block.lines)]
            rollback_text = _body(block.lines)
    if not phases:
        raise PlaybookRefused("# " + title, "no phase: no heading of the form '### T+N minutes: Title' (or "
                                            "'### Phase N: Title (T+N minutes)')", source)
    return WrittenPlaybook(title=title, fields=fields, phases=tuple(phases), metrics=tuple(metrics),
                           checklist=tuple(checklist), rollback=tuple(rollback), rollback_text=rollback_text,
                           source=source, sections=tuple(sections))


def load(path: str | Path) -> WrittenPlaybook:
    """The playbook in the file ``path``; ``PlaybookRefused`` for one that cannot be read (or opened)."""
    where = Path(path)
    try:
        text = where.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaybookRefused("(the file)", f"cannot be read: {exc}", str(where)) from None
    return read(text, source=str(where))
