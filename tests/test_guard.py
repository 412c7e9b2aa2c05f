"""The production guard: a production-looking namespace is refused unless the run says so."""

from __future__ import annotations

import pytest

from gamedaylib.exceptions import ProductionGuard
from gamedaylib.guard import guard_production, is_production


@pytest.mark.parametrize(
    ("namespace", "expected"),
    [("teei-prod", True), ("prod", True), ("production-eu", True), ("teei-staging", False), ("dev", False),
     ("teei-prod-canary", False), ("Prod", False)],
)
def test_default_production_patterns(namespace: str, expected: bool) -> None:
    assert is_production(namespace) is expected


def test_a_production_namespace_needs_confirmation() -> None:
    with pytest.raises(ProductionGuard, match="confirm_production") as info:
        guard_production("teei-prod", ["*-prod"], confirm_production=False)
    assert "teei-prod" in str(info.value)
    guard_production("teei-prod", ["*-prod"], confirm_production=True)
    guard_production("teei-staging", ["*-prod"], confirm_production=False)
    guard_production("live", (p for p in ["*-prod"]), confirm_production=False)  # any iterable of patterns
    with pytest.raises(ProductionGuard):
        guard_production("live", ["live", "*-prod"], confirm_production=False)
