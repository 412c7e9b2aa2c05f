"""Where a gameday runs: the ``Target`` protocol and its two implementations (lab, kubernetes)."""

from __future__ import annotations

from gamedaylib.targets.base import Check, Endpoints, GroundTruth, Target

__all__ = ["Check", "Endpoints", "GroundTruth", "Target"]
