"""Parameters of a gameday: profiles (``full``, ``rehearsal``), strict validation, redaction.

Every number the runbook uses is a parameter. A parameter left at ``None`` takes its value from the
profile; an explicit value overrides the profile. ``validate`` runs before any side effect and raises
``InvalidParameters`` naming every wrong parameter (Papermill itself only warns on unknown names).
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import yaml

from gamedaylib.exceptions import InvalidParameters
from gamedaylib.playbook import GAMEDAY_ID, INCIDENT_STAMPS, METRIC_NAMES, PHASE_IDS
from gamedaylib.safety import DEFAULT_PRODUCTION_PATTERNS, limit_problems, mask_secrets, register_secret_envs

PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "partition_seconds": 600.0,
        "partition_safety_margin_seconds": 300.0,
        "lag_recovery_deadline_seconds": 900.0,
        "rto_target_seconds": 3600.0,
        "rpo_target_seconds": 900.0,
        "alert_fire_target_seconds": 120.0,
        "team_response_target_seconds": 600.0,
        "sample_interval_seconds": 5.0,
        "cell_timeout_seconds": 3600.0,
        "required_metrics": list(METRIC_NAMES[:6]),  # the playbook's six
    },
    "rehearsal": {
        "partition_seconds": 20.0,
        "partition_safety_margin_seconds": 30.0,
        "lag_recovery_deadline_seconds": 60.0,
        "rto_target_seconds": 120.0,
        "rpo_target_seconds": 30.0,
        "alert_fire_target_seconds": 60.0,
        "team_response_target_seconds": 120.0,
        "sample_interval_seconds": 1.0,
        "cell_timeout_seconds": 300.0,
        "required_metrics": ["rto_seconds", "rpo_seconds", "event_loss_count", "user_facing_errors"],
    },
}

TARGETS = ("lab", "kubernetes")


# --- checkers: each returns the value (possibly normalised) or raises ValueError with the reason ---


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise ValueError(f"must be true or false, got {type(v).__name__} {v!r}")


def _str(v: Any) -> str:
    if isinstance(v, str):
        return v
    raise ValueError(f"must be a string, got {type(v).__name__} {v!r}")


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"must be a number, got {type(v).__name__} {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"must be finite, got {v!r}")
    return float(v)


def _positive(v: Any) -> float:
    n = _number(v)
    if n <= 0:
        raise ValueError(f"must be > 0, got {v!r}")
    return n


def _non_negative(v: Any) -> float:
    n = _number(v)
    if n < 0:
        raise ValueError(f"must be >= 0, got {v!r}")
    return n


def _fraction(v: Any) -> float:
    n = _number(v)
    if not 0 < n <= 1:
        raise ValueError(f"must be a fraction in (0, 1], got {v!r}")
    return n


def _positive_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"must be an integer, got {type(v).__name__} {v!r}")
    if v <= 0:
        raise ValueError(f"must be > 0, got {v!r}")
    return v


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in choices:
            raise ValueError(f"must be one of {list(choices)}, got {v!r}")
        return str(v)

    return check


def _url(v: Any) -> str:
    s = _str(v)
    if s == "":
        return s
    parts = urlsplit(s)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http(s) URL, got {s!r}")
    return s


def _str_list(v: Any) -> list[str]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"must be a list of strings, got {v!r}")
    return list(v)


def _metric_list(v: Any) -> list[str]:
    names = _str_list(v)
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metric names {unknown}; known: {list(METRIC_NAMES)}")
    return names


def _str_map(v: Any) -> dict[str, str]:
    if not isinstance(v, Mapping) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise ValueError(f"must be a mapping of strings to strings, got {v!r}")
    return dict(v)


def _label_selector(v: Any) -> dict[str, str | list[str]]:
    """Kubernetes labels: each value one string (``app=nats``) or a non-empty list of strings (``app in
    (nats, nats-js)``, an ``In`` expression selector in Chaos Mesh)."""
    if not isinstance(v, Mapping):
        raise ValueError(f"must be a mapping of label names to a string or a list of strings, got {v!r}")
    out: dict[str, str | list[str]] = {}
    for key, value in v.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"label names must be non-empty strings, got {key!r}")
        if isinstance(value, str):
            out[key] = value
        elif (isinstance(value, (list, tuple)) and value
              and all(isinstance(x, str) and x for x in value)):
            out[key] = list(value)
        else:
            raise ValueError(f"label {key!r}: must be a string or a non-empty list of strings, got {value!r}")
    return out


def _url_map(v: Any) -> dict[str, str]:
    m = _str_map(v)
    for name, url in m.items():
        try:
            _url(url)
        except ValueError as exc:
            raise ValueError(f"{name!r}: {exc}") from None
    return m


def _observations(v: Any) -> dict[str, dict[str, str]]:
    if not isinstance(v, Mapping):
        raise ValueError(f"must map a phase id to {{question: answer}}, got {v!r}")
    out: dict[str, dict[str, str]] = {}
    for phase, answers in v.items():
        if phase not in PHASE_IDS:
            raise ValueError(f"unknown phase id {phase!r}; known: {list(PHASE_IDS)}")
        if not isinstance(answers, Mapping):
            raise ValueError(f"{phase}: must map a question to its answer, got {answers!r}")
        out[phase] = {str(q): "" if a is None else str(a) for q, a in answers.items()}
    return out


def _stamps(v: Any) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise ValueError(f"must map a stamp name to a time, got {v!r}")
    out: dict[str, Any] = {}
    for name, at in v.items():
        if name not in INCIDENT_STAMPS:
            raise ValueError(f"unknown stamp {name!r}; known: {list(INCIDENT_STAMPS)}")
        if isinstance(at, bool):
            raise ValueError(f"{name}: must be an ISO-8601 time or seconds after T+0, got {at!r}")
        if isinstance(at, (int, float)):
            out[name] = float(at)
        elif isinstance(at, datetime):
            out[name] = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
        elif isinstance(at, str):
            try:
                parsed = datetime.fromisoformat(at)
            except ValueError:
                raise ValueError(f"{name}: not an ISO-8601 time: {at!r}") from None
            out[name] = at if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc).isoformat()
        else:
            raise ValueError(f"{name}: must be an ISO-8601 time or seconds after T+0, got {at!r}")
    return out


def _action_items(v: Any) -> list[dict[str, str]]:
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"must be a list of {{title, owner, due, ticket}}, got {v!r}")
    out = []
    for item in v:
        if not isinstance(item, Mapping) or not isinstance(item.get("title"), str):
            raise ValueError(f"each action item needs a string 'title', got {item!r}")
        extra = set(item) - {"title", "owner", "due", "ticket"}
        if extra:
            raise ValueError(f"unknown action item fields {sorted(extra)}")
        out.append({k: "" if item.get(k) is None else str(item.get(k)) for k in ("title", "owner", "due", "ticket")})
    return out


def _checklist(v: Any) -> dict[str, bool]:
    if not isinstance(v, Mapping) or not all(isinstance(x, bool) for x in v.values()):
        raise ValueError(f"must map a checklist item to true/false, got {v!r}")
    return {str(k): bool(x) for k, x in v.items()}


def _commands(v: Any) -> dict[str, list[str]]:
    if not isinstance(v, Mapping):
        raise ValueError(f"must map a phase id to a list of shell commands, got {v!r}")
    out: dict[str, list[str]] = {}
    for phase, cmds in v.items():
        if phase not in (*PHASE_IDS, "rollback"):
            raise ValueError(f"unknown phase id {phase!r}; known: {[*PHASE_IDS, 'rollback']}")
        try:
            out[phase] = _str_list(cmds)
        except ValueError as exc:
            raise ValueError(f"{phase}: {exc}") from None
    return out


_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _run_id(v: Any) -> str:
    s = _str(v)
    if s and not _RUN_ID.match(s):
        raise ValueError(f"must be letters, digits, '.', '_' or '-', got {s!r}")
    return s


def _env_name(v: Any) -> str:
    s = _str(v)
    if s and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", s):
        raise ValueError(f"must be the name of an environment variable, got {s!r}")
    return s


def _fault_phase(v: Any) -> str:
    s = _str(v)
    phase, _, mode = s.partition(":")
    if s and (phase not in PHASE_IDS or mode not in ("", "hang")):
        raise ValueError(f"must be empty, a phase id {list(PHASE_IDS)} or '<phase id>:hang', got {s!r}")
    return s


@dataclass(frozen=True)
class Spec:
    """One parameter: its default (``None`` = from the profile) and its checker."""

    default: Any
    check: Callable[[Any], Any]
    help: str = ""
    profile: bool = False  # the default comes from the profile


SPECS: dict[str, Spec] = {
    # general
    "gameday_id": Spec(GAMEDAY_ID, _str, "which playbook"),
    "run_id": Spec("", _run_id, "empty means generated: YYYYmmddTHHMMSSZ-<4 hex>"),
    "target": Spec("lab", _choice(*TARGETS), "lab | kubernetes"),
    "profile": Spec("rehearsal", _choice(*PROFILES), "rehearsal | full"),
    "archive_dir": Spec("", _str, "empty means outputs/<gameday_id>/<run_id>"),
    "dry_run": Spec(False, _bool, "show commands and the fault, change nothing"),
    "confirm_production": Spec(False, _bool),
    "production_namespace_patterns": Spec(list(DEFAULT_PRODUCTION_PATTERNS), _str_list),
    "required_metrics": Spec(None, _metric_list, "metrics that must be measured for a pass", True),
    # timing and targets
    "partition_seconds": Spec(None, _positive, "how long the network stays cut", True),
    "partition_safety_margin_seconds": Spec(None, _positive, "fault deadline: partition plus margin", True),
    "heal_confirm_seconds": Spec(30.0, _positive, "NATS connectivity back within"),
    "lag_threshold": Spec(10.0, _positive, "consumer lag counted as recovered (messages)"),
    "lag_recovery_deadline_seconds": Spec(None, _positive, "heal to lag under threshold within", True),
    "rto_target_seconds": Spec(None, _positive, profile=True),
    "rpo_target_seconds": Spec(None, _non_negative, profile=True),
    "alert_fire_target_seconds": Spec(None, _positive, profile=True),
    "team_response_target_seconds": Spec(None, _positive, profile=True),
    "sample_interval_seconds": Spec(None, _positive, profile=True),
    "canary_rate": Spec(2.0, _positive, "canaries per second"),
    "cell_timeout_seconds": Spec(None, _positive, "Papermill per-cell timeout", True),
    # stop conditions
    "stop_error_rate": Spec(0.5, _fraction),
    "stop_lag_limit": Spec(100000.0, _positive),
    "stop_buffer_fraction": Spec(0.9, _fraction),
    # people
    "observations": Spec({}, _observations),
    "stamps": Spec({}, _stamps),
    "action_items": Spec([], _action_items),
    "checklist": Spec({}, _checklist),
    "dashboards": Spec({}, _url_map),
    "notify_webhook_env": Spec("", _env_name),
    "status_page_webhook_env": Spec("", _env_name),
    # lab
    "lab_dir": Spec(".gameday/lab", _str),
    "lab_event_rate": Spec(5.0, _positive),
    "lab_buffer_capacity": Spec(10000, _positive_int),
    "lab_overflow": Spec("reject", _choice("reject", "drop")),
    "lab_retry": Spec(True, _bool),
    "lab_idempotency": Spec(True, _bool),
    "lab_partition_mode": Spec("blackhole", _choice("blackhole", "reset")),
    # kubernetes
    "namespace": Spec("", _str),
    "kubeconfig": Spec("", _str),
    "kube_context": Spec("", _str),
    "in_cluster": Spec(False, _bool),
    "nats_selector": Spec({"app": "nats"}, _label_selector),
    "service_selector": Spec({}, _label_selector),
    "service_pods": Spec(["api-gateway", "reporting"], _str_list),
    "nats_monitor_url": Spec("", _url),
    "prometheus_url": Spec("", _url),
    "alertmanager_url": Spec("", _url),
    "ingest_url": Spec("", _url),
    "stream_url": Spec("", _url),
    "service_metrics": Spec({}, _url_map, "service name -> its /metrics URL (scraped directly)"),
    "events_dsn_env": Spec("GAMEDAY_EVENTS_DSN", _env_name),
    "chaos_manifest": Spec("", _str, "empty means the NetworkChaos template shipped with the gameday"),
    "commands": Spec({}, _commands),
    # safety rehearsal
    "fault_phase": Spec("", _fault_phase, "rehearse a rollback: this phase raises ('<phase>:hang' hangs)"),
}

LAB_KNOBS: tuple[str, ...] = tuple(n for n in SPECS if n.startswith("lab_") and n != "lab_dir")
DURATIONS = (
    "partition_seconds",
    "partition_safety_margin_seconds",
    "heal_confirm_seconds",
    "lag_recovery_deadline_seconds",
)


def defaults() -> dict[str, Any]:
    """Every parameter with its notebook default (profile-dependent ones are ``None``)."""
    import copy

    return {name: copy.deepcopy(spec.default) for name, spec in SPECS.items()}


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def validate(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``raw`` strictly and return the effective parameters (profile applied, run_id set).

    Unknown names, wrong types, non-positive durations, unknown profiles or targets and malformed
    URLs raise one ``InvalidParameters`` naming every wrong parameter. Nothing else happens here.
    """
    problems: dict[str, str] = {}
    unknown = sorted(set(raw) - set(SPECS))
    for name in unknown:
        problems[name] = "unknown parameter" + _did_you_mean(name)
    values = defaults()
    for name, value in raw.items():
        if name in SPECS:
            values[name] = value
    profile = values.get("profile")
    if not isinstance(profile, str) or profile not in PROFILES:
        problems["profile"] = f"unknown profile {profile!r}; known: {sorted(PROFILES)}"
        profile = "rehearsal"
    out: dict[str, Any] = {}
    for name, spec in SPECS.items():
        value = values[name]
        if value is None and spec.profile:
            value = PROFILES[str(profile)][name]
        try:
            out[name] = spec.check(value)
        except (ValueError, OverflowError) as exc:
            problems.setdefault(name, str(exc))
    for name, why in limit_problems(out).items():
        problems.setdefault(name, why)
    if not problems:
        needed = longest_wait_seconds(out)
        if values.get("cell_timeout_seconds") is None:
            out["cell_timeout_seconds"] = max(out["cell_timeout_seconds"], needed + 120.0)
        elif out["cell_timeout_seconds"] < needed:
            problems["cell_timeout_seconds"] = (
                f"{out['cell_timeout_seconds']:g}s is shorter than the longest phase may wait ({needed:g}s): "
                "that cell would time out"
            )
    if problems:
        raise InvalidParameters(problems)
    if not out["run_id"]:
        out["run_id"] = new_run_id()
    return out


