"""The one exception hierarchy of gamedaylib.

    GamedayError
    ├── InvalidParameters        a parameter is wrong; raised by validation only, before any side effect
    ├── PreflightFailed          the system is not fit for a gameday; nothing was injected
    ├── GamedayInProgress        another gameday holds the target
    ├── ProductionGuard          a production namespace without confirm_production=True
    ├── StopConditionFired       a stop condition fired during the partition
    ├── GamedayAborted           the run was interrupted (signal, timeout, dead kernel)
    ├── TargetError              the target failed to do what was asked
    │   ├── InjectionFailed      the partition could not be applied or confirmed
    │   └── HealFailed           the partition could not be removed or confirmed removed
    ├── ProbeError               a measurement could not be taken (the metric becomes not_measured)
    ├── CommandFailed            a shell step exited non-zero or timed out
    ├── PlaybookRefused          a written playbook (markdown) cannot be read as one; nothing was written
    └── LabError                 the embedded lab could not start, stop or answer
        └── LabAlreadyRunning    `lab up` found a lab already up

Foreign errors are translated at the edge with ``raise ... from exc``. Only ``cli.py`` turns these
into exit statuses.
"""

from __future__ import annotations


class GamedayError(Exception):
    """Base class of every error gamedaylib raises on purpose."""


class InvalidParameters(GamedayError):
    """One or more parameters are invalid; nothing was done."""

    def __init__(self, problems: dict[str, str] | str, parameter: str | None = None) -> None:
        if isinstance(problems, str):
            problems = {parameter or "parameters": problems}
        self.problems: dict[str, str] = dict(problems)
        self.parameter = next(iter(self.problems))
        lines = [f"{name}: {why}" for name, why in self.problems.items()]
        super().__init__("invalid parameters: " + "; ".join(lines))


class PreflightFailed(GamedayError):
    """Pre-flight found the system unfit for a gameday; no fault was injected."""

    def __init__(self, message: str, failed_checks: list[str] | None = None) -> None:
        self.failed_checks = failed_checks or []
        super().__init__(message)


class GamedayInProgress(GamedayError):
    """Another gameday already holds this target."""

    def __init__(self, message: str, holder: str | None = None) -> None:
        self.holder = holder
        super().__init__(message)


class ProductionGuard(GamedayError):
    """A production namespace was targeted without confirm_production=True."""


class StopConditionFired(GamedayError):
    """A stop condition fired: the partition was healed early."""

    def __init__(self, condition: str, value: float, limit: float, detail: str = "") -> None:
        self.condition, self.value, self.limit = condition, value, limit
        super().__init__(f"stop condition {condition!r} fired: {value:g} > {limit:g}"
                         + (f" ({detail})" if detail else ""))


class GamedayAborted(GamedayError):
    """The run was interrupted before its end."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TargetError(GamedayError):
    """The target could not do what was asked."""


class InjectionFailed(TargetError):
    """The partition could not be applied or confirmed active."""


class HealFailed(TargetError):
    """The partition could not be removed or confirmed removed."""


class ProbeError(GamedayError):
    """A measurement could not be taken."""

    def __init__(self, probe: str, reason: str) -> None:
        self.probe, self.reason = probe, reason
        super().__init__(f"{probe}: {reason}")


class CommandFailed(GamedayError):
    """A shell step exited non-zero or timed out."""

    def __init__(self, command: str, returncode: int | None, stderr_tail: str = "") -> None:
        self.command, self.returncode, self.stderr_tail = command, returncode, stderr_tail
        what = "timed out" if returncode is None else f"exited {returncode}"
        super().__init__(f"{command!r} {what}: {stderr_tail.strip()[-500:]}")


class PlaybookRefused(GamedayError):
    """A written playbook cannot be read: one line naming the file, the heading and why."""

    def __init__(self, heading: str, reason: str, source: str = "") -> None:
        self.heading, self.reason, self.source = heading, reason, source
        super().__init__(f"{source + ': ' if source else ''}{heading!r}: {reason}")


class LabError(GamedayError):
    """The embedded lab could not start, stop or answer."""


class LabAlreadyRunning(LabError):
    """A lab is already up in this folder."""
