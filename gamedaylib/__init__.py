"""gameday: chaos gamedays as interactive, measurable, repeatable runbooks.

The public API (a notebook's first cell uses the first two)::

    from gamedaylib import Gameday, from_namespace
    gd = Gameday.start(from_namespace(globals()))

``Gameday``, ``from_namespace``, ``list_gamedays`` and the exception hierarchy are loaded on first use, so
that ``gameday --version`` and the lab's services stay light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

__all__ = [
    "Gameday",
    "GamedayError",
    "InvalidParameters",
    "PreflightFailed",
    "ProbeError",
    "__version__",
    "from_namespace",
    "list_gamedays",
]

_LAZY = {
    "Gameday": ("gamedaylib.runbook", "Gameday"),
    "from_namespace": ("gamedaylib.parameters", "from_namespace"),
    "list_gamedays": ("gamedaylib.gamedays", "scenarios"),
    "GamedayError": ("gamedaylib.exceptions", "GamedayError"),
    "InvalidParameters": ("gamedaylib.exceptions", "InvalidParameters"),
    "PreflightFailed": ("gamedaylib.exceptions", "PreflightFailed"),
    "ProbeError": ("gamedaylib.exceptions", "ProbeError"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'gamedaylib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