def longest_wait_seconds(params: Mapping[str, Any]) -> float:
    """The longest a single phase cell may wait by design (partition halves, recovery, alert)."""
    return max(
        params["partition_seconds"] / 2 + params["heal_confirm_seconds"],
        params["lag_recovery_deadline_seconds"] + 5 * params["sample_interval_seconds"] + 5,
        params["alert_fire_target_seconds"],
    )


def _did_you_mean(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(SPECS), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_assignment(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from the command line; the value is parsed as a YAML scalar (or flow)."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise InvalidParameters({name or text: f"expected NAME=VALUE, got {text!r}"})
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as exc:
        raise InvalidParameters({name: f"value is not valid YAML: {exc}"}) from exc
    return name, parsed


def load_params_file(path: str) -> dict[str, Any]:
    """Parameters from a YAML file (a mapping of name to value)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise InvalidParameters({"--params": f"cannot read {path}: {exc}"}) from exc
    except yaml.YAMLError as exc:
        raise InvalidParameters({"--params": f"{path} is not valid YAML: {exc}"}) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidParameters({"--params": f"{path} must hold a mapping of parameter names to values"})
    return data


_SECRET_NAME = re.compile(r"(password|passwd|secret|token|api[_-]?key|credential|private[_-]?key)", re.IGNORECASE)
_DSN_PASSWORD = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?P<post>@)", re.IGNORECASE)
_KV_SECRET = re.compile(r"(?P<pre>\b(?:password|passwd|token|secret|api[_-]?key)=)(?P<pw>[^\s&;'\"]+)", re.IGNORECASE)
_BEARER = re.compile(r"(?P<pre>\bBearer\s+)(?P<pw>[A-Za-z0-9._~+/=-]+)")
_WEBHOOK = re.compile(r"https://hooks\.slack\.com/\S+", re.IGNORECASE)
MASK = "***"


def redact_text(text: str) -> str:
    """Mask passwords in DSNs/URLs, ``password=...`` pairs, bearer tokens and webhook URLs."""
    text = mask_secrets(text)  # values of secret environment variables, wherever they turn up
    text = _DSN_PASSWORD.sub(lambda m: m["pre"] + MASK + m["post"], text)
    text = _KV_SECRET.sub(lambda m: m["pre"] + MASK, text)
    text = _BEARER.sub(lambda m: m["pre"] + MASK, text)
    return _WEBHOOK.sub(MASK, text)


def redact(value: Any, key: str = "") -> Any:
    """A copy safe to archive: secret-looking names masked whole, DSN passwords masked in strings."""
    if key and _SECRET_NAME.search(key) and not key.endswith("_env"):
        return MASK if value not in (None, "") else value
    if isinstance(value, Mapping):
        register_secret_envs(value)  # the variables the *_env parameters name hold secrets
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def effective_targets(params: Mapping[str, Any]) -> dict[str, float]:
    """The numbers a run is judged against, for the archive."""
    return {
        "rto_seconds": params["rto_target_seconds"],
        "rpo_seconds": params["rpo_target_seconds"],
        "event_loss_count": 0,
        "user_facing_errors": 0,
        "alert_fire_seconds": params["alert_fire_target_seconds"],
        "team_response_seconds": params["team_response_target_seconds"],
        "duplicate_count": 0,
        "lag_recovery_seconds": params["lag_recovery_deadline_seconds"],
    }


_NOT_PARAMETERS = frozenset({"In", "Out", "exit", "quit", "get_ipython", "open"})


def from_namespace(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a notebook's namespace holds: every public, non-callable, non-module name
    (so an unknown name Papermill injected is kept, and then rejected by ``validate``)."""
    import types

    return {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_")
        and name not in _NOT_PARAMETERS
        and not isinstance(value, types.ModuleType)
        and not callable(value)
    }
