"""What a run found, in words: the verdict's reason, each metric's one-line why, the loss reconciled
across its parts, the configuration that mattered and the moments the samples show.

Pure functions over plain data (the scorecard dict, the effective parameters, the journal entries,
the samples' DataFrame), shared by everything that tells a run's story: the verdict banner
(``display``), the top of ``report.html`` (``report``) and the incident report (``incident``), so
they say the same thing in the same words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gamedaylib.clock import format_offset, parse_time
from gamedaylib.lab.knobs import HEALTHY_KNOBS

__all__ = [
    "LossLine",
    "Moment",
    "configuration",
    "fmt_time",
    "loss_lines",
    "loss_summary",
    "metric_why",
    "moments_from_samples",
    "verdict_reason",
]

WHY_LIMIT = 150  # characters of a metric's one-line why
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T(\d{2}:\d{2}:\d{2})(?:\.\d+)?(?:[+-]\d{2}:\d{2}|Z)?")


def fmt_time(value: Any, *, date: bool = True) -> str:
    """An ISO time as ``2026-12-01 23:19:31 UTC`` (no microseconds; ``date=False``: ``23:19:31``)."""
    if value in (None, ""):
        return "—"
    try:
        at = parse_time(value if isinstance(value, datetime) else str(value))
    except ValueError:
        return str(value)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC" if date else "%H:%M:%S")


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _outside_parens(text: str, seps: Sequence[str], start: int) -> int | None:
    """The index of the first separator at depth 0 at or after ``start``."""
    depth = 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif depth == 0 and i >= start and any(text.startswith(s, i) for s in seps):
            return i
    return None


def _drop_long_parens(text: str, longer_than: int = 40) -> str:
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            if depth == 0:
                start = i
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if depth == 0:
                group = text[start:i + 1]
                out.append(group if len(group) <= longer_than else "")
            continue
        if depth == 0 and ch != ")":
            out.append(ch)
    return re.sub(r"\s+([,;:.])", r"\1", re.sub(r" {2,}", " ", "".join(out))).strip()


def _one_line(text: str, limit: int = WHY_LIMIT) -> str:
    """The first clause of ``text``, ISO times as HH:MM:SS, long asides dropped, at most ``limit``."""
    text = " ".join(_ISO.sub(r"\1", text).split())
    text = _drop_long_parens(text)
    cut = _outside_parens(text, ("; ", ": "), 30)
    if cut is not None:
        text = text[:cut]
    if len(text) > limit:
        text = text[:limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return text


def metric_why(metric: Mapping[str, Any], events: Mapping[str, Any] | None = None) -> str:
    """One line saying why a metric has its status (the evidence's gist; the reason when it was not
    measured). ``events`` (the scorecard's) lets the event loss say what it is made of."""
    status = metric.get("status")
    if status == "not_measured":
        reason = str(metric.get("reason") or str(metric.get("evidence", "")).removeprefix("not measured: "))
        return _one_line(reason or "no reason recorded")
    if metric.get("name") == "event_loss_count" and events:
        parts = loss_lines(events)
        found = [p for p in parts if p.key in ("canaries_lost", "ground_truth_lost") and p.value is not None]
        dropped = next((p.value for p in parts if p.key == "service_reported_dropped"), None)
        if found:
            text = " + ".join(f"{_num(p.value)} {p.short}" for p in found) + " accepted and never stored"
            if dropped is not None:
                text += f"; the gateways counted {_num(dropped)} dropped"
            return text
    return _one_line(str(metric.get("evidence") or "")) or "no evidence recorded"


def verdict_reason(card: Mapping[str, Any]) -> str:
    """The verdict in words with its reason: why the run was aborted or stopped, which targets were
    missed, or that every measured target was met."""
    verdict = str(card.get("verdict") or "")
    metrics = [m for m in card.get("metrics") or [] if isinstance(m, Mapping)]
    label = {m.get("name"): str(m.get("label") or m.get("name")) for m in metrics}
    required = set(card.get("required_metrics") or [])
    stopped = card.get("stopped_by") or None
    reason = str(card.get("reason") or "")
    if verdict == "aborted":
        if stopped and stopped.get("blind"):
            return (f"The run lost sight of what it measures and ended the fault early: {stopped.get('words')}. "
                    "It could not judge the system.")
        refused = re.search(r"PreflightFailed: pre-flight failed: (.*?)(?:; nothing was injected)?\)?$", reason)
        if refused:
            return (f"Pre-flight refused to start the fault, so nothing was injected and the system was not judged. "
                    f"Failed checks: {refused.group(1)}.")
        return f"The run did not reach its end ({reason or 'no reason recorded'}). It could not judge the system."
    bits = []
    if stopped:
        bits.append(f"A stop condition ended the fault early: {reason or stopped.get('words')}. The run went on to "
                    "verify, so the post-mortem has data.")
    failed = [m for m in metrics if m.get("status") == "fail"]
    if failed:
        bits.append("Missed: " + "; ".join(_missed(m, label[m.get("name")], m.get("name") in required or
                                                   bool(m.get("required"))) for m in failed) + ".")
    blind = [m for m in metrics if m.get("status") == "not_measured" and m.get("name") in required]
    if blind:
        bits.append("Required but not measured: " + "; ".join(
            f"{label[m.get('name')]} ({metric_why(m)})" for m in blind) + ".")
    if verdict == "pass" or not bits:
        unmeasured = [m for m in metrics if m.get("status") == "not_measured"]
        text = "Every measured target was met" if verdict == "pass" else f"Verdict {verdict}"
        if reason and verdict != "pass":
            text += f": {reason}"
        if unmeasured:
            text += f"; {len(unmeasured)} metric(s) not measured, not required: " + ", ".join(
                label[m.get("name")] for m in unmeasured)
        bits.append(text + ".")
    return " ".join(bits)


def _missed(m: Mapping[str, Any], label: str, required: bool) -> str:
    unit = f" {m.get('unit')}" if m.get("unit") else ""
    target = f"target {m.get('comparison', '')} {_num(m.get('target'))}{unit}"
    text = (f"{label} {_num(m.get('value'))}{unit} ({target})" if m.get("value") is not None
            else f"{label}: {metric_why(m)} ({target})")
    return text if required else f"{text}, not required"


# -- the loss, in its parts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LossLine:
    """One part of the loss: what was counted, by whom, and what it covers."""

    key: str  # the scorecard's events key
    label: str
    value: float | None
    counts: str  # what this number counts (and what it does not)
    short: str  # how a sentence names it ("canaries", "users' events")


def loss_lines(events: Mapping[str, Any]) -> list[LossLine]:
    """The scorecard's ``events`` as the parts an analyst reconciles."""
    sent = events.get("canaries_sent")
    return [
        LossLine("canaries_lost", "canaries lost", events.get("canaries_lost"),
                 f"of {_num(sent)} runbook canaries sent, accepted (2xx) and never stored: exact, for the canaries",
                 "canaries"),
        LossLine("ground_truth_lost", "users' events lost (lab ground truth)", events.get("ground_truth_lost"),
                 "simulated users' events the gateway answered 202 and the events table does not have: exact "
                 "(lab only)", "users' events"),
        LossLine("service_reported_dropped", "the gateways' own drop count", events.get("service_reported_dropped"),
                 "increase of events_dropped_total over the gameday, canaries and users' events together: what "
                 "the services know they discarded", "dropped"),
    ]


def loss_summary(card: Mapping[str, Any]) -> str:
    """The parts of the loss (the scorecard's ``events``) reconciled in one or two sentences."""
    events = card.get("events") or {}
    loss = next((m for m in card.get("metrics") or [] if m.get("name") == "event_loss_count"), None)
    if loss is not None and loss.get("status") == "not_measured":
        return f"The loss was not measured: {metric_why(loss)}."

    def value(key: str) -> float | None:
        v = events.get(key)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    canaries, truth, dropped = value("canaries_lost"), value("ground_truth_lost"), value("service_reported_dropped")
    if canaries is None and truth is None and dropped is None:
        return "The loss was not measured: no canary was accounted and no drop count was read."
    if truth is not None and canaries is not None:
        lost = canaries + truth
        text = (f"{_num(lost)} events were accepted and never stored: {_num(canaries)} canaries + {_num(truth)} "
                "users' events (lab ground truth).")
    elif canaries is not None:
        lost = canaries
        text = (f"{_num(canaries)} canaries were accepted and never stored (users' events have no ground truth "
                "on this target: the total is at least this).")
    else:
        lost = truth or 0.0
        text = f"{_num(lost)} users' events were accepted and never stored (lab ground truth)."
    if dropped is None:
        return text + " The services' own drop count (events_dropped_total) was not read."
    if lost == 0 and dropped == 0:
        return "No event was lost: every canary accepted was stored, and the gateways dropped none."
    if dropped == lost:
        return text + (f" The gateways counted exactly {_num(dropped)} dropped (events_dropped_total): every lost "
                       "event is one they discarded, so the loss is the buffer overflowing, not a silent loss "
                       "elsewhere.")
    if dropped == 0:
        return text + (f" The gateways counted none dropped: all {_num(lost)} were lost where no service counts "
                       "them (in flight, or acknowledged before being stored).")
    if dropped < lost:
        return text + (f" The gateways counted only {_num(dropped)} dropped: {_num(lost - dropped)} lost events "
                       "were discarded where no service counts them (in flight, or acknowledged before being "
                       "stored).")
    return text + (f" The gateways counted {_num(dropped)} dropped, {_num(dropped - lost)} more than were found "
                   "lost (some dropped events were stored by another path, or the count includes events "
                   "outside the gameday's window).")


# -- the configuration that mattered ---------------------------------------------------------------------


def configuration(params: Mapping[str, Any], card: Mapping[str, Any] | None = None,
                  capacity: float | None = None) -> list[str]:
    """What an analyst needs to know of the setup: lab knobs that differ from a healthy lab's, the
    buffer capacity seen, the fault, the stop conditions (and which one fired)."""
    out = []
    if params.get("target") == "lab":
        staged = {k: params[k] for k in HEALTHY_KNOBS if k in params and params[k] != HEALTHY_KNOBS[k]}
        if staged:
            out.append("lab flaws staged (differ from a healthy lab): "
                       + ", ".join(f"`{k}={v}`" for k, v in sorted(staged.items())))
        else:
            out.append("lab: every knob at its healthy default")
        if params.get("lab_overflow") is not None:
            how = ("the oldest buffered event is silently discarded" if params["lab_overflow"] == "drop"
                   else "new events are refused with 503")
            out.append(f"gateway buffer: {params.get('lab_buffer_capacity', '?')} events per replica × "
                       f"{params.get('lab_service_replicas', '?')} replicas; when full, {how} "
                       f"(`lab_overflow={params['lab_overflow']}`)")
            if params.get("lab_event_rate") is not None and params.get("partition_seconds"):
                need = float(params["lab_event_rate"]) * float(params["partition_seconds"])
                out.append(f"users post {_num(float(params['lab_event_rate']))} events/s: a "
                           f"{_num(float(params['partition_seconds']))} s partition needs room for about "
                           f"{_num(need)} events (plus the canaries)")
    if capacity is not None:
        out.append(f"buffer capacity read from the gateways: {_num(capacity)} events over every replica")
    if params.get("partition_seconds") is not None:
        out.append(f"partition: {_num(params.get('partition_seconds'))} s"
                   + (f", mode `{params['lab_partition_mode']}`" if params.get("target") == "lab" and
                      params.get("lab_partition_mode") else ""))
    stops = [f"`{k}={params[k]}`" for k in ("stop_buffer_fraction", "stop_error_rate", "stop_lag_limit")
             if params.get(k) is not None]
    if stops:
        fired = (card or {}).get("stopped_by") or None
        out.append("stop conditions: " + ", ".join(stops)
                   + (f"; `{fired.get('condition')}` fired ({fired.get('words')})" if fired else "; none fired"))
    dropped = ((card or {}).get("events") or {}).get("service_reported_dropped")
    if dropped:
        out.append(f"the gateways dropped {_num(dropped)} events (events_dropped_total over the gameday)")
    return out


# -- moments in the samples ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moment:
    at: datetime
    words: str


def _series(frame: Any, name: str) -> list[float]:
    if frame is None or name not in frame:
        return []
    out = []
    for v in list(frame[name]):
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = math.nan
        out.append(f)
    return out


def moments_from_samples(frame: Any, t0: datetime | None = None) -> list[Moment]:
    """What the time series show and the journal does not: the first reading with a gateway buffer
    full and the first after it was not, the first drops and their total, alerts starting and
    ending to fire, the consumer lag's peak, the first user-facing 5xx."""
    if frame is None or "ts" not in frame or not len(frame):
        return []
    times = [parse_time(str(t)) if not isinstance(t, datetime) else t for t in list(frame["ts"])]
    moments: list[Moment] = []
    fraction = _series(frame, "buffer_fraction_max")
    size, capacity = _series(frame, "buffer_size"), _series(frame, "buffer_capacity")
    full = False
    for i, f in enumerate(fraction):
        if math.isnan(f):
            continue
        if f >= 0.999 and not full:
            held = f" ({_num(size[i])} events held of {_num(capacity[i])})" if size and capacity and \
                not math.isnan(size[i]) and not math.isnan(capacity[i]) else ""
            moments.append(Moment(times[i], f"gateway buffer full in its fullest replica{held}"))
            full = True
        elif f < 0.999 and full:
            moments.append(Moment(times[i], f"gateway buffer no longer full ({f * 100:.0f} % in its fullest replica)"))
            full = False
    dropped = _series(frame, "dropped_total")
    known = [(i, d) for i, d in enumerate(dropped) if not math.isnan(d)]
    if known:
        base = known[0][1]
        first = next(((i, d) for i, d in known if d > base), None)
        if first is not None:
            i, d = first
            moments.append(Moment(times[i], f"the gateways start dropping events ({_num(d - base)} dropped so far)"))
            last_rise = max(i for i, d in known if d > base and (i == 0 or dropped[i - 1] != d))
            total = known[-1][1] - base
            moments.append(Moment(times[last_rise], f"the gateways' last drop: {_num(total)} events dropped in all"))
    alerts = _series(frame, "alerts_firing")
    previous = 0.0
    for i, a in enumerate(alerts):
        if math.isnan(a):
            continue
        if a > previous:
            moments.append(Moment(times[i], f"alerts firing: {_num(a)} (was {_num(previous)}; read by the sampler)"))
        elif a < previous:
            moments.append(Moment(times[i], f"alerts firing: {_num(a)} (was {_num(previous)}; resolved)"))
        previous = a
    lag = _series(frame, "lag_pending")
    finite = [(i, v) for i, v in enumerate(lag) if not math.isnan(v)]
    if finite:
        i, peak = max(finite, key=lambda p: p[1])
        if peak > 0:
            moments.append(Moment(times[i], f"consumer lag at its peak: {_num(peak)} messages pending"))
    errors = _series(frame, "requests_5xx")
    known_errors = [(i, v) for i, v in enumerate(errors) if not math.isnan(v)]
    if known_errors:
        base5 = known_errors[0][1]
        first5 = next(((i, v) for i, v in known_errors if v > base5), None)
        if first5 is not None:
            moments.append(Moment(times[first5[0]], "the gateway's first 5xx answer to a user"))
    return sorted(moments, key=lambda m: m.at)


def offset_of(at: datetime, t0: datetime | None) -> str:
    """``T+00:12`` (``before T+0`` without a T+0)."""
    return format_offset((at - t0).total_seconds()) if t0 is not None else "before T+0"


def journal_t0(entries: Iterable[Mapping[str, Any]]) -> datetime | None:
    """T+0 (the confirmed injection) from the journal, or None."""
    for e in entries:
        if e.get("kind") == "fault.active":
            return parse_time(str(e.get("t0") or e.get("at") or e["ts"]))
    return None
