"""gamedaylib's public API is what ``__all__`` lists (as httpx tests its own): every name resolves,
nothing else is offered, and importing the package stays light (the heavy parts load on first use)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from importlib import metadata

import pytest

import gamedaylib
from gamedaylib.exceptions import GamedayError


def test_all_exports_resolve_and_nothing_else_is_offered() -> None:
    assert len(gamedaylib.__all__) == len(set(gamedaylib.__all__))
    assert dir(gamedaylib) == sorted(gamedaylib.__all__)
    for name in gamedaylib.__all__:
        member = getattr(gamedaylib, name)
        assert member is not None, name
        if name != "__version__":
            assert getattr(member, "__module__", "").startswith("gamedaylib."), name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        gamedaylib.Nope  # noqa: B018 - an unknown name is an AttributeError, not a lazy import error


def test_the_notebooks_first_cell_and_the_exceptions() -> None:
    namespace: dict[str, object] = {}
    exec("from gamedaylib import *", namespace)  # noqa: S102 - what a notebook may do
    assert set(gamedaylib.__all__) <= set(namespace)
    assert namespace["Gameday"].__name__ == "Gameday"  # type: ignore[attr-defined]
    assert callable(namespace["from_namespace"]) and callable(namespace["list_gamedays"])
    assert [s.id for s in gamedaylib.list_gamedays()] == ["GAMEDAY-001", "GAMEDAY-002"]
    for name in ("GamedayError", "InvalidParameters", "PreflightFailed", "ProbeError"):
        assert issubclass(getattr(gamedaylib, name), GamedayError), name
    assert gamedaylib.__version__ == metadata.version("gameday")


def test_every_modules_own_all_resolves() -> None:
    checked = 0
    for info in pkgutil.walk_packages(gamedaylib.__path__, "gamedaylib."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"{info.name}.__all__ lists {name!r}, which it does not define"
            checked += 1
    assert checked > 50


def test_importing_the_package_stays_light() -> None:
    """``gameday --version`` and the lab's services import gamedaylib without pandas, widgets or the runbook."""
    code = ("import sys, gamedaylib; heavy = [m for m in ('pandas', 'matplotlib', 'ipywidgets', 'papermill', "
            "'gamedaylib.runbook', 'gamedaylib.run') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
