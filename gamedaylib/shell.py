"""The command runner for the playbook's shell steps (taken from the ``commands`` parameter).

One Protocol, ``CommandRunner``, with the real ``ShellRunner`` (subprocess, timeout, dry-run) and a
``FakeRunner`` that hands each command to a function, the way httpx's ``MockTransport`` does.
What is shown and journaled is redacted: passwords in DSNs, ``password=`` pairs, bearer tokens.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gamedaylib.exceptions import CommandFailed
from gamedaylib.journal import Journal
from gamedaylib.secrets import redact_text

TAIL = 4000


@dataclass(frozen=True)
class CommandResult:
    """What a shell step did; ``command``, ``stdout`` and ``stderr`` are already redacted."""

    command: str
    returncode: int | None  # None = timed out or not run (dry-run)
    stdout: str
    stderr: str
    duration_s: float
    dry_run: bool = False
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.dry_run or self.returncode == 0

    def check(self) -> CommandResult:
        """Raise ``CommandFailed`` unless the step succeeded (or was only shown)."""
        if not self.ok:
            raise CommandFailed(self.command, self.returncode, self.stderr[-TAIL:])
        return self

    def as_markdown(self) -> str:
        status = "dry-run (not run)" if self.dry_run else (
            "timed out" if self.timed_out else f"exit {self.returncode}")
        out = f"`$ {self.command}` → {status} in {self.duration_s:.2f}s"
        body = (self.stdout + ("\n" + self.stderr if self.stderr else "")).strip()
        if body:
            out += "\n\n```\n" + body[-TAIL:] + "\n```"
        return out


class CommandRunner(Protocol):
    def run(self, command: str, *, timeout: float, phase: str | None = None) -> CommandResult: ...


class _Journaling:
    journal: Journal | None

    def _record(self, result: CommandResult, phase: str | None) -> None:
        if self.journal is not None:
            self.journal.record(
                "command",
                phase=phase,
                command=result.command,
                returncode=result.returncode,
                duration_s=round(result.duration_s, 3),
                stdout_tail=result.stdout[-TAIL:],
                stderr_tail=result.stderr[-TAIL:],
                dry_run=result.dry_run,
                timed_out=result.timed_out,
            )


class ShellRunner(_Journaling):
    """Runs commands with ``/bin/sh -c``; in dry-run mode shows them and runs nothing."""

    def __init__(
        self,
        *,
        dry_run: bool = False,
        journal: Journal | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.dry_run = dry_run
        self.journal = journal
        self.env = dict(env) if env is not None else None
        self.cwd = cwd

    def run(self, command: str, *, timeout: float, phase: str | None = None) -> CommandResult:
        shown = redact_text(command)
        if self.dry_run:
            result = CommandResult(shown, None, "", "", 0.0, dry_run=True)
            self._record(result, phase)
            return result
        start = time.monotonic()
        try:
            proc = subprocess.run(
                ["/bin/sh", "-c", command],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            result = CommandResult(
                shown,
                None,
                redact_text(_text(exc.stdout)),
                redact_text(_text(exc.stderr)) + f"\n(timed out after {timeout:g}s)",
                time.monotonic() - start,
                timed_out=True,
            )
        except OSError as exc:
            raise CommandFailed(shown, None, f"could not start: {exc}") from exc
        else:
            result = CommandResult(
                shown,
                proc.returncode,
                redact_text(proc.stdout),
                redact_text(proc.stderr),
                time.monotonic() - start,
            )
        self._record(result, phase)
        return result


Handler = Callable[[str], "tuple[int, str, str] | CommandResult"]


class FakeRunner(_Journaling):
    """Hands each command to ``handler(command) -> (returncode, stdout, stderr)``; records calls."""

    def __init__(self, handler: Handler, *, dry_run: bool = False, journal: Journal | None = None) -> None:
        self.handler = handler
        self.dry_run = dry_run
        self.journal = journal
        self.calls: list[str] = []

    def run(self, command: str, *, timeout: float, phase: str | None = None) -> CommandResult:
        shown = redact_text(command)
        if self.dry_run:
            result = CommandResult(shown, None, "", "", 0.0, dry_run=True)
        else:
            self.calls.append(command)
            start = time.monotonic()
            answer = self.handler(command)
            if isinstance(answer, CommandResult):
                result = answer
            else:
                rc, out, err = answer
                result = CommandResult(shown, rc, redact_text(out), redact_text(err), time.monotonic() - start)
        self._record(result, phase)
        return result


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
