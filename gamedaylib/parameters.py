"""Parameters: one typed definition per parameter, from which everything else is made.

A gameday's parameters are a frozen dataclass (``RunParams`` for what every gameday shares, extended
by each gameday and by the lab knobs). Each field is declared with :func:`param`: its type, default,
profile values, limits and one line of help. From that one declaration come:

- validation (:func:`validate`): strict, before any side effect, every problem named at once, with
  did-you-mean for unknown names; the result is the typed object, not a dict;
- the profiles: a field whose default is ``None`` takes its value from the profile (``full`` = the
  playbook's numbers, ``rehearsal`` = compressed for the lab); explicit values win;
- the notebook's ``parameters`` cell (:func:`parameters_cell`, checked by a test) with type
  annotations, so ``papermill --help-notebook`` shows types and help;
- ``gameday run --help`` and the docs (:func:`help_lines`).

Values from the command line (``-p NAME=VALUE``) and files (``--params FILE.yaml``) are YAML;
:func:`merge` combines them, mappings merged key by key (``-p 'observations={...}'`` adds to the
file's answers instead of replacing them).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import secrets
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import yaml

from gamedaylib.exceptions import InvalidParameters
from gamedaylib.playbook import INCIDENT_STAMPS

__all__ = [
    "PROFILE_NAMES",
    "TARGETS",
    "Param",
    "RunParams",
    "as_dict",
    "help_lines",
    "load_params_file",
    "merge",
    "new_run_id",
    "param",
    "parameters_cell",
    "parse_assignment",
    "validate",
]

PROFILE_NAMES = ("rehearsal", "full")
TARGETS = ("lab", "kubernetes")
DEFAULT_PRODUCTION_PATTERNS = ("*-prod", "prod*")
DAY = 86_400.0

P = TypeVar("P", bound="RunParams")


# --- checkers: each returns the value (possibly normalised) or raises ValueError with the reason ---


def check_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise ValueError(f"must be true or false, got {type(v).__name__} {v!r}")


def check_optional_bool(v: Any) -> bool | None:
    return None if v is None else check_bool(v)


def check_str(v: Any) -> str:
    if isinstance(v, str):
        return v
    raise ValueError(f"must be a string, got {type(v).__name__} {v!r}")


def check_number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"must be a number, got {type(v).__name__} {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"must be finite, got {v!r}")
    return float(v)


def check_int(v: Any) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"must be an integer, got {type(v).__name__} {v!r}")
    return v


def check_fraction(v: Any) -> float:
    n = check_number(v)
    if not 0 < n <= 1:
        raise ValueError(f"must be a fraction in (0, 1], got {v!r}")
    return n


def choice(*choices: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in choices:
            raise ValueError(f"must be one of {list(choices)}, got {v!r}")
        return str(v)

    return check


def url_problem(value: Any) -> str | None:
    """Why ``value`` is not a usable http(s) URL (None when it is, or when it is empty)."""
    if not isinstance(value, str) or value == "":
        return None
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return f"must be a URL without spaces or control characters, got {value!r}"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        return f"malformed URL {value!r}: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http(s) URL with a host, got {value!r}"
    if port == 0:
        return f"port 0 is not a port, got {value!r}"
    return None


def check_url(v: Any) -> str:
    s = check_str(v)
    why = url_problem(s)
    if why:
        raise ValueError(why)
    return s


def check_str_list(v: Any) -> list[str]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"must be a list of strings, got {v!r}")
    return list(v)


def check_url_list(v: Any) -> list[str]:
    urls = check_str_list(v)
    for url in urls:
        why = url_problem(url) if url else "empty URL"
        if why:
            raise ValueError(why)
    return urls


def check_str_map(v: Any) -> dict[str, str]:
    if not isinstance(v, Mapping) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise ValueError(f"must be a mapping of strings to strings, got {v!r}")
    return dict(v)


def check_url_map(v: Any) -> dict[str, str]:
    m = check_str_map(v)
    for name, url in m.items():
        why = url_problem(url)
        if why:
            raise ValueError(f"{name!r}: {why}")
    return m


def check_label_selector(v: Any) -> dict[str, str | list[str]]:
    """Kubernetes labels: each value one string (``app=nats``) or a non-empty list of strings (an
    ``In`` expression)."""
    if not isinstance(v, Mapping):
        raise ValueError(f"must be a mapping of label names to a string or a list of strings, got {v!r}")
    out: dict[str, str | list[str]] = {}
    for key, value in v.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"label names must be non-empty strings, got {key!r}")
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, (list, tuple)) and value and all(isinstance(x, str) and x for x in value):
            out[key] = list(value)
        else:
            raise ValueError(f"label {key!r}: must be a string or a non-empty list of strings, got {value!r}")
    return out


def check_selector_map(v: Any) -> dict[str, dict[str, str | list[str]]]:
    """Service name -> its pods' label selector."""
    if not isinstance(v, Mapping):
        raise ValueError(f"must map a service name to a label selector, got {v!r}")
    out = {}
    for name, selector in v.items():
        try:
            out[str(name)] = check_label_selector(selector)
        except ValueError as exc:
            raise ValueError(f"{name!r}: {exc}") from None
    return out


