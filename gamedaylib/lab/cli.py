"""`gameday lab ...`: start, stop, describe and partition the embedded lab.

Exit statuses: 0 = done (also `lab up` when the same lab is already up: it says so and starts
nothing; `lab down` when nothing runs); 1 = `lab status` found no lab up, or a lab process dead;
2 = error (invalid knob, could not start or answer, `lab up` with knobs that differ from those of
the lab already up).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import yaml

from gamedaylib.exceptions import InvalidParameters, LabAlreadyRunning
from gamedaylib.lab.client import DEFAULT_PARTITION_SECONDS, Lab
from gamedaylib.lab.knobs import validate_knobs
from gamedaylib.lab.layout import DEFAULT_LAB_DIR

HUMAN_FIELDS = (
    ("gateway", "gateway_url"),
    ("events DSN", "events_dsn"),
    ("NATS", "nats_urls"),
    ("NATS monitoring", "nats_monitor_urls"),
    ("gateway metrics", "gateway_metrics_urls"),
    ("reporting metrics", "reporting_metrics_urls"),
    ("NATS exporter", "exporter_metrics_urls"),
    ("Prometheus", "prometheus_url"),
    ("Alertmanager", "alertmanager_url"),
    ("partition proxy", "proxy_control_url"),
    ("webhook sink", "sink_url"),
    ("ground truth", "truth_file"),
)


def parse_knob_assignments(assignments: list[str]) -> dict[str, Any]:
    """``["lab_retry=false", ...]`` -> ``{"lab_retry": False}`` (values read as YAML scalars)."""
    knobs: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            problems[item] = "expected NAME=VALUE"
        elif not name.startswith("lab_"):
            problems[name] = "only lab_ knobs are fixed by `gameday lab up` (others belong to `gameday run`)"
        else:
            try:
                knobs[name] = yaml.safe_load(value) if value.strip() else value
            except yaml.YAMLError:
                knobs[name] = value
    if problems:
        raise InvalidParameters(problems)
    return knobs


def _out(text: str = "") -> None:
    print(text, flush=True)


def _describe(status: dict[str, Any]) -> None:
    _out(f"lab {'up' if status['up'] else 'down'} in {status['lab_dir']}")
    if not status.get("pids"):
        return
    if status.get("started_at"):
        _out(f"  {'started':<18}{status['started_at']} (ready in {status.get('startup_seconds', '?')}s)")
    for label, key in HUMAN_FIELDS:
        value = status.get(key)
        if isinstance(value, list):
            value = ", ".join(value) if value else None
        _out(f"  {label:<18}{value if value is not None else '- (not installed)'}")
    if status.get("nats_servers"):
        cluster = f"cluster {status['nats_cluster']!r}" if status.get("nats_cluster") else "a single server"
        _out(f"  {'NATS servers':<18}{', '.join(status['nats_servers'])} ({cluster})")
    if status.get("hidden_parts"):
        _out(f"  {'hidden parts':<18}{', '.join(status['hidden_parts'])} (GAMEDAY_LAB_WITHOUT)")
    knobs = status.get("knobs") or {}
    _out(f"  {'knobs':<18}" + ", ".join(f"{k}={v}" for k, v in knobs.items()))
    part = status.get("partition") or {}
    if status.get("partition_active") is None:
        _out(f"  {'partition':<18}unknown ({status.get('partition_error', 'proxy did not answer')})")
    elif status.get("partition_active"):
        _out(
            f"  {'partition':<18}ACTIVE ({part.get('mode')}) since {part.get('since')}, "
            f"heals at {part.get('deadline')}"
        )
    else:
        _out(f"  {'partition':<18}none")
    _out("  processes")
    for name, info in status.get("processes", {}).items():
        _out(f"    {name:<14}pid {info['pid']:<8}{'alive' if info['alive'] else 'DEAD'}")


def _cmd_up(args: argparse.Namespace) -> int:
    lab = Lab(args.lab_dir)
    knobs = parse_knob_assignments(args.param or [])
    shape = None
    if args.gameday:
        from gamedaylib.gamedays import scenario

        shape = scenario(args.gameday).knobs
    wanted = validate_knobs(knobs, shape)
    knobs = {**validate_knobs({}, shape), **knobs} if shape is not None else knobs
    _out(f"starting the lab in {lab.lab_dir}")
    t0 = time.monotonic()
    try:
        status = lab.up(knobs, timeout=args.timeout, progress=lambda line: _out("  " + line))
    except LabAlreadyRunning as exc:
        status = lab.status()
        running = status.get("knobs") or {}
        differ = {k: (running.get(k), v) for k, v in wanted.items() if k in knobs and running.get(k) != v}
        if differ:
            raise InvalidParameters(
                {
                    k: f"the running lab has {old!r}, not {new!r} (stop it with `gameday lab down` first)"
                    for k, (old, new) in differ.items()
                }
            ) from exc
        _out(f"{exc}; not starting another")
        _describe(status)
        return 0
    _out(f"lab up in {time.monotonic() - t0:.1f}s")
    _describe(status)
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    lab = Lab(args.lab_dir)
    was_up = lab.status()
    t0 = time.monotonic()
    lab.down()
    if was_up["up"] or was_up.get("pids"):
        _out(f"lab in {lab.lab_dir} stopped in {time.monotonic() - t0:.1f}s")
    else:
        _out(f"no lab was up in {lab.lab_dir} (left nothing running)")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    status = Lab(args.lab_dir).status()
    if args.json:
        _out(json.dumps(status, indent=2, sort_keys=True))
    else:
        _describe(status)
    all_alive = all(p["alive"] for p in status.get("processes", {}).values())
    return 0 if status["up"] and all_alive else 1


def _cmd_partition(args: argparse.Namespace) -> int:
    lab = Lab(args.lab_dir)
    if args.state == "on":
        result = lab.partition(True, args.duration)
        _out(
            f"partition ACTIVE ({result.get('mode')}) since {result.get('since')}; "
            f"heals by itself at {result.get('deadline')}"
        )
    else:
        if args.duration is not None:
            raise InvalidParameters("--for only goes with `partition on`", "--for")
        lab.partition(False)
        _out("partition healed")
    return 0


def add_lab_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gameday lab {up,down,status,partition}`` to the top-level parser's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--lab-dir",
        default=DEFAULT_LAB_DIR,
        metavar="DIR",
        help=f"the lab's folder: config, state, logs, data (default: {DEFAULT_LAB_DIR})",
    )
    lab = subparsers.add_parser(
        "lab",
        help="start, stop, describe or partition the embedded lab",
        description="The embedded lab: a real nats-server cluster (JetStream), PostgreSQL, api-gateway and "
        "reporting replicas, simulated users, a partition proxy, and Prometheus/Alertmanager when installed. "
        "It stays up in the background until `gameday lab down`.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = lab.add_subparsers(dest="lab_command", required=True, metavar="{up,down,status,partition}")

    up = sub.add_parser(
        "up",
        parents=[common],
        help="start a lab in the background (says so if one is already up)",
        description="Start every lab process on free ports and wait until events flow. "
        "Knobs stage flaws: lab_event_rate, lab_buffer_capacity, lab_overflow (reject|drop), "
        "lab_retry, lab_idempotency, lab_partition_mode (blackhole|reset); and shape the lab: "
        "lab_nats_nodes (1..5, default 3), lab_service_replicas (1..4, default 2). "
        "GAMEDAY_LAB_WITHOUT=prometheus,alertmanager (or one of them) starts it as if they were not "
        "installed.",
    )
    up.add_argument(
        "-p",
        "--param",
        action="append",
        metavar="lab_NAME=VALUE",
        help="a lab knob, e.g. -p lab_overflow=drop -p lab_buffer_capacity=50 (repeatable)",
    )
    up.add_argument(
        "--gameday",
        metavar="ID",
        help="start the lab in the shape this gameday needs (GAMEDAY-002: a Patroni-managed PostgreSQL "
        "pair with etcd and HAProxy instead of one PostgreSQL); default: GAMEDAY-001's",
    )
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for ready (default 180)")
    up.set_defaults(handler=_cmd_up)

    down = sub.add_parser(
        "down", parents=[common], help="stop the lab and every process it started",
        description="Stop the lab; whatever is still alive afterwards is killed by PID.",
    )  # fmt: skip
    down.set_defaults(handler=_cmd_down)

    status = sub.add_parser(
        "status",
        parents=[common],
        help="describe the lab (exit 1 when it is not up or a process is dead)",
        description="URLs, knobs, partition state and every process's PID and liveness. "
        "--json gives gateway_url, events_dsn, nats_url, nats_monitor_url (the first node), "
        "nats_urls and nats_monitor_urls (every node), gateway_metrics_urls and reporting_metrics_urls "
        "(every replica), prometheus_url, alertmanager_url (null when not installed), "
        "partition_active, up, processes and the rest of state.json.",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_cmd_status)

    part = sub.add_parser(
        "partition",
        parents=[common],
        help="cut the services off NATS (on) or heal (off)",
        description="Cut the network between the services and NATS through the lab's proxy (mode: the "
        "lab_partition_mode knob). A cut always heals by itself at its deadline.",
    )
    part.add_argument("state", choices=["on", "off"])
    part.add_argument(
        "--for",
        dest="duration",
        type=float,
        metavar="SECONDS",
        help=f"heal by itself after SECONDS (default {DEFAULT_PARTITION_SECONDS:g})",
    )
    part.set_defaults(handler=_cmd_partition)
