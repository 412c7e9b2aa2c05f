"""The alert rules in monitoring/: valid for promtool, unit-tested, loaded by the lab with its shorter
`for:` values, and NATSUnreachable really fires (Prometheus ALERTS, Alertmanager API v2, the sink's
webhook) while the lab is partitioned."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from labtools import optional_parts

from gamedaylib.gamedays import monitoring_dirs
from gamedaylib.lab.client import Lab
from gamedaylib.lab.processes import find_binary
from gamedaylib.lab.supervisor import write_lab_rules

pytestmark = pytest.mark.timeout(240)

PROMTOOL = find_binary("promtool")
MONITORING_DIRS = monitoring_dirs()
RULE_FILES = sorted(p for d in MONITORING_DIRS for p in d.glob("*.rules.yml"))
REQUIRED_ALERTS = {"NATSUnreachable", "NATSConsumerLagHigh", "EventBufferGrowing",  # GAMEDAY-001
                   "PostgreSQLPrimaryDown", "PostgreSQLReplicationBroken", "ReportingNotStoring"}  # GAMEDAY-002

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


def rules_by_alert(paths: list[Path]) -> dict[str, dict[str, Any]]:
    rules = {}
    for path in paths:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                rules[rule["alert"]] = rule
    return rules


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_required_alerts_have_labels_and_annotations() -> None:
    rules = rules_by_alert(RULE_FILES)
    assert REQUIRED_ALERTS <= set(rules)
    for path in RULE_FILES:  # each gameday's rules carry its scenario: nats_partition -> nats-partition
        scenario = path.parent.parent.name.replace("_", "-")
        for name, rule in rules_by_alert([path]).items():
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
            assert rule["labels"]["scenario"] == scenario, name
            assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
    lag = rules["NATSConsumerLagHigh"]["expr"]
    assert 'stream_name="EVENTS"' in lag and 'consumer_name="reporting"' in lag and "> 10" in lag


@needs_promtool
def test_promtool_check_rules_passes() -> None:
    result = subprocess.run(
        [PROMTOOL, "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    for monitoring_dir in MONITORING_DIRS:
        tests = sorted((monitoring_dir / "tests").glob("*.yml"))
        assert tests, f"{monitoring_dir} has no promtool unit tests"
        result = subprocess.run(
            [PROMTOOL, "test", "rules", *map(str, tests)],
            capture_output=True,
            text=True,
            cwd=monitoring_dir,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_lab_rules_only_shorten_for_and_windows(tmp_path: Path) -> None:
    written = write_lab_rules(tmp_path)
    assert [p.name for p in written] == [p.name for p in RULE_FILES]
    result = subprocess.run(
        [PROMTOOL, "check", "rules", *map(str, written)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lab, cluster = rules_by_alert(written), rules_by_alert(RULE_FILES)
    assert set(lab) == set(cluster)
    for name in cluster:
        assert lab[name]["labels"] == cluster[name]["labels"]
        assert lab[name]["annotations"] == cluster[name]["annotations"]
    # the lab's partitions last 20 s: every alert must be able to fire within a few seconds
    for name, rule in lab.items():
        assert rule["for"].endswith("s") and int(rule["for"][:-1]) <= 5, (name, rule["for"])


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    # both optional parts: alerts go from Prometheus through Alertmanager to the sink
    with optional_parts("both"):
        # not under pytest's tmp_path: see scratch_lab in test_supervisor.py
        folder = Path(tempfile.mkdtemp(prefix="gameday-test-lab-"))
        lab = Lab(folder / "lab")
        try:
            lab.up()
            yield lab
        finally:
            try:
                lab.down()
            finally:
                shutil.rmtree(folder, ignore_errors=True)


def firing(prometheus_url: str, alertname: str) -> list[dict[str, Any]]:
    query = f'ALERTS{{alertname="{alertname}",alertstate="firing"}}'
    answer = get_json(prometheus_url + "/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def test_nats_unreachable_fires_during_a_partition_and_reaches_alertmanager(lab: Lab) -> None:
    status = lab.status()
    prom, am, sink = status["prometheus_url"], status["alertmanager_url"], status["sink_url"]
    assert firing(prom, "NATSUnreachable") == []
    lab.partition(True, 20)
    cut = time.monotonic()
    try:
        fired_after = None
        while time.monotonic() - cut < 18:
            alerts = firing(prom, "NATSUnreachable")
            if alerts:
                fired_after = time.monotonic() - cut
                break
            time.sleep(0.5)
        assert fired_after is not None, "NATSUnreachable did not fire within 18 s of the cut"
        jobs = {a["metric"]["job"] for a in alerts}
        assert "api-gateway" in jobs or "reporting" in jobs
        assert all(a["metric"]["scenario"] == "nats-partition" for a in alerts)

        in_am: list[dict[str, Any]] = []
        while time.monotonic() - cut < 19 and not in_am:
            in_am = [
                a for a in get_json(am + "/api/v2/alerts?active=true")
                if a["labels"]["alertname"] == "NATSUnreachable"
            ]  # fmt: skip
            time.sleep(0.3)
        assert in_am, "Alertmanager never received NATSUnreachable"
        assert in_am[0]["labels"]["severity"] == "critical"
        assert in_am[0]["annotations"]["runbook_url"]

        posted: list[dict[str, Any]] = []
        while time.monotonic() - cut < 20 and not posted:
            posted = [
                p for p in get_json(sink + "/posts?path=/alertmanager")
                if any(a["labels"]["alertname"] == "NATSUnreachable" for a in p["body"]["alerts"])
            ]  # fmt: skip
            time.sleep(0.3)
        assert posted, "Alertmanager did not post NATSUnreachable to the lab's webhook sink"
    finally:
        lab.partition(False)
    # healed: the alert resolves
    deadline = time.monotonic() + 20
    while firing(prom, "NATSUnreachable") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert firing(prom, "NATSUnreachable") == []
