"""Parameters for the Kubernetes tests: GAMEDAY-001's typed parameters, validated by the runbook's own
rules; the target itself only ever sees a plain mapping (``from_params``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gamedaylib.gamedays.nats_partition.params import NatsPartitionParams
from gamedaylib.parameters import as_dict, specs, validate


def declared() -> set[str]:
    """The parameter names the runbook declares (``gameday run`` refuses any other)."""
    return set(specs(NatsPartitionParams))


def validated(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` validated by the runbook's own rules, as the plain mapping ``from_params`` takes."""
    return as_dict(validate(NatsPartitionParams, raw))


def split(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``raw`` as (declared by the runbook, anything else)."""
    names = declared()
    return {k: v for k, v in raw.items() if k in names}, {k: v for k, v in raw.items() if k not in names}
