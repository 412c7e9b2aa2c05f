"""Lab knobs: validation, the table they create, and each flaw they stage, shown against the lab's
ground truth (the users' answers) and the rows in PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from labtools import RunningLab, running_lab, wait_for

from gamedaylib.exceptions import InvalidParameters
from gamedaylib.lab.cli import parse_knob_assignments
from gamedaylib.lab.knobs import DEFAULT_KNOBS, events_ddl, jetstream_replicas, validate_knobs

# -- validation (no processes) -------------------------------------------------------------------


def test_defaults_make_a_healthy_system() -> None:
    assert validate_knobs({}) == DEFAULT_KNOBS == {
        "lab_event_rate": 5.0, "lab_buffer_capacity": 10000, "lab_overflow": "reject",
        "lab_retry": True, "lab_idempotency": True, "lab_partition_mode": "blackhole",
        "lab_nats_nodes": 3, "lab_service_replicas": 2,
    }


def test_command_line_values_are_read_as_yaml_then_checked_with_the_run_parameters_rules() -> None:
    given = parse_knob_assignments(["lab_event_rate=2.5", "lab_buffer_capacity=50", "lab_overflow=drop",
                                    "lab_retry=false", "lab_idempotency=no", "lab_partition_mode=reset",
                                    "lab_nats_nodes=5", "lab_service_replicas=1"])
    knobs = validate_knobs(given)
    assert knobs == {"lab_event_rate": 2.5, "lab_buffer_capacity": 50, "lab_overflow": "drop",
                     "lab_retry": False, "lab_idempotency": False, "lab_partition_mode": "reset",
                     "lab_nats_nodes": 5, "lab_service_replicas": 1}
    # one rule for knobs and parameters: a string is not a boolean or a number once parsed
    with pytest.raises(InvalidParameters) as err:
        validate_knobs({"lab_retry": "false", "lab_buffer_capacity": "50"})
    assert set(err.value.problems) == {"lab_retry", "lab_buffer_capacity"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("lab_nonsense", 1),
        ("lab_event_rate", 0),
        ("lab_event_rate", -1),
        ("lab_event_rate", "fast"),
        ("lab_event_rate", True),
        ("lab_buffer_capacity", 0),
        ("lab_buffer_capacity", 2.5),
        ("lab_buffer_capacity", "many"),
        ("lab_overflow", "block"),
        ("lab_retry", "maybe"),
        ("lab_idempotency", 2),
        ("lab_partition_mode", "drop"),
        ("lab_nats_nodes", 0),
        ("lab_nats_nodes", 6),
        ("lab_nats_nodes", 2.5),
        ("lab_nats_nodes", "three"),
        ("lab_service_replicas", 0),
        ("lab_service_replicas", 5),
        ("lab_service_replicas", True),
    ],
)
def test_bad_knob_is_refused_by_name(name: str, value: object) -> None:
    with pytest.raises(InvalidParameters) as caught:
        validate_knobs({name: value})
    assert caught.value.parameter == name and name in str(caught.value)


def test_jetstream_replicates_on_at_most_three_nodes() -> None:
    assert [jetstream_replicas(validate_knobs({"lab_nats_nodes": n})) for n in range(1, 6)] == [1, 2, 3, 3, 3]


def test_events_ddl_unique_key_only_with_idempotency() -> None:
    assert "CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency_key_idx" in events_ddl({})
    plain = events_ddl({"lab_idempotency": False})
    assert "CREATE UNIQUE" not in plain and "events_idempotency_key_idx ON events (idempotency_key)" in plain
    for column in ("idempotency_key text", "type", "payload", "jsonb", "occurred_at", "created_at"):
        assert column in plain


# -- staged flaws (real labs) --------------------------------------------------------------------

FLAW_TIMEOUT = pytest.mark.timeout(180)


def partition_and_heal(lab: RunningLab, seconds: float) -> None:
    wait_for(lambda: lab.gateway("events_published_total") > 10, 30, "events to flow")
    assert lab.partition(True, seconds)["active"]
    time.sleep(seconds)
    lab.wait_partition_over(5)
    wait_for(lambda: min(lab.gateways("nats_connected")) == 1, 30, "every gateway to reconnect")
    wait_for(lambda: lab.gateway("event_buffer_size") == 0, 30, "the buffers to empty")


def accepted_and_missing(lab: RunningLab) -> tuple[list[str], list[str]]:
    """Keys answered 202 at least 2 s ago, and those of them not in ``events`` (settled)."""
    return lab.settled_missing(older_than=2)


@pytest.fixture(scope="module")
def drop_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    knobs = {"lab_event_rate": 20, "lab_buffer_capacity": 20, "lab_overflow": "drop"}
    with running_lab(tmp_path_factory, knobs) as lab:
        yield lab


@FLAW_TIMEOUT
def test_small_buffer_with_drop_loses_exactly_the_dropped_events(drop_lab: RunningLab) -> None:
    partition_and_heal(drop_lab, 6)
    dropped = drop_lab.gateway("events_dropped_total")
    accepted, missing = accepted_and_missing(drop_lab)
    assert all(a["status"] == 202 for a in drop_lab.answers()), "drop mode never refuses a user"
    assert dropped > 20
    assert len(missing) == dropped, "every dropped event, and only those, is missing from events"
    assert len(accepted) > len(missing)


@pytest.fixture(scope="module")
def reject_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    knobs = {"lab_event_rate": 20, "lab_buffer_capacity": 20, "lab_overflow": "reject"}
    with running_lab(tmp_path_factory, knobs) as lab:
        yield lab


@FLAW_TIMEOUT
def test_small_buffer_with_reject_answers_503_and_loses_nothing_accepted(reject_lab: RunningLab) -> None:
    partition_and_heal(reject_lab, 6)
    answers = reject_lab.answers(older_than=2)
    refused = [a for a in answers if a["status"] == 503]
    assert len(refused) > 20, "a full buffer must refuse users with 503"
    assert all(a["error"] for a in refused)
    _, missing = accepted_and_missing(reject_lab)
    assert missing == [], f"{len(missing)} accepted events lost"
    assert reject_lab.gateway("events_dropped_total") == 0


@pytest.fixture(scope="module")
def no_idempotency_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with running_lab(tmp_path_factory, {"lab_event_rate": 20, "lab_idempotency": False}) as lab:
        yield lab


@FLAW_TIMEOUT
def test_without_idempotency_a_partition_stores_duplicates(no_idempotency_lab: RunningLab) -> None:
    # Publishes attempted while the client is reconnecting are buffered by the NATS client and sent
    # on reconnect although they timed out; their retries are sent too. Without Nats-Msg-Id and a
    # unique key, both copies land in the table.
    partition_and_heal(no_idempotency_lab, 12)
    stored = no_idempotency_lab.stored()
    doubled = [key for key, count in stored.items() if count > 1]
    assert doubled, "no duplicate rows: the staged flaw did not show"
    _, missing = accepted_and_missing(no_idempotency_lab)
    assert missing == []
    assert no_idempotency_lab.reporting("duplicate_events_total") == 0, "nobody noticed: that is the flaw"


@pytest.fixture(scope="module")
def no_retry_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with running_lab(tmp_path_factory, {"lab_event_rate": 20, "lab_retry": False}) as lab:
        yield lab


@FLAW_TIMEOUT
def test_without_retry_a_partition_loses_accepted_events(no_retry_lab: RunningLab) -> None:
    partition_and_heal(no_retry_lab, 6)
    _, missing = accepted_and_missing(no_retry_lab)
    assert all(a["status"] == 202 for a in no_retry_lab.answers(older_than=2))
    errors = no_retry_lab.gateway("nats_publish_errors_total")
    assert len(missing) > 10, "accepted events must be lost without retries"
    # a timed-out publish may still have been stored later, so errors bound the loss from above
    assert len(missing) <= errors
    assert no_retry_lab.gateway("nats_retry_total") == 0
