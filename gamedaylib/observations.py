"""What the team recorded, read back from the journal: answers (latest wins), open questions,
stamps and the team response time, action items. No widgets here: archives, reports and scorecards
read these without a kernel (the forms that write them are in ``forms``)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from gamedaylib.clock import parse_time
from gamedaylib.journal import Journal
from gamedaylib.playbook import Playbook

__all__ = [
    "ACTION_ITEMS_CSV_COLUMNS",
    "ACTION_ITEM_FIELDS",
    "TeamResponse",
    "action_item",
    "action_items_of",
    "answered",
    "answered_at",
    "open_questions",
    "stamp_times",
    "team_response_seconds",
    "write_action_items_csv",
]

ACTION_ITEM_FIELDS: tuple[str, ...] = ("title", "owner", "due", "ticket")
ACTION_ITEMS_CSV_COLUMNS: tuple[str, ...] = (*ACTION_ITEM_FIELDS, "recorded_at")


def _entries(journal_entries: Iterable[Mapping[str, Any]] | Journal) -> list[Mapping[str, Any]]:
    if isinstance(journal_entries, Journal):
        return list(journal_entries.entries())
    return sorted(journal_entries, key=lambda e: int(e.get("seq", 0)))


def answered(journal_entries: Iterable[Mapping[str, Any]] | Journal) -> dict[str, dict[str, str]]:
    """``{phase: {question: answer}}`` from the journal's observations; the latest answer wins. An
    answer recorded empty (cleared) makes the question open again."""
    out: dict[str, dict[str, str]] = {}
    for e in _entries(journal_entries):
        if e.get("kind") != "observation" or not e.get("phase") or "question" not in e:
            continue
        phase, question, answer = str(e["phase"]), str(e["question"]), str(e.get("answer") or "")
        if answer.strip():
            out.setdefault(phase, {})[question] = answer
        else:
            out.get(phase, {}).pop(question, None)
    return {p: a for p, a in out.items() if a}


def answered_at(journal_entries: Iterable[Mapping[str, Any]] | Journal) -> dict[tuple[str, str], str]:
    """``{(phase, question): ts}`` of the latest recorded answer of each question."""
    out: dict[tuple[str, str], str] = {}
    for e in _entries(journal_entries):
        if e.get("kind") == "observation" and e.get("phase") and "question" in e:
            out[(str(e["phase"]), str(e["question"]))] = str(e.get("ts", ""))
    return out


def open_questions(journal_entries: Iterable[Mapping[str, Any]] | Journal, playbook: Playbook,
                   given: Mapping[str, Mapping[str, str]] | None = None) -> list[tuple[str, str]]:
    """Every playbook question without a (non-empty) answer, in playbook order (``given``: answers
    known elsewhere, e.g. the parameter of a run that stopped before its form journaled them)."""
    done = answered(journal_entries)
    extra = given or {}
    return [(pid, q) for pid, q in playbook.questions()
            if q not in done.get(pid, {}) and not str(extra.get(pid, {}).get(q) or "").strip()]


class TeamResponse(NamedTuple):
    """Team response time: ``seconds`` (None when it cannot be measured) and why / how measured."""

    seconds: float | None
    evidence: str


def stamp_times(journal_entries: Iterable[Mapping[str, Any]] | Journal) -> dict[str, list[datetime]]:
    """Every recorded time of each stamp, oldest first (stamps whose time was unknown are skipped)."""
    out: dict[str, list[datetime]] = {}
    for e in _entries(journal_entries):
        if e.get("kind") == "stamp" and e.get("at"):
            out.setdefault(str(e.get("stamp")), []).append(parse_time(str(e["at"])))
    return {k: sorted(v) for k, v in out.items()}


def team_response_seconds(
    journal_entries: Iterable[Mapping[str, Any]] | Journal, alert_fire_at: datetime | str | None
) -> TeamResponse:
    """First "acknowledged" stamp − the alert's fire time.

    The fire time comes from monitoring (``alert_fire_at``) where it exists, else from the first
    "alert seen" stamp. Returns ``TeamResponse(None, reason)`` when it cannot be measured."""
    stamps = stamp_times(journal_entries)
    acks = stamps.get("acknowledged", [])
    if not acks:
        return TeamResponse(None, "no 'acknowledged' stamp was recorded")
    if alert_fire_at is not None:
        fired, source = parse_time(alert_fire_at), "alert fire time from monitoring"
    elif stamps.get("alert_seen"):
        fired, source = stamps["alert_seen"][0], "no alert fire time from monitoring; used the 'alert seen' stamp"
    else:
        return TeamResponse(None, "no alert fire time: monitoring saw no alert and no 'alert seen' stamp was recorded")
    seconds = (acks[0] - fired).total_seconds()
    if seconds < 0:
        return TeamResponse(
            None, f"first acknowledgement ({acks[0].isoformat(timespec='seconds')}) is before the alert fired "
                  f"({fired.isoformat(timespec='seconds')})"
        )
    return TeamResponse(
        seconds, f"first acknowledged {acks[0].isoformat(timespec='seconds')} − alert "
                 f"{fired.isoformat(timespec='seconds')} ({source})"
    )


def action_item(value: Mapping[str, Any]) -> dict[str, str]:
    """One action item's fields as strings (missing ones empty)."""
    return {k: "" if value.get(k) is None else str(value.get(k)) for k in ACTION_ITEM_FIELDS}


def action_items_of(entries_or_items: Iterable[Mapping[str, Any]] | Journal) -> list[dict[str, str]]:
    """Action items from journal entries (``kind="action_item"``) or plain item dicts, with
    ``recorded_at`` (the journal time; empty for plain items)."""
    out = []
    for e in (entries_or_items.entries() if isinstance(entries_or_items, Journal) else entries_or_items):
        if "kind" in e and e.get("kind") != "action_item":
            continue
        if not str(e.get("title") or "").strip():
            continue
        out.append({**action_item(e), "recorded_at": str(e.get("ts", e.get("recorded_at", "")) or "")})
    return out


def write_action_items_csv(
    entries_or_items: Iterable[Mapping[str, Any]] | Journal, path: str | os.PathLike[str]
) -> Path:
    """Write ``action-items.csv`` (title, owner, due, ticket, recorded_at) and return its path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(ACTION_ITEMS_CSV_COLUMNS))
        writer.writeheader()
        for item in action_items_of(entries_or_items):
            writer.writerow(item)
    return p


