"""The production guard: a gameday refuses a production-looking namespace unless told otherwise."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from gamedaylib.exceptions import ProductionGuard
from gamedaylib.parameters import DEFAULT_PRODUCTION_PATTERNS

__all__ = ["guard_production", "is_production"]


def is_production(namespace: str, patterns: Iterable[str] = DEFAULT_PRODUCTION_PATTERNS) -> bool:
    return any(fnmatch.fnmatchcase(namespace, p) for p in patterns)


def guard_production(namespace: str, patterns: Iterable[str], confirm_production: bool) -> None:
    """Refuse a production-looking namespace unless the run says so explicitly."""
    patterns = tuple(patterns)
    if is_production(namespace, patterns) and not confirm_production:
        raise ProductionGuard(
            f"namespace {namespace!r} matches a production pattern {list(patterns)}; "
            "set confirm_production=True to run a gameday there"
        )
