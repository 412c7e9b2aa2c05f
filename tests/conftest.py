"""Shared fixtures (keep small; helpers live in runtools.py, imported by name)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from runtools import run_gameday

# The real Chaos Mesh NetworkChaos CRD beside the project (../shared/chaos-mesh): every NetworkChaos the
# tests build, and every one the runs they start build (the variable is inherited), is validated against
# its schema. The package itself reads nothing outside itself at run time.
_CRD = Path(__file__).resolve().parents[2] / "shared" / "chaos-mesh" / "chaos-mesh.org_networkchaos.yaml"
if _CRD.is_file():
    os.environ.setdefault("GAMEDAY_NETWORKCHAOS_CRD", str(_CRD))


@pytest.fixture
def gameday_cli() -> Any:
    return run_gameday
