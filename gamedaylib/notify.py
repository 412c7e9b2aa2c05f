"""Optional notifications at chaos start, heal and end: a Slack-compatible incoming webhook and a
status-page webhook.

The URLs are secrets: they come from environment variables whose *names* are parameters
(``notify_webhook_env``, ``status_page_webhook_env``) and never appear in the journal, in displayed
output or in ``repr``. The journal records only ``sent to slack webhook (from $ENV_NAME): 200``.
A failed notification is journaled and never stops the gameday.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, get_args

from gamedaylib.journal import Journal
from gamedaylib.observers import RunObserver
from gamedaylib.secrets import redact_url

if TYPE_CHECKING:
    from gamedaylib.run import Run

Event = Literal["chaos_start", "heal", "end"]
EVENTS: tuple[str, ...] = get_args(Event)
# The playbook sets the status page to "Maintenance" before chaos and posts "resolved" after.
STATUS_PAGE_STATUS: dict[str, str] = {"chaos_start": "maintenance", "heal": "monitoring", "end": "resolved"}


@dataclass(frozen=True)
class Delivery:
    """What happened to one post: the channel, whether it arrived, and a line safe to journal."""

    channel: str  # "slack" | "status_page"
    ok: bool
    status: int | None
    detail: str


class Notifier:
    """Posts gameday events to the configured webhooks; ``send`` never raises on delivery failure."""

    def __init__(
        self,
        webhook_url: str | None,
        status_page_url: str | None,
        run_id: str,
        *,
        journal: Journal | None = None,
        webhook_env: str = "",
        status_page_env: str = "",
        gameday_id: str = "",
        timeout: float = 5.0,
    ) -> None:
        self._webhook_url = webhook_url or None
        self._status_page_url = status_page_url or None
        self.run_id = run_id
        self.journal = journal
        self.webhook_env = webhook_env
        self.status_page_env = status_page_env
        self.gameday_id = gameday_id
        self.timeout = timeout

    @classmethod
    def from_env(
        cls,
        notify_webhook_env: str,
        status_page_webhook_env: str,
        run_id: str,
        *,
        journal: Journal | None = None,
        environ: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Notifier:
        """Read the URLs from the environment variables the parameters name ("" = not configured)."""
        env = os.environ if environ is None else environ
        return cls(
            env.get(notify_webhook_env) if notify_webhook_env else None,
            env.get(status_page_webhook_env) if status_page_webhook_env else None,
            run_id,
            journal=journal,
            webhook_env=notify_webhook_env,
            status_page_env=status_page_webhook_env,
            **kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"Notifier(run_id={self.run_id!r}, slack={'configured' if self._webhook_url else 'off'}"
            f" (from ${self.webhook_env or '-'}), status_page="
            f"{'configured' if self._status_page_url else 'off'} (from ${self.status_page_env or '-'}))"
        )

    def send(self, event: Event, phase: str | None, text: str) -> list[Delivery]:
        """Post ``event`` to every configured webhook; journal each outcome (kind="notification")."""
        if event not in EVENTS:
            raise ValueError(f"unknown notification event {event!r}; known: {list(EVENTS)}")
        now = datetime.now(timezone.utc).isoformat()
        common = {"gameday_id": self.gameday_id, "run_id": self.run_id, "phase": phase, "event": event, "time": now}
        deliveries: list[Delivery] = []
        targets = (
            ("slack", "slack webhook", self._webhook_url, self.webhook_env,
             {"text": f"[{self.gameday_id} {self.run_id}] {text}", **common}),
            ("status_page", "status page webhook", self._status_page_url, self.status_page_env,
             {"status": STATUS_PAGE_STATUS[event], "message": text, **common}),
        )
        for channel, label, url, env_name, body in targets:
            if url is None:
                if env_name:  # asked for, but the variable is unset or empty
                    deliveries.append(Delivery(channel, False, None, f"not sent to {label}: ${env_name} is not set"))
                continue
            deliveries.append(self._post(channel, label, url, env_name, body))
        if self.journal is not None:
            for d in deliveries:
                self.journal.record(
                    "notification", phase, event=event, channel=d.channel, ok=d.ok, status=d.status, detail=d.detail
                )
        return deliveries

    def _post(self, channel: str, label: str, url: str, env_name: str, body: dict[str, Any]) -> Delivery:
        source = f"{label} (from ${env_name})" if env_name else label
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json", "User-Agent": "gameday"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            return Delivery(channel, False, exc.code, f"failed to send to {source}: HTTP {exc.code}")
        except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError and timeouts are OSError
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return Delivery(channel, False, None, f"failed to send to {source}: {redact_url(str(reason), url)}")
        ok = 200 <= status < 300
        verb = "sent to" if ok else "failed to send to"
        return Delivery(channel, ok, status, f"{verb} {source}: {status}")


class Notifications(RunObserver):
    """The run's observer that posts at chaos start, heal and end (the playbook's communication)."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    @classmethod
    def for_run(cls, params: Any, journal: Journal) -> Notifications:
        return cls(Notifier.from_env(params.notify_webhook_env, params.status_page_webhook_env, params.run_id,
                                     journal=journal, gameday_id=params.gameday_id))

    def fault_injected(self, run: Run, t0: datetime) -> None:
        self.notifier.send("chaos_start", run.current_phase,
                           f"chaos started: {run.fault.description}, in force at T+0 = "
                           f"{t0.isoformat(timespec='seconds')} (ends by itself within its deadline)")

    def fault_healed(self, run: Run, at: datetime, by: str) -> None:
        self.notifier.send("heal", run.current_phase, f"{run.scenario.fault_word} ended at "
                           f"{at.isoformat(timespec='seconds')} ({run.clock.offset(at)}, {by}); watching recovery")

    def run_finished(self, run: Run, scorecard: dict[str, Any]) -> None:
        reason = f" ({scorecard['reason']})" if scorecard.get("reason") else ""
        self.notifier.send("end", next(reversed(run.results), None),
                           f"gameday finished: verdict {scorecard['verdict']}{reason}")
