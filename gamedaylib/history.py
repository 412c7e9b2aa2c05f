"""The history of archived runs, for analysts: one row per run that started, newest last.

``runs(output_dir)`` reads every ``<gameday_id>/<run_id>/scorecard.json`` into a pandas DataFrame
(one row per run: id, times, target, profile, verdict, each metric's value and status), filtered by
gameday, target, verdict and start time. A folder whose journal never recorded ``run.started`` (a
refused or never-run live copy) is left out unless asked for. ``compare`` puts two runs side by
side with the change; ``chart`` draws RTO, RPO and loss across runs with their targets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from gamedaylib.archive import SCORECARD_FILE
from gamedaylib.exceptions import GamedayError
from gamedaylib.journal import JOURNAL_FILE, Journal

__all__ = ["BASE_COLUMNS", "chart", "compare", "find_run", "runs", "table"]

BASE_COLUMNS = ("gameday_id", "run_id", "started_at", "finished_at", "target", "profile", "verdict", "reason")
CHART_METRICS = (("rto_seconds", "RTO (s)"), ("rpo_seconds", "RPO (s)"), ("event_loss_count", "events lost"))


def _started(run_dir: Path) -> bool:
    return any(e.get("kind") == "run.started" for e in Journal.read(run_dir / JOURNAL_FILE))


def runs(
    output_dir: Path,
    *,
    gameday: str | None = None,
    target: str | None = None,
    verdict: str | None = None,
    since: datetime | None = None,
    include_unstarted: bool = False,
) -> pd.DataFrame:
    """Every archived run under ``output_dir``, oldest first: the base columns, then
    ``<metric>`` (value) and ``<metric>_status`` for every metric any run has."""
    rows: list[dict[str, Any]] = []
    for card_path in sorted(output_dir.glob("*/*/" + SCORECARD_FILE)):
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not include_unstarted and not _started(card_path.parent):
            continue
        row: dict[str, Any] = {k: card.get(k) for k in BASE_COLUMNS}
        row["path"] = str(card_path.parent)
        for m in card.get("metrics") or []:
            row[m["name"]] = m.get("value")
            row[f"{m['name']}_status"] = m.get("status")
            row[f"{m['name']}_target"] = m.get("target")
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*BASE_COLUMNS, "path"] if not rows else None)
    if frame.empty:
        return frame
    frame["started"] = pd.to_datetime(frame["started_at"], utc=True, errors="coerce", format="ISO8601")
    if gameday:
        frame = frame[frame["gameday_id"] == gameday]
    if target:
        frame = frame[frame["target"] == target]
    if verdict:
        frame = frame[frame["verdict"] == verdict]
    if since is not None:
        frame = frame[frame["started"] >= pd.Timestamp(since)]
    return frame.sort_values(["started", "run_id"]).drop(columns=["started"]).reset_index(drop=True)


def table(frame: pd.DataFrame, metrics: Sequence[str]) -> str:
    """A fixed-width text table: the base columns and each metric (``!`` marks a miss or no measure)."""
    heads = ["gameday_id", "run_id", "started_at", "target", "profile", "verdict", *metrics]
    lines = [heads]
    for _, r in frame.iterrows():
        cells = [str(r.get("gameday_id", "")), str(r["run_id"]), str(r["started_at"] or "")[:19], str(r["target"]),
                 str(r["profile"]), str(r["verdict"])]
        for name in metrics:
            value = r.get(name)
            mark = "" if r.get(f"{name}_status") == "pass" else "!"
            cells.append("-" if value is None or pd.isna(value) else f"{float(value):g}{mark}")
        lines.append(cells)
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(heads))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in lines)


def find_run(output_dir: Path, ref: str) -> Path:
    """An archive folder from a path or a run id (``GamedayError`` when none or several match)."""
    path = Path(ref)
    if (path / SCORECARD_FILE).is_file():
        return path
    found = sorted(p.parent for p in output_dir.glob(f"*/{ref}/{SCORECARD_FILE}"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise GamedayError(f"no archived run {ref!r}: give an archive folder or a run id under {output_dir}")
    raise GamedayError(f"run id {ref!r} is in several gamedays: {', '.join(map(str, found))}; give the folder")


def compare(a: Path, b: Path) -> pd.DataFrame:
    """Two runs' metrics side by side: metric, target, A, B, change (B − A), status A → B."""
    cards = [json.loads((p / SCORECARD_FILE).read_text(encoding="utf-8")) for p in (a, b)]
    by_name = [{m["name"]: m for m in c.get("metrics") or []} for c in cards]
    names = list(by_name[0]) + [n for n in by_name[1] if n not in by_name[0]]
    rows = []
    for name in names:
        ma, mb = by_name[0].get(name, {}), by_name[1].get(name, {})
        va, vb = ma.get("value"), mb.get("value")
        change = None if va is None or vb is None else round(float(vb) - float(va), 3)
        rows.append({"metric": ma.get("label") or mb.get("label") or name,
                     "target": f"{(mb or ma).get('comparison', '')} {(mb or ma).get('target', '')}".strip(),
                     "unit": (mb or ma).get("unit", ""), "a": va, "b": vb, "change": change,
                     "status": f"{ma.get('status', '—')} → {mb.get('status', '—')}"})
    rows.append({"metric": "verdict", "target": "", "unit": "", "a": cards[0].get("verdict"),
                 "b": cards[1].get("verdict"), "change": None,
                 "status": f"{cards[0].get('verdict')} → {cards[1].get('verdict')}"})
    return pd.DataFrame(rows)


def chart(frame: pd.DataFrame, path: Path) -> Path | None:
    """RTO, RPO and loss across runs, bars coloured by status, the targets drawn (PNG); None with fewer
    than two runs."""
    if len(frame) < 2:
        return None
    from gamedaylib import charts

    records = []
    for _, r in frame.iterrows():
        record: dict[str, Any] = {"run_id": r["run_id"], "gameday_id": r.get("gameday_id")}
        for name, _label in CHART_METRICS:
            record[name] = {"value": _none(r.get(name)), "target": _none(r.get(f"{name}_target")),
                            "status": r.get(f"{name}_status")}
        records.append(record)
    fig = charts.history_figure(records)
    charts.save(fig, path)
    return path


def _none(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else value
