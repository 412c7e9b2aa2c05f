"""The gamedays this installation has, discovered as plug-ins.

A gameday is a package that registers its ``Scenario`` under the Python entry point group
``gameday.gamedays``, the entry point's name being the gameday's id (gameday's own two register the same
way, in its ``pyproject.toml``)::

    [project.entry-points."gameday.gamedays"]
    GAMEDAY-101 = "acme_gamedays.redis_failover:SCENARIO"

A team's own package of gamedays installed beside gameday thus shows in ``gameday list``. A plug-in that
cannot be loaded (it fails to import, names no ``Scenario``, or its id differs from its entry point's
name) is reported by ``problems()`` in one line and hides none of the others; an id registered twice keeps
gameday's own registration (else the first found on the path) and reports the other.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from gamedaylib.exceptions import InvalidParameters

if TYPE_CHECKING:
    from gamedaylib.scenario import Scenario

__all__ = ["DEFAULT_GAMEDAY", "ENTRY_POINT_GROUP", "gameday_ids", "monitoring_dirs", "problems", "refresh",
           "scenario", "scenarios"]

ENTRY_POINT_GROUP = "gameday.gamedays"
GAMEDAYS_DIR = Path(__file__).resolve().parent
MONITORING = "monitoring"  # each gameday's alert rules (*.rules.yml), lab-overrides.yml and tests/
DEFAULT_GAMEDAY = "GAMEDAY-001"
_OWN_DISTRIBUTION = "gameday"  # its registrations win over a plug-in's claiming the same id
_NONE_REGISTERED = (f"no gameday is registered under the entry point group {ENTRY_POINT_GROUP!r}: install gameday "
                    "again (make install, or pip install -e .) so that its entry points exist")


@dataclass(frozen=True)
class _Registered:
    """One entry point of the group: the gameday's id, where it points, and the distribution naming it."""

    id: str
    entry_point: EntryPoint
    distribution: str

    @property
    def source(self) -> str:
        return f"{self.entry_point.value} (from {self.distribution})"


@functools.cache
def _registry() -> tuple[dict[str, _Registered], tuple[str, ...]]:
    """The registered gamedays by id, and the one-line problems found while listing them. An id registered
    twice keeps gameday's own registration, else the first found on the path; the others are refused."""
    found: dict[str, _Registered] = {}
    troubles: list[str] = []
    registered = [_Registered(ep.name, ep, ep.dist.name if ep.dist is not None else "an unknown distribution")
                  for ep in entry_points(group=ENTRY_POINT_GROUP)]
    registered.sort(key=lambda entry: entry.distribution != _OWN_DISTRIBUTION)  # stable: path order otherwise
    for entry in registered:
        if entry.id in found:
            troubles.append(f"{entry.id}: registered twice, by {found[entry.id].source} and by {entry.source}; "
                            f"the second is ignored")
            continue
        found[entry.id] = entry
    if not found:
        troubles.append(_NONE_REGISTERED)
    return dict(sorted(found.items())), tuple(troubles)


@functools.cache
def _load(gameday_id: str) -> Scenario:
    """The registered gameday's ``Scenario``; ``InvalidParameters`` with one line saying why it cannot be
    loaded (an import error, not a Scenario, an id that differs from the entry point's name)."""
    from gamedaylib.scenario import Scenario

    entry = _registry()[0][gameday_id]
    try:
        found = entry.entry_point.load()
    except Exception as exc:  # a plug-in's own failure, whatever it is, is reported, never raised through
        why = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise InvalidParameters({"gameday_id": f"gameday {gameday_id} cannot be loaded from {entry.source}: "
                                               f"{why}"}) from exc
    if not isinstance(found, Scenario):
        raise InvalidParameters({"gameday_id": f"gameday {gameday_id} from {entry.source} is a "
                                               f"{type(found).__name__}, not a gamedaylib.scenario.Scenario"})
    if found.id != gameday_id:
        raise InvalidParameters({"gameday_id": f"gameday {gameday_id} from {entry.source} declares the id "
                                               f"{found.id!r}; the entry point's name must be the gameday's id"})
    return found


def refresh() -> None:
    """Forget what was discovered (after installing or removing a plug-in in this process)."""
    _registry.cache_clear()
    _load.cache_clear()


def gameday_ids() -> tuple[str, ...]:
    """The ids of every registered gameday, loadable or not, sorted."""
    return tuple(_registry()[0])


def scenario(gameday_id: str) -> Scenario:
    """The gameday named ``gameday_id``; ``InvalidParameters`` naming the known ones, or saying why this one
    cannot be loaded, otherwise."""
    known = _registry()[0]
    if not known:
        raise InvalidParameters({"gameday_id": f"unknown gameday {gameday_id!r}: {_NONE_REGISTERED}"})
    if gameday_id not in known:
        raise InvalidParameters({"gameday_id": f"unknown gameday {gameday_id!r}; this installation has "
                                               f"{', '.join(known)} (gameday list)"})
    return _load(gameday_id)


def scenarios() -> list[Scenario]:
    """Every registered gameday that loads, in id order (the others are in ``problems()``)."""
    found = []
    for gameday_id in gameday_ids():
        try:
            found.append(_load(gameday_id))
        except InvalidParameters:
            continue
    return found


def problems() -> list[str]:
    """One line per registered gameday that cannot be loaded, and per registration refused."""
    lines = list(_registry()[1])
    for gameday_id in gameday_ids():
        try:
            _load(gameday_id)
        except InvalidParameters as exc:
            lines.append(exc.problems["gameday_id"])
    return lines


def _package_dir(entry: _Registered) -> Path | None:
    """The folder of the module an entry point names, found without running that module."""
    try:
        spec = importlib.util.find_spec(entry.entry_point.module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return Path(spec.origin).resolve().parent if spec.origin else None


def monitoring_dirs() -> list[Path]:
    """Every registered gameday's ``monitoring/`` folder (alert rules the lab's Prometheus loads); found
    from the entry points' packages without importing the gamedays themselves."""
    dirs = {d / MONITORING for entry in _registry()[0].values() if (d := _package_dir(entry)) is not None}
    return sorted(p for p in dirs if p.is_dir())
