"""Lab knobs: the switches that shape the lab and stage real flaws in it (DESIGN.md "Lab knobs").

Each knob is declared once, here, as a typed parameter (``gamedaylib.parameters.param``): the
gamedays' parameters include these classes, ``gameday lab up -p lab_NAME=VALUE`` and the supervisor
check them with the same rules. Defaults make a healthy, production-shaped system.

- ``LabKnobs``: every lab (the GAMEDAY-001 stack: NATS cluster, gateway and reporting replicas,
  simulated users, the partition proxy); ``FailoverLabKnobs`` adds GAMEDAY-002's database cluster.
- ``validate_knobs(knobs) -> dict``: the defaults overlaid with ``knobs``, checked (raises
  ``InvalidParameters`` naming every bad knob).
- ``jetstream_replicas(knobs) -> int``: replicas of the stream and of the consumer.
- ``events_ddl(knobs) -> str``: the SQL that creates the ``events`` table (``gamedaylib/sql/events.sql``)
  for these knobs. With ``lab_idempotency=False`` the index on ``idempotency_key`` is not unique, so
  the consumer's plain INSERT stores duplicates.

Knobs are fixed when a lab starts; services read them from ``config.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from gamedaylib.exceptions import InvalidParameters, LabError
from gamedaylib.parameters import as_dict, check_bool, check_int, check_values, choice, number_param, param

OVERFLOW_MODES = ("reject", "drop")
PARTITION_MODES = ("blackhole", "reset")

_UNIQUE_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency_key_idx"
_PLAIN_INDEX = "CREATE INDEX IF NOT EXISTS events_idempotency_key_idx"
_SECTION = "Lab"


@dataclass(frozen=True, kw_only=True)
class LabKnobs:
    """The lab's shape and its staged flaws."""

    lab_event_rate: float = number_param(5.0, "simulated user events per second", limit=(0.01, 10_000.0),
                                         section=_SECTION)
    lab_buffer_capacity: int = param(10000, "events each gateway replica holds while NATS is unreachable",
                                     type="int", check=check_int, limit=(1, 10_000_000), section=_SECTION)
    lab_overflow: str = param("reject", "full buffer: reject (503) | drop (oldest silently lost)", type="str",
                              check=choice(*OVERFLOW_MODES), section=_SECTION)
    lab_retry: bool = param(True, "false: a failed publish is not retried", type="bool", check=check_bool,
                            section=_SECTION)
    lab_idempotency: bool = param(True, "false: no Nats-Msg-Id and no unique key in the consumer", type="bool",
                                  check=check_bool, section=_SECTION)
    lab_partition_mode: str = param("blackhole", "blackhole (bytes dropped, like iptables DROP) | reset",
                                    type="str", check=choice(*PARTITION_MODES), section=_SECTION)
    lab_nats_nodes: int = param(3, "NATS cluster size (1 means a single server)", type="int", check=check_int,
                                limit=(1, 5), section=_SECTION)
    lab_service_replicas: int = param(2, "processes of api-gateway and of reporting", type="int",
                                      check=check_int, limit=(1, 4), section=_SECTION)


@dataclass(frozen=True, kw_only=True)
class FailoverLabKnobs(LabKnobs):
    """GAMEDAY-002's lab: the events database is a Patroni-managed PostgreSQL pair with a DCS and a
    read-write endpoint, instead of one PostgreSQL."""

    lab_pg_replication: str = param("sync", "sync (no confirmed write lost) | async (a replication stall "
                                    "before the kill loses confirmed writes)", type="str",
                                    check=choice("sync", "async"), section=_SECTION)
    lab_reporting_ack: str = param("after_commit", "after_commit | before_commit (acks what it may not store)",
                                   type="str", check=choice("after_commit", "before_commit"), section=_SECTION)
    lab_pg_endpoint: str = param("proxy", "proxy (HAProxy checking Patroni's /primary; multihost when haproxy "
                                 "is missing) | multihost (a libpq multi-host DSN)", type="str",
                                 check=choice("proxy", "multihost"), section=_SECTION)


DEFAULT_KNOBS: dict[str, Any] = as_dict(LabKnobs())
HEALTHY_KNOBS: dict[str, Any] = as_dict(FailoverLabKnobs())  # every shape's knobs at their healthy defaults
SHAPES: dict[str, type[LabKnobs]] = {"pipeline": LabKnobs, "failover": FailoverLabKnobs}


def shape_of(knobs: Mapping[str, Any]) -> str:
    """The lab's shape its knobs say: ``failover`` (a Patroni pair) or ``pipeline`` (one PostgreSQL)."""
    return "failover" if "lab_pg_replication" in knobs else "pipeline"


def jetstream_replicas(knobs: Mapping[str, Any]) -> int:
    """Replicas of stream ``EVENTS`` and of the durable consumer: ``min(3, lab_nats_nodes)`` (JetStream
    allows at most 3 useful replicas; a 5-node cluster places them on 3 of its nodes)."""
    return min(3, int(knobs.get("lab_nats_nodes", DEFAULT_KNOBS["lab_nats_nodes"])))


def knob_names(cls: type[LabKnobs] = LabKnobs) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def validate_knobs(knobs: Mapping[str, Any] | None = None, cls: type[LabKnobs] | None = None) -> dict[str, Any]:
    """The effective knobs (defaults overlaid with ``knobs``), or ``InvalidParameters`` naming each
    unknown or wrong knob. The shape (``cls``) is the one the knobs say unless given."""
    given = dict(knobs or {})
    return check_values(cls or SHAPES[shape_of(given)], given)


def knobs_of(params: Any, cls: type[LabKnobs] = LabKnobs) -> dict[str, Any]:
    """The lab knobs a gameday's parameters carry (what a lab it starts is started with)."""
    return {name: getattr(params, name) for name in knob_names(cls) if hasattr(params, name)}


def check_knobs(wanted: Mapping[str, Any], running: Mapping[str, Any]) -> None:
    """Refuse knobs that differ from those the running lab was started with, naming each (a knob the
    running lab does not have means it has another shape: a GAMEDAY-002 run needs the Patroni pair)."""
    problems = {
        name: f"the running lab has {name}={running.get(name)!r}, this run asks for {value!r} "
        "(stop it with `gameday lab down` or use the same knobs)"
        for name, value in wanted.items()
        if name in running and _norm(running[name]) != _norm(value)
    }
    problems.update({
        name: f"the running lab was started without {name} (another gameday's shape); stop it with "
        "`gameday lab down` and let this run start its own, or `gameday lab up --gameday` this one's"
        for name in wanted if name not in running and name not in DEFAULT_KNOBS
    })
    if problems:
        raise InvalidParameters(problems)


def _norm(value: Any) -> Any:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def events_ddl(knobs: Mapping[str, Any] | None = None) -> str:
    """The ``events`` table DDL for these knobs (unique key index only with ``lab_idempotency``)."""
    effective = validate_knobs({k: v for k, v in (knobs or {}).items() if k in DEFAULT_KNOBS})
    sql = resources.files("gamedaylib").joinpath("sql/events.sql").read_text(encoding="utf-8")
    if _UNIQUE_INDEX not in sql:
        raise LabError("gamedaylib/sql/events.sql lost its idempotency_key index")
    if not effective["lab_idempotency"]:
        sql = sql.replace(_UNIQUE_INDEX, _PLAIN_INDEX)
    return sql
