"""Parameters for the Kubernetes tests, whichever shape the runbook core gives them: the flat
``parameters.SPECS`` with ``validate(raw)``, or the framework's typed ``NatsPartitionParams`` with
``validate(cls, raw)``. The target itself only ever sees a plain mapping (``from_params``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gamedaylib import parameters


def declared() -> set[str]:
    """The parameter names the runbook declares (``gameday run`` refuses any other)."""
    if hasattr(parameters, "SPECS"):
        return set(parameters.SPECS)
    from gamedaylib.gamedays.nats_partition.params import NatsPartitionParams

    return set(parameters.specs(NatsPartitionParams))  # type: ignore[attr-defined]


def validated(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` validated by the runbook's own rules, as the plain mapping ``from_params`` takes."""
    if hasattr(parameters, "SPECS"):
        return dict(parameters.validate(raw))
    from gamedaylib.gamedays.nats_partition.params import NatsPartitionParams

    return dict(parameters.as_dict(parameters.validate(NatsPartitionParams, raw)))  # type: ignore[attr-defined,call-arg]


def split(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``raw`` as (declared by the runbook, read by the target only with its defaults meanwhile)."""
    names = declared()
    return {k: v for k, v in raw.items() if k in names}, {k: v for k, v in raw.items() if k not in names}
