"""The PrometheusRule a team applies: the shipped rule file with a namespace matcher in every selector,
checked by promtool against a shared Prometheus holding two environments' series."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gamedaylib.lab.processes import find_binary
from gamedaylib.targets.prometheusrule import DEFAULT_RULES, metric_names, namespaced_expr, render

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "prometheusrule-gameday-001.yaml"


def promtool() -> str:
    found = find_binary("promtool")  # Debian's prometheus package ships it (hidden with prometheus)
    if found is None:
        pytest.skip("promtool not available (Debian package prometheus; or hidden by GAMEDAY_LAB_WITHOUT)")
    return found


def test_deploy_file_is_generated_from_the_rule_file() -> None:
    shipped = yaml.safe_load(DEPLOY.read_text(encoding="utf-8"))
    assert shipped == yaml.safe_load(render(DEFAULT_RULES, namespace="teei-prod")), (
        "regenerate: python -m gamedaylib.targets.prometheusrule --namespace teei-prod > " + str(DEPLOY)
    )
    assert (shipped["apiVersion"], shipped["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    plain = yaml.safe_load(DEFAULT_RULES.read_text(encoding="utf-8"))["groups"]
    for ours, theirs in zip(shipped["spec"]["groups"][0]["rules"], plain[0]["rules"], strict=True):
        assert {k: v for k, v in ours.items() if k != "expr"} == {
            k: v for k, v in theirs.items() if k != "expr"
        }
        for metric in metric_names(theirs["expr"]):
            assert ours["expr"].count(metric) == ours["expr"].count(f'{metric}{{namespace="teei-prod"'), (
                metric
            )


def test_every_selector_gets_the_namespace() -> None:
    expr = (
        'event_buffer_size > 0 and deriv(event_buffer_size[2m]) > 0 or max by (job) (nats_connected{job="x"})'
    )
    assert metric_names(expr) == ["event_buffer_size", "nats_connected"]
    assert namespaced_expr(expr, "ns") == (
        'event_buffer_size{namespace="ns"} > 0 and deriv(event_buffer_size{namespace="ns"}[2m]) > 0 '
        'or max by (job) (nats_connected{namespace="ns",job="x"})'
    )


LAG_DESCRIPTION = (
    "Consumer reporting on stream EVENTS has more than 10 messages pending (playbook baseline: under 10). "
    "Reports and dashboards are stale."
)
UNREACHABLE_DESCRIPTION = (
    "api-gateway () has reported nats_connected == 0 for the alert's whole `for:` window: it cannot "
    "publish or consume events; gateways buffer while consumers fall behind."
)


def _lag_series(metric: str, namespace: str, server: str, leader: bool, values: str) -> dict[str, str]:
    labels = (
        f'namespace="{namespace}",job="{namespace}/nats",stream_name="EVENTS",consumer_name="reporting",'
        f'server_name="{server}",is_consumer_leader="{str(leader).lower()}"'
    )
    return {"series": f"{metric}{{{labels}}}", "values": values}


def _alert(labels: dict[str, str], summary: str, description: str) -> dict[str, Any]:
    return {
        "exp_labels": {"scenario": "nats-partition", **labels},
        "exp_annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": "runbooks/nats-partition.md",
        },
    }


def _shared_prometheus_test(rule_file: str) -> dict[str, Any]:
    """Both prefixes, leader and follower series, two namespaces."""
    lag = {
        "severity": "warning",
        "namespace": "teei-prod",
        "stream_name": "EVENTS",
        "consumer_name": "reporting",
    }
    unreachable = {"severity": "critical", "namespace": "teei-prod", "job": "api-gateway"}
    return {
        "rule_files": [rule_file],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    _lag_series("nats_consumer_num_pending", "teei-prod", "nats-0", True, "50+50x12"),
                    _lag_series("nats_consumer_num_pending", "teei-prod", "nats-1", False, "0x12"),
                    _lag_series("jetstream_consumer_num_pending", "teei-staging", "nats-0", True, "900x12"),
                    _lag_series("jetstream_consumer_num_pending", "teei-staging", "nats-1", False, "900x12"),
                    {"series": 'nats_connected{namespace="teei-prod",job="api-gateway"}', "values": "0x12"},
                    {
                        "series": 'nats_connected{namespace="teei-staging",job="api-gateway"}',
                        "values": "0x12",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "150s",
                        "alertname": "NATSConsumerLagHigh",
                        "exp_alerts": [
                            _alert(
                                lag, "JetStream consumer reporting is 550 messages behind", LAG_DESCRIPTION
                            )
                        ],
                    },
                    {
                        "eval_time": "90s",
                        "alertname": "NATSUnreachable",
                        "exp_alerts": [
                            _alert(unreachable, "api-gateway cannot reach NATS", UNREACHABLE_DESCRIPTION)
                        ],
                    },
                ],
            }
        ],
    }


def test_prometheusrule_alerts_on_its_own_namespace_only(tmp_path: Path) -> None:
    """teei-staging's consumer lags too (900 on its leader): the teei-prod PrometheusRule must not
    alert on it, while the plain rule file (which the lab loads) alerts on both."""
    rule = yaml.safe_load(DEPLOY.read_text(encoding="utf-8"))
    (tmp_path / "namespaced.rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    (tmp_path / "namespaced.test.yml").write_text(
        yaml.safe_dump(_shared_prometheus_test("namespaced.rules.yml"))
    )
    done = subprocess.run(
        [promtool(), "test", "rules", "namespaced.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # the plain file would page teei-prod for staging's consumer: the same test fails on it
    shutil.copy(DEFAULT_RULES, tmp_path / "plain.rules.yml")
    (tmp_path / "plain.test.yml").write_text(yaml.safe_dump(_shared_prometheus_test("plain.rules.yml")))
    plain = subprocess.run(
        [promtool(), "test", "rules", "plain.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.returncode != 0 and 'namespace="teei-staging"' in plain.stdout + plain.stderr
