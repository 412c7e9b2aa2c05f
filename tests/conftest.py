"""Shared fixtures (keep small; helpers live in runtools.py, imported by name)."""

from __future__ import annotations

from typing import Any

import pytest
from runtools import run_gameday


@pytest.fixture
def gameday_cli() -> Any:
    return run_gameday