def check_stamps(v: Any) -> dict[str, Any]:
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
            out[name] = (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).isoformat()
        elif isinstance(at, str):
            try:
                parsed = datetime.fromisoformat(at)
            except ValueError:
                raise ValueError(f"{name}: not an ISO-8601 time: {at!r}") from None
            out[name] = at if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc).isoformat()
        else:
            raise ValueError(f"{name}: must be an ISO-8601 time or seconds after T+0, got {at!r}")
    return out


def check_action_items(v: Any) -> list[dict[str, str]]:
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


def check_checklist(v: Any) -> dict[str, bool]:
    if not isinstance(v, Mapping) or not all(isinstance(x, bool) for x in v.values()):
        raise ValueError(f"must map a checklist item to true/false, got {v!r}")
    return {str(k): bool(x) for k, x in v.items()}


def check_observations(v: Any) -> dict[str, dict[str, str]]:
    """Phase id → question → answer (the phase ids are checked against the gameday's playbook)."""
    if not isinstance(v, Mapping):
        raise ValueError(f"must map a phase id to {{question: answer}}, got {v!r}")
    out: dict[str, dict[str, str]] = {}
    for phase, answers in v.items():
        if not isinstance(answers, Mapping):
            raise ValueError(f"{phase}: must map a question to its answer, got {answers!r}")
        out[str(phase)] = {str(q): "" if a is None else str(a) for q, a in answers.items()}
    return out


def check_commands(v: Any) -> dict[str, list[str]]:
    """Phase id (or ``rollback``) → shell commands (phase ids checked against the playbook)."""
    if not isinstance(v, Mapping):
        raise ValueError(f"must map a phase id to a list of shell commands, got {v!r}")
    out: dict[str, list[str]] = {}
    for phase, cmds in v.items():
        try:
            out[str(phase)] = check_str_list(cmds)
        except ValueError as exc:
            raise ValueError(f"{phase}: {exc}") from None
    return out


_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_run_id(v: Any) -> str:
    s = check_str(v)
    if s and not _RUN_ID.match(s):
        raise ValueError(f"must be letters, digits, '.', '_' or '-', got {s!r}")
    return s


def check_env_name(v: Any) -> str:
    s = check_str(v)
    if s and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", s):
        raise ValueError(f"must be the name of an environment variable, got {s!r}")
    return s


# --- declaring parameters -------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """What one parameter is: shown type, help, checker, profile values, limits, section."""

    type: str
    help: str
    check: Callable[[Any], Any]
    limit: tuple[float, float] | None = None  # lowest and highest accepted (numbers)
    section: str = ""


def param(
    default: Any,
    help: str,  # the word users read (shadows the builtin)
    *,
    type: str,
    check: Callable[[Any], Any],
    limit: tuple[float, float] | None = None,
    section: str = "",
) -> Any:
    """A dataclass field carrying its :class:`Param` (mutable defaults are copied per instance). A
    default of ``None`` for a parameter the gameday's ``PROFILES`` names means "from the profile"."""
    meta = {"param": Param(type, help, check, limit, section)}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def number_param(default: Any, help: str, *, limit: tuple[float, float], section: str) -> Any:
    """A number parameter (``Optional[float]`` when its default is None: from the profile)."""
    kind = "Optional[float]" if default is None else "float"
    return param(default, help, type=kind, check=check_number, limit=limit, section=section)


