"""Helpers for the lab services' tests, imported as ``labtools`` (pytest puts tests/lab on sys.path):
a real lab (``Lab(lab_dir).up(knobs)``) and what a user checks on it: the ground truth, the rows in
PostgreSQL, the services' metrics (summed over every replica, or replica by replica).

Optional parts: ``optional_parts(combination)`` is the environment for a lab started with exactly
``"neither"``, ``"prometheus"`` (Prometheus only) or ``"both"`` (Prometheus and Alertmanager); the
combination is skipped when the machine lacks a part it needs (``GAMEDAY_LAB_WITHOUT`` hides the ones
it must not have)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from runtools import machine_combination

from gamedaylib.lab.client import Lab
from gamedaylib.lab.processes import WITHOUT_ENV, find_binary
from gamedaylib.lab.truth import read_answers


def http_json(url: str, payload: Any | None = None, timeout: float = 5.0) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def metric(url: str, name: str) -> float:
    """Sum of the samples of ``name`` at a Prometheus text endpoint."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})?\s+(\S+)$", re.MULTILINE)
    values = [float(m.group(1)) for m in pattern.finditer(text)]
    if not values:
        raise AssertionError(f"metric {name} not found at {url}")
    return sum(values)


COMBINATIONS = {"neither": ("prometheus", "alertmanager"), "prometheus": ("alertmanager",), "both": ()}
# what this machine lacks, or is told to pretend it lacks (GAMEDAY_LAB_WITHOUT set for the whole run,
# e.g. by a CI step emulating a machine without Alertmanager), read before any test changes it
MACHINE_WITHOUT = os.environ.get(WITHOUT_ENV, "")


PARTS = {"neither": frozenset(), "prometheus": frozenset({"prometheus"}),
         "both": frozenset({"prometheus", "alertmanager"})}


def best_combination() -> str:
    """The richest combination this machine allows (``both``, ``prometheus`` or ``neither``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(WITHOUT_ENV, MACHINE_WITHOUT)
        return machine_combination()


@contextlib.contextmanager
def optional_parts(combination: str) -> Iterator[None]:
    """Run the block with exactly this combination of optional parts for labs started in it (skip the
    test when the machine lacks a part the combination needs)."""
    needed = sorted(PARTS[combination])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(WITHOUT_ENV, MACHINE_WITHOUT)
        missing = [part for part in needed if find_binary(part, f"prometheus-{part}") is None]
        if missing:
            pytest.skip(f"{', '.join(missing)} not available: combination {combination!r} cannot run here")
        machine = (part.strip().lower() for part in MACHINE_WITHOUT.split(",") if part.strip())
        hidden = sorted({*COMBINATIONS[combination], *machine})
        patch.setenv(WITHOUT_ENV, ",".join(hidden))
        yield


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RunningLab:
    """A lab up for one test module, seen the way a user sees it."""

    def __init__(self, lab: Lab, state: dict[str, Any]) -> None:
        self.lab = lab
        self.state = state
        self.dir = Path(state["lab_dir"])

    def url(self, name: str) -> str:
        return str(self.state[name])

    def gateway(self, name: str) -> float:
        """``name`` summed over every gateway replica."""
        return sum(self.gateways(name))

    def gateways(self, name: str) -> list[float]:
        """``name`` at each gateway replica, in replica order."""
        return [metric(url, name) for url in self.state["gateway_metrics_urls"]]

    def reporting(self, name: str) -> float:
        """``name`` summed over every reporting replica."""
        return sum(metric(url, name) for url in self.state["reporting_metrics_urls"])

    def partition(self, active: bool, seconds: float | None = None, mode: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"active": active}
        if seconds is not None:
            body["duration_seconds"] = seconds
        if mode is not None:
            body["mode"] = mode
        return http_json(self.url("proxy_control_url") + "/partition", body)  # type: ignore[no-any-return]

    def partition_status(self) -> dict[str, Any]:
        return http_json(self.url("proxy_control_url") + "/partition")  # type: ignore[no-any-return]

    def stored(self) -> Counter[str]:
        """How many rows each idempotency key has in ``events``."""
        with psycopg.connect(self.state["events_dsn"], connect_timeout=5) as conn:
            rows = conn.execute("SELECT idempotency_key, count(*) FROM events GROUP BY 1").fetchall()
        return Counter({key: count for key, count in rows})

    def answers(self, older_than: float = 0.0) -> list[dict[str, Any]]:
        """Ground truth: the users' answers, leaving out the last ``older_than`` seconds."""
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than)
        return [a for a in read_answers(self.dir) if datetime.fromisoformat(a["ts"]) <= cutoff]

    def log(self, name: str) -> str:
        """The log of process ``name``, or of every replica of service ``name`` (``gateway``, ...)."""
        paths = self.lab.service_log_files(name)
        return "".join(path.read_text(errors="replace") for path in paths)

    def wait_partition_over(self, timeout: float) -> None:
        wait_for(lambda: not self.partition_status()["active"], timeout, "the partition to heal")

    def settled_missing(self, older_than: float = 2.0, timeout: float = 30.0) -> tuple[list[str], list[str]]:
        """(accepted, missing): the keys answered 202 at least ``older_than`` seconds ago, and those of
        them not in ``events``, once ``missing`` has stopped changing for 2 s (whatever was on its way
        to PostgreSQL has arrived; a loaded machine may take a while)."""
        deadline = time.monotonic() + timeout
        last: set[str] | None = None
        since = time.monotonic()
        while True:
            answers = self.answers(older_than=older_than)
            stored = self.stored()
            accepted = [a["idempotency_key"] for a in answers if a["status"] == 202]
            missing = [key for key in accepted if stored[key] == 0]
            now = time.monotonic()
            if set(missing) != last:
                last, since = set(missing), now
            elif now - since >= 2.0 or now > deadline:
                return accepted, missing
            time.sleep(0.5)

    def wait_drained(self, timeout: float = 60.0) -> None:
        """Buffer empty and every event accepted until now stored."""
        wait_for(lambda: min(self.gateways("nats_connected")) == 1, timeout, "every gateway to reconnect")
        wait_for(lambda: self.gateway("event_buffer_size") == 0, timeout, "the gateway buffer to empty")
        accepted = {a["idempotency_key"] for a in self.answers() if a["status"] == 202}
        wait_for(lambda: not (accepted - set(self.stored())), timeout, "the backlog to reach PostgreSQL")


@contextlib.contextmanager
def running_lab(tmp_path_factory: pytest.TempPathFactory, knobs: dict[str, Any]) -> Iterator[RunningLab]:
    lab = Lab(tmp_path_factory.mktemp("lab"))
    try:
        state = lab.up(knobs)
        yield RunningLab(lab, state)
    finally:
        lab.down()
