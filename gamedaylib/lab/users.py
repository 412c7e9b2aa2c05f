"""Simulated users: post events to the gateway at ``lab_event_rate`` per second and record every
answer as the lab's ground truth (``gamedaylib.lab.truth``).

``python -m gamedaylib.lab.users --lab-config <lab_dir>/config.json``. Event types are drawn from the
playbook's critical types and a few ordinary ones; every event has a fresh idempotency key
``user-<uuid hex>``. Posts are scheduled on a fixed clock (a slow answer does not slow the rate) with a
short client timeout; each answer is appended to ``<lab_dir>/truth/answers.jsonl`` and flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import aiohttp

from gamedaylib.lab.service import LabConfig, main_for
from gamedaylib.lab.truth import answers_path

log = logging.getLogger("gamedaylib.lab.users")

CRITICAL_EVENT_TYPES = ("buddy.match", "kintell.session", "report.generated")  # the playbook's critical events
OTHER_EVENT_TYPES = ("user.login", "page.view", "profile.updated")
EVENT_TYPES = CRITICAL_EVENT_TYPES + OTHER_EVENT_TYPES
CLIENT_TIMEOUT_SECONDS = 2.0
MAX_IN_FLIGHT = 1000


class Users:
    def __init__(self, config: LabConfig, truth: IO[str]) -> None:
        self.url = f"http://127.0.0.1:{config.port('gateway')}/v1/events"
        self.rate: float = config.knobs["lab_event_rate"]
        self.truth = truth
        self.seq = itertools.count(1)
        self.in_flight: set[asyncio.Task[None]] = set()

    def record(self, key: str, event_type: str, status: int | None, error: str | None) -> None:
        line = json.dumps({
            "ts": datetime.now(timezone.utc).isoformat(),
            "idempotency_key": key,
            "type": event_type,
            "status": status,
            "error": error,
        })
        self.truth.write(line + "\n")
        self.truth.flush()

    async def post(self, session: aiohttp.ClientSession) -> None:
        seq = next(self.seq)
        key = f"user-{uuid.uuid4().hex}"
        event_type = random.choice(EVENT_TYPES)
        body = {
            "type": event_type,
            "idempotency_key": key,
            "payload": {"user": f"u{random.randint(1, 500)}", "seq": seq},
        }
        status: int | None = None
        error: str | None = None
        try:
            async with session.post(self.url, json=body) as response:
                status = response.status
                if status >= 300:
                    answer: Any = await response.json(content_type=None)
                    error = str(answer.get("error")) if isinstance(answer, dict) else str(answer)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            error = repr(exc)
        self.record(key, event_type, status, error)

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_SECONDS)
        connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            next_at = loop.time()
            while not stop.is_set():
                if len(self.in_flight) < MAX_IN_FLIGHT:
                    task = asyncio.create_task(self.post(session))
                    self.in_flight.add(task)
                    task.add_done_callback(self.in_flight.discard)
                next_at += interval
                now = loop.time()
                if next_at < now - 1.0:  # fell far behind (a stalled machine): do not burst
                    next_at = now
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_at - now))
            if self.in_flight:
                await asyncio.wait(self.in_flight, timeout=CLIENT_TIMEOUT_SECONDS + 1)


async def serve(config: LabConfig, stop: asyncio.Event) -> None:
    path: Path = answers_path(config.lab_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("posting %.1f events/s to the gateway; answers in %s", config.knobs["lab_event_rate"], path)
    with path.open("a", encoding="utf-8") as truth:
        await Users(config, truth).run(stop)


def main(argv: list[str] | None = None) -> int:
    return main_for("users", serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