# --- what every gameday shares ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunParams:
    """The parameters every gameday has. Each gameday extends it (its own scenario numbers, its lab
    knobs, its target's settings) and sets the class variables below."""

    GAMEDAY_ID: ClassVar[str] = ""
    PHASE_IDS: ClassVar[tuple[str, ...]] = ()
    METRIC_NAMES: ClassVar[tuple[str, ...]] = ()
    # profile name -> parameter -> value, for the parameters whose default is None (the gameday's own
    # table: ``full`` = the playbook's numbers, ``rehearsal`` = compressed for the lab)
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {p: {} for p in PROFILE_NAMES}

    # general
    gameday_id: str = param("", "which gameday (gameday list)", type="str", check=check_str, section="General")
    run_id: str = param("", "empty means generated: YYYYmmddTHHMMSSZ-<4 hex>", type="str", check=check_run_id,
                        section="General")
    target: str = param("lab", "lab | kubernetes", type="str", check=choice(*TARGETS), section="General")
    profile: str = param("rehearsal", "rehearsal | full", type="str", check=choice(*PROFILE_NAMES), section="General")
    archive_dir: str = param("", "empty means outputs/<gameday_id>/<run_id>", type="str", check=check_str,
                             section="General")
    dry_run: bool = param(False, "show commands and the fault, change nothing", type="bool", check=check_bool,
                          section="General")
    live: bool | None = param(None, "forms and buttons: None means live in JupyterLab, headless under Papermill",
                              type="Optional[bool]", check=check_optional_bool, section="General")
    confirm_production: bool = param(False, "allow a production namespace (needs an explicit kube_context)",
                                     type="bool", check=check_bool, section="General")
    production_namespace_patterns: list[str] = param(
        list(DEFAULT_PRODUCTION_PATTERNS), "namespaces and contexts treated as production", type="list[str]",
        check=check_str_list, section="General")
    required_metrics: list[str] | None = param(
        None, "metrics that must be measured for a pass", type="Optional[list[str]]", check=check_str_list,
        section="General")
    fault_phase: str = param("", "rehearse a rollback: this phase raises ('<phase>:hang' hangs)", type="str",
                             check=check_str, section="General")
    # targets and timing shared by every gameday
    rto_target_seconds: float | None = number_param(None, "RTO target", limit=(1.0, 7 * DAY), section="Targets")
    rpo_target_seconds: float | None = number_param(None, "RPO target", limit=(0.0, 7 * DAY), section="Targets")
    alert_fire_target_seconds: float | None = number_param(None, "first alert within", limit=(1.0, DAY),
                                                            section="Targets")
    team_response_target_seconds: float | None = number_param(None, "alert to acknowledged within",
                                                               limit=(1.0, 7 * DAY), section="Targets")
    lag_threshold: float = number_param(10.0, "consumer lag counted as recovered (messages)",
                                         limit=(1.0, 1e9), section="Targets")
    lag_recovery_deadline_seconds: float | None = number_param(
        None, "lag back under the threshold within", limit=(1.0, 7 * DAY), section="Targets")
    sample_interval_seconds: float | None = number_param(None, "one reading every", limit=(0.05, 3600.0),
                                                          section="Targets")
    baseline_seconds: float | None = number_param(None, "pre-flight baselines are medians over this window",
                                                  limit=(0.0, 3600.0), section="Targets")
    canary_rate: float = number_param(2.0, "canaries per second", limit=(0.01, 1000.0), section="Targets")
    cell_timeout_seconds: float | None = number_param(None, "Papermill per-cell timeout", limit=(1.0, 7 * DAY),
                                                       section="Targets")
    # stop conditions
    stop_error_rate: float = param(0.5, "stop when this fraction of answers fail", type="float",
                                   check=check_fraction, section="Stop conditions")
    stop_lag_limit: float = number_param(100000.0, "stop when consumer lag exceeds (messages)",
                                          limit=(1.0, 1e12), section="Stop conditions")
    stop_buffer_fraction: float = param(0.9, "stop when the gateway buffer is fuller than this fraction",
                                        type="float", check=check_fraction, section="Stop conditions")
    # people
    observations: dict[str, dict[str, str]] = param(
        {}, "headless answers: phase id -> question -> answer", type="dict", check=check_observations,
        section="People")
    stamps: dict[str, Any] = param({}, "headless stamps: alert_seen, paged, acknowledged, status_page_updated",
                                   type="dict", check=check_stamps, section="People")
    action_items: list[dict[str, str]] = param([], "list of {title, owner, due, ticket}", type="list",
                                               check=check_action_items, section="People")
    checklist: dict[str, bool] = param({}, "pre-gameday checklist item -> done", type="dict",
                                       check=check_checklist, section="People")
    dashboards: dict[str, str] = param({}, "name -> URL shown at pre-flight", type="dict[str, str]",
                                       check=check_url_map, section="People")
    notify_webhook_env: str = param("", "environment variable holding a Slack-compatible webhook URL",
                                    type="str", check=check_env_name, section="People")
    status_page_webhook_env: str = param("", "environment variable holding a status-page webhook URL",
                                         type="str", check=check_env_name, section="People")
    # where the system is
    lab_dir: str = param(".gameday/lab", "the lab's folder", type="str", check=check_str, section="Lab")
    namespace: str = param("", "the cluster namespace", type="str", check=check_str, section="Kubernetes")
    kubeconfig: str = param("", "empty means $KUBECONFIG or ~/.kube/config", type="str", check=check_str,
                            section="Kubernetes")
    kube_context: str = param("", "the kubeconfig context (required with confirm_production)", type="str",
                              check=check_str, section="Kubernetes")
    in_cluster: bool = param(False, "use the pod's service account", type="bool", check=check_bool,
                             section="Kubernetes")
    nats_monitor_url: str = param("", "a NATS monitoring URL (port 8222)", type="str", check=check_url,
                                  section="Kubernetes")
    nats_monitor_urls: list[str] = param([], "every NATS server's monitoring URL (the lag is read from the "
                                         "consumer leader)", type="list[str]", check=check_url_list,
                                         section="Kubernetes")
    nats_account: str = param("$G", "the JetStream account of the EVENTS stream", type="str", check=check_str,
                              section="Kubernetes")
    prometheus_url: str = param("", "Prometheus: service readings, alerts", type="str", check=check_url,
                                section="Kubernetes")
    prometheus_selectors: dict[str, str] = param(
        {}, "service -> PromQL label matchers of its instances (default: job equals the service)",
        type="dict[str, str]", check=check_str_map, section="Kubernetes")
    alertmanager_url: str = param("", "Alertmanager API v2", type="str", check=check_url, section="Kubernetes")
    ingest_url: str = param("", "where canaries are posted (the gateway's /v1/events)", type="str",
                            check=check_url, section="Kubernetes")
    stream_url: str = param("", "the Corp Cockpit SSE stream", type="str", check=check_url, section="Kubernetes")
    service_metrics: dict[str, str] = param(
        {}, "service -> its /metrics URL, scraped directly only where no Prometheus is configured",
        type="dict[str, str]", check=check_url_map, section="Kubernetes")
    events_dsn_env: str = param("GAMEDAY_EVENTS_DSN", "environment variable holding the events table DSN",
                                type="str", check=check_env_name, section="Kubernetes")
    service_selectors: dict[str, Any] = param(
        {}, "service -> label selector of its pods (official charts: app.kubernetes.io/name, /instance)",
        type="dict", check=check_selector_map, section="Kubernetes")
    service_containers: dict[str, str] = param({}, "service -> the container whose logs are read (default: its name)",
                                               type="dict[str, str]", check=check_str_map, section="Kubernetes")
    log_limit_bytes: int = param(8 * 1024 * 1024, "at most this many bytes per pod log read", type="int",
                                 check=check_int, limit=(1024, 1 << 30), section="Kubernetes")
    production_cluster_patterns: list[str] = param(
        ["*prod*"], "kube context, cluster and API server names that mean production", type="list[str]",
        check=check_str_list, section="Kubernetes")
    chaos_filter_namespace: bool = param(False, "Chaos Mesh runs with enableFilterNamespace (the namespace needs "
                                         "chaos-mesh.org/inject: enabled)", type="bool", check=check_bool,
                                         section="Kubernetes")
    commands: dict[str, list[str]] = param({}, "phase id -> the playbook's shell steps to run", type="dict",
                                           check=check_commands, section="Kubernetes")

    # --- derived ------------------------------------------------------------------------------
    @property
    def required(self) -> list[str]:
        return list(self.required_metrics or [])

    def targets(self) -> dict[str, float]:
        """The number each metric is judged against (the gameday's own metrics extend this)."""
        return {
            "rto_seconds": float(self.rto_target_seconds or 0),
            "rpo_seconds": float(self.rpo_target_seconds or 0),
            "event_loss_count": 0.0,
            "user_facing_errors": 0.0,
            "alert_fire_seconds": float(self.alert_fire_target_seconds or 0),
            "team_response_seconds": float(self.team_response_target_seconds or 0),
            "duplicate_count": 0.0,
            "lag_recovery_seconds": float(self.lag_recovery_deadline_seconds or 0),
        }

    def longest_wait_seconds(self) -> float:
        """The longest a single phase cell may wait by design (the gameday extends this)."""
        return max(
            float(self.lag_recovery_deadline_seconds or 0) + 5 * float(self.sample_interval_seconds or 1) + 5,
            float(self.alert_fire_target_seconds or 0),
        )

    def problems(self) -> dict[str, str]:
        """Checks across parameters, after each one passed its own (the gameday extends this)."""
        problems: dict[str, str] = {}
        unknown = [n for n in self.required if n not in self.METRIC_NAMES]
        if unknown:
            problems["required_metrics"] = f"unknown metric names {unknown}; known: {list(self.METRIC_NAMES)}"
        bad = [p for p in self.observations if p not in self.PHASE_IDS]
        if bad:
            problems["observations"] = f"unknown phase id {bad[0]!r}; known: {list(self.PHASE_IDS)}"
        bad = [p for p in self.commands if p not in (*self.PHASE_IDS, "rollback")]
        if bad:
            problems["commands"] = f"unknown phase id {bad[0]!r}; known: {[*self.PHASE_IDS, 'rollback']}"
        phase, _, mode = self.fault_phase.partition(":")
        if self.fault_phase and (phase not in self.PHASE_IDS or mode not in ("", "hang")):
            problems["fault_phase"] = (f"must be empty, a phase id {list(self.PHASE_IDS)} or '<phase id>:hang', "
                                       f"got {self.fault_phase!r}")
        if self.gameday_id != self.GAMEDAY_ID:
            problems["gameday_id"] = f"these parameters are {self.GAMEDAY_ID}'s, got {self.gameday_id!r}"
        return problems


