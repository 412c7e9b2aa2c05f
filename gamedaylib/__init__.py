"""gameday: chaos gamedays as interactive, measurable, repeatable runbooks."""

from __future__ import annotations

__version__ = "0.1.0"
