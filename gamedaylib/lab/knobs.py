"""Lab knobs: the switches that stage real flaws in the lab, and its shape (DESIGN.md "Lab knobs").

Public API:

- ``DEFAULT_KNOBS``: the healthy system.
- ``validate_knobs(knobs) -> dict``: the defaults overlaid with ``knobs``, coerced and checked.
  Strings as they come from ``-p NAME=VALUE`` are accepted ("true", "5", "2.5"). Raises
  ``InvalidParameters`` naming every bad knob (unknown name, wrong type, rate or capacity not
  positive, value outside its enum or range).
- ``jetstream_replicas(knobs) -> int``: replicas of the stream and of the consumer.
- ``events_ddl(knobs) -> str``: the SQL that creates the ``events`` table (``gamedaylib/sql/events.sql``)
  for these knobs; the supervisor runs it once against the lab's database. With
  ``lab_idempotency=False`` the index on ``idempotency_key`` is not unique, so the consumer's plain
  INSERT stores duplicates.

The shape of the lab: ``lab_nats_nodes`` (1..5, default 3; 1 = a single nats-server) is the size of
the NATS cluster, whose stream ``EVENTS`` and durable consumer ``reporting`` have ``min(3, nodes)``
replicas; ``lab_service_replicas`` (1..4, default 2) is the number of ``api-gateway`` and of
``reporting`` processes.

Knobs are fixed when a lab starts; services read them from ``config.json``.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

from gamedaylib.exceptions import InvalidParameters, LabError

DEFAULT_KNOBS: dict[str, Any] = {
    "lab_event_rate": 5.0,
    "lab_buffer_capacity": 10000,
    "lab_overflow": "reject",
    "lab_retry": True,
    "lab_idempotency": True,
    "lab_partition_mode": "blackhole",
    "lab_nats_nodes": 3,
    "lab_service_replicas": 2,
}

OVERFLOW_MODES = ("reject", "drop")
PARTITION_MODES = ("blackhole", "reset")
NATS_NODES_RANGE = (1, 5)  # nats-server cluster size; JetStream replicates on min(3, nodes)
SERVICE_REPLICAS_RANGE = (1, 4)  # processes of api-gateway and of reporting

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}

_UNIQUE_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency_key_idx"
_PLAIN_INDEX = "CREATE INDEX IF NOT EXISTS events_idempotency_key_idx"


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"expected true or false, got {value!r}")


def _as_positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"expected a number, got {value!r}") from exc
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"must be a positive number, got {value!r}")
    return number


def _as_positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"expected an integer, got {value!r}")
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError as exc:
            raise ValueError(f"expected an integer, got {value!r}") from exc
    if not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


def _as_int_in(low: int, high: int) -> Any:
    def check(value: Any) -> int:
        number = _as_positive_int(value)
        if not low <= number <= high:
            raise ValueError(f"must be an integer from {low} to {high}, got {value!r}")
        return number

    return check


def _as_choice(choices: tuple[str, ...]) -> Any:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value.strip().lower()

    return check


_COERCE = {
    "lab_event_rate": _as_positive_float,
    "lab_buffer_capacity": _as_positive_int,
    "lab_overflow": _as_choice(OVERFLOW_MODES),
    "lab_retry": _as_bool,
    "lab_idempotency": _as_bool,
    "lab_partition_mode": _as_choice(PARTITION_MODES),
    "lab_nats_nodes": _as_int_in(*NATS_NODES_RANGE),
    "lab_service_replicas": _as_int_in(*SERVICE_REPLICAS_RANGE),
}


def validate_knobs(knobs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the effective knobs (defaults overlaid with ``knobs``), or raise ``InvalidParameters``."""
    knobs = dict(knobs or {})
    problems: dict[str, str] = {}
    effective = dict(DEFAULT_KNOBS)
    for name, value in knobs.items():
        coerce = _COERCE.get(name)
        if coerce is None:
            problems[name] = f"unknown lab knob (known: {', '.join(DEFAULT_KNOBS)})"
            continue
        try:
            effective[name] = coerce(value)
        except ValueError as exc:
            problems[name] = str(exc)
    if problems:
        raise InvalidParameters(problems)
    return effective


def events_ddl(knobs: dict[str, Any] | None = None) -> str:
    """The ``events`` table DDL for these knobs (unique key index only with ``lab_idempotency``)."""
    effective = validate_knobs(knobs)
    sql = resources.files("gamedaylib").joinpath("sql/events.sql").read_text(encoding="utf-8")
    if _UNIQUE_INDEX not in sql:
        raise LabError("gamedaylib/sql/events.sql lost its idempotency_key index")
    if not effective["lab_idempotency"]:
        sql = sql.replace(_UNIQUE_INDEX, _PLAIN_INDEX)
    return sql


def jetstream_replicas(knobs: dict[str, Any]) -> int:
    """Replicas of stream ``EVENTS`` and of the durable consumer: ``min(3, lab_nats_nodes)`` (JetStream
    allows at most 3 useful replicas; a 5-node cluster places them on 3 of its nodes)."""
    return min(3, int(knobs.get("lab_nats_nodes", DEFAULT_KNOBS["lab_nats_nodes"])))