# --- validation -------------------------------------------------------------------------------------


def specs(cls: type[Any]) -> dict[str, tuple[dataclasses.Field[Any], Param]]:
    """Every parameter of ``cls``: name → (dataclass field, Param), in declaration order."""
    return {f.name: (f, f.metadata["param"]) for f in dataclasses.fields(cls) if "param" in f.metadata}


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return copy.deepcopy(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def defaults(cls: type[Any]) -> dict[str, Any]:
    """Every parameter with its notebook default (profile-dependent ones are ``None``)."""
    return {name: _default(f) for name, (f, _) in specs(cls).items()}


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def check_values(cls: type[Any], raw: Mapping[str, Any], *, from_profile: Mapping[str, Any] | None = None,
                 unknown_ok: bool = False) -> dict[str, Any]:
    """Every parameter of ``cls`` checked: ``raw``'s value, else ``from_profile``'s, else the default.
    Raises one ``InvalidParameters`` naming every problem (unknown names too, unless ``unknown_ok``)."""
    table = specs(cls)
    problems: dict[str, str] = {}
    if not unknown_ok:
        for name in sorted(set(raw) - set(table)):
            close = difflib.get_close_matches(name, list(table), n=1)
            problems[name] = "unknown parameter" + (f" (did you mean {close[0]!r}?)" if close else "")
    values: dict[str, Any] = {}
    for name, (f, spec) in table.items():
        value = copy.deepcopy(raw[name]) if name in raw else _default(f)
        if value is None and from_profile is not None and name in from_profile:
            value = copy.deepcopy(from_profile[name])
        if value is None and spec.type.startswith("Optional"):
            values[name] = None
            continue
        try:
            checked = spec.check(value)
        except (ValueError, OverflowError) as exc:
            problems.setdefault(name, str(exc))
            continue
        if spec.limit is not None and isinstance(checked, (int, float)) and not isinstance(checked, bool):
            low, high = spec.limit
            if not low <= checked <= high:
                problems.setdefault(name, f"must be between {low:g} and {high:g}, got {value!r}")
                continue
        values[name] = checked
    if problems:
        raise InvalidParameters(problems)
    return values


def validate(cls: type[P], raw: Mapping[str, Any]) -> P:
    """Check ``raw`` strictly and return the typed parameters (profile applied, run_id set).

    Unknown names, wrong types, out-of-range numbers, unknown profiles or targets and malformed URLs
    raise one ``InvalidParameters`` naming every wrong parameter. Nothing else happens here."""
    profile = raw.get("profile", "rehearsal")
    problems: dict[str, str] = {}
    if not isinstance(profile, str) or profile not in PROFILE_NAMES:
        problems["profile"] = f"unknown profile {profile!r}; known: {list(PROFILE_NAMES)}"
        profile = "rehearsal"
    given = dict(raw)
    if given.get("gameday_id", "") == "":  # not given: this class's gameday (0, False, [] are wrong, not absent)
        given["gameday_id"] = cls.GAMEDAY_ID
    try:
        values = check_values(cls, given, from_profile=cls.PROFILES[profile])
    except InvalidParameters as exc:
        raise InvalidParameters({**exc.problems, **problems}) from None
    if problems:
        raise InvalidParameters(problems)
    if not values["run_id"]:
        values["run_id"] = new_run_id()
    params = cls(**values)
    problems = params.problems()
    if "cell_timeout_seconds" not in problems:
        needed = params.longest_wait_seconds()
        timeout = float(params.cell_timeout_seconds or 0)
        if raw.get("cell_timeout_seconds") is None:
            params = dataclasses.replace(params, cell_timeout_seconds=max(timeout, needed + 120.0))
        elif timeout < needed:
            problems["cell_timeout_seconds"] = (f"{timeout:g}s is shorter than the longest phase may wait "
                                                f"({needed:g}s): that cell would time out")
    if problems:
        raise InvalidParameters(problems)
    return params


def as_dict(params: Any) -> dict[str, Any]:
    """The parameters as plain data (for Papermill, ``params.yaml`` and the journal)."""
    return {name: copy.deepcopy(getattr(params, name)) for name in specs(type(params))}


# --- the command line and files ---------------------------------------------------------------------


def parse_assignment(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from the command line; the value is parsed as YAML (a scalar or a flow mapping)."""
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


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``; where both hold a mapping the two are merged key by key (so
    ``-p 'observations={replay: {...}}'`` adds to the file's answers of other phases and questions)."""
    out = dict(base)
    for name, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(name), Mapping):
            out[name] = merge(out[name], value)
        else:
            out[name] = value
    return out


_NOT_PARAMETERS = frozenset({"In", "Out", "exit", "quit", "get_ipython", "open"})


def from_namespace(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a notebook's namespace holds: every public, non-callable, non-module name (so an
    unknown name Papermill injected is kept, and then rejected by ``validate``)."""
    return {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_")
        and name not in _NOT_PARAMETERS
        and not isinstance(value, types.ModuleType)
        and not callable(value)
    }


# --- the notebook's parameters cell and --help ---------------------------------------------------------


def _by_section(cls: type[Any]) -> dict[str, list[tuple[str, dataclasses.Field[Any], Param]]]:
    """The parameters grouped by section, sections in the order they first appear."""
    groups: dict[str, list[tuple[str, dataclasses.Field[Any], Param]]] = {}
    for name, (f, spec) in specs(cls).items():
        groups.setdefault(spec.section, []).append((name, f, spec))
    return groups


def parameters_cell(cls: type[RunParams]) -> str:
    """The source of the notebook's ``parameters`` cell: one annotated literal per parameter, grouped
    by section, with its help as a comment (Papermill's ``--help-notebook`` reads both). The
    annotation is a string, so the cell needs no import."""
    lines: list[str] = []
    for section, members in _by_section(cls).items():
        lines.append(f"# --- {section}")
        for name, f, spec in members:
            default = cls.GAMEDAY_ID if name == "gameday_id" else _default(f)
            helptext = spec.help + (" (None: from the profile)" if name in cls.PROFILES["full"] else "")
            lines.append(f"{name}: {spec.type!r} = {default!r}  # {helptext}")
    return "\n".join(lines)


def help_lines(cls: type[RunParams], *, skip: Mapping[str, Any] | None = None) -> list[str]:
    """One line per parameter, by section: name, default (or each profile's value), help."""
    lines = []
    for section, members in _by_section(cls).items():
        shown_members = [m for m in members if skip is None or m[0] not in skip]
        if shown_members:
            lines.append(f"{section}:")
        for name, f, spec in shown_members:
            if name in cls.PROFILES["full"]:
                shown = " / ".join(f"{p} {cls.PROFILES[p][name]!r}" for p in PROFILE_NAMES)
            else:
                shown = repr(cls.GAMEDAY_ID if name == "gameday_id" else _default(f))
            lines.append(f"  {name:<32} {shown:<30} {spec.help}")
    return lines
