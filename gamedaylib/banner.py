"""The status banner at the top of each phase, and the verdict banner at the end.

One block of HTML with inline CSS only (no scripts, fonts or images from elsewhere), so it renders the
same in JupyterLab, in the archived notebook and in ``report.html``. It is meant for a shared screen:
large type, white on dark, and every state says its name in words as well as in colour
(``ACTIVE`` on red, ``OFF`` on green, ``UNKNOWN`` on grey). Its plain-text form is one line, for
readers without HTML. What the tiles say is the gameday's (``Scenario.tiles``).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gamedaylib.scenario import Tile

__all__ = ["Banner", "VerdictBanner", "status_banner_html", "verdict_banner_html"]

# colours with white text at a contrast ratio of at least 4.5:1
RED = "#b00020"
GREEN = "#1b6e20"
GREY = "#424242"
AMBER = "#8a4b00"
BLUE = "#0d3b66"
DARK = "#111827"

STATE_COLOURS = {"ok": GREEN, "alarm": RED, "warn": AMBER, "info": BLUE, "unknown": GREY}
VERDICT_COLOURS = {"pass": GREEN, "fail": RED, "aborted": AMBER}


def _tile(tile: Tile) -> str:
    colour = STATE_COLOURS.get(tile.state, GREY)
    return (
        f"<div style='background:{colour};color:#ffffff;padding:10px 18px;border-radius:8px;"
        f"min-width:150px;margin:4px;flex:1 1 150px'>"
        f"<div style='font-size:16px;letter-spacing:0.08em;text-transform:uppercase;opacity:0.92'>"
        f"{html.escape(tile.label)}</div>"
        f"<div style='font-size:34px;font-weight:700;line-height:1.15'>{html.escape(tile.value)}</div></div>"
    )


def status_banner_html(*, title: str, offset: str, tiles: Sequence[Tile], subtitle: str = "",
                       accent: str = "info") -> str:
    """The banner as one self-contained HTML block. ``accent`` colours its left edge (the fault's
    state: ``alarm`` while it is in force)."""
    summary = " | ".join([f"[{title}]", offset, *(f"{t.label} {t.value}" for t in tiles)])
    return (
        f"<div class='gameday-banner' role='status' aria-label='{html.escape(summary, quote=True)}' "
        f"style='background:{DARK};color:#ffffff;font-family:Helvetica,Arial,sans-serif;"
        f"padding:14px 18px;border-radius:10px;border-left:14px solid {STATE_COLOURS.get(accent, GREY)};"
        f"margin:6px 0'>"
        f"<div style='display:flex;justify-content:space-between;align-items:baseline;flex-wrap:wrap'>"
        f"<div style='font-size:38px;font-weight:800'>{html.escape(title)}</div>"
        f"<div style='font-size:44px;font-weight:800;font-family:DejaVu Sans Mono,Menlo,monospace'>"
        f"{html.escape(offset)}</div></div>"
        + (f"<div style='font-size:18px;color:#e5e7eb'>{html.escape(subtitle)}</div>" if subtitle else "")
        + f"<div style='display:flex;flex-wrap:wrap;margin-top:8px'>{''.join(_tile(t) for t in tiles)}</div></div>"
    )


def verdict_banner_html(*, gameday: str, verdict: str, reason: str = "", archive: str = "") -> str:
    """The run's verdict as large as the status banner: PASS, FAIL or ABORTED, and why in words."""
    colour = VERDICT_COLOURS.get(verdict, GREY)
    return (
        f"<div class='gameday-verdict' role='status' style='background:{colour};color:#ffffff;"
        f"font-family:Helvetica,Arial,sans-serif;padding:16px 22px;border-radius:10px;margin:8px 0'>"
        f"<div style='font-size:20px;letter-spacing:0.08em;text-transform:uppercase'>{html.escape(gameday)} "
        f"verdict</div><div style='font-size:64px;font-weight:800;line-height:1.1'>"
        f"{html.escape(verdict.upper())}</div>"
        + (f"<div style='font-size:22px;margin-top:6px'>{html.escape(reason)}</div>" if reason else "")
        + (f"<div style='font-size:15px;margin-top:8px;opacity:0.9'>archive: {html.escape(archive)}</div>"
           if archive else "")
        + "</div>"
    )


@dataclass(frozen=True)
class Banner:
    """Displayable status banner: HTML for notebooks, one line of text for everything else."""

    title: str
    offset: str
    tiles: tuple[Tile, ...]
    subtitle: str = ""
    accent: str = "info"

    def text(self) -> str:
        return " | ".join([f"[{self.title}]", self.offset, *(f"{t.label} {t.value}" for t in self.tiles)])

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/html": status_banner_html(title=self.title, offset=self.offset, tiles=self.tiles,
                                                subtitle=self.subtitle, accent=self.accent),
                "text/plain": self.text()}


@dataclass(frozen=True)
class VerdictBanner:
    gameday: str
    verdict: str
    reason: str = ""
    archive: str = ""

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/html": verdict_banner_html(gameday=self.gameday, verdict=self.verdict, reason=self.reason,
                                                 archive=self.archive),
                "text/plain": f"{self.gameday} verdict: {self.verdict.upper()}"
                              + (f" ({self.reason})" if self.reason else "")}
