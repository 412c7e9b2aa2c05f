"""Issue 4's parameter gaps: ``service_metrics`` and label selectors whose values are lists."""

from __future__ import annotations

import pytest

from gamedaylib.chaos import label_selector_string, pod_selector
from gamedaylib.exceptions import InvalidParameters
from gamedaylib.gamedays.nats_partition.params import NatsPartitionParams
from gamedaylib.parameters import validate as validate_params


def validate(raw: dict) -> NatsPartitionParams:
    return validate_params(NatsPartitionParams, raw)


def test_service_metrics_defaults_empty_and_takes_urls() -> None:
    assert validate({}).service_metrics == {}
    urls = {"api-gateway": "http://api-gateway.teei-prod:3000/metrics",
            "reporting": "http://reporting.teei-prod:3001/metrics"}
    assert validate({"service_metrics": urls}).service_metrics == urls
    with pytest.raises(InvalidParameters) as err:
        validate({"service_metrics": {"api-gateway": "not a url"}})
    assert "service_metrics" in str(err.value)


def test_selectors_take_a_string_or_a_list_of_strings() -> None:
    p = validate({"nats_selector": {"app": ["nats", "nats-js"], "tier": "broker"},
                  "service_selector": {"app": ["api-gateway", "reporting"]}})
    assert p.nats_selector == {"app": ["nats", "nats-js"], "tier": "broker"}
    assert label_selector_string(p.nats_selector) == "app in (nats,nats-js),tier=broker"
    sel = pod_selector("teei-prod", p.service_selector)
    assert sel["expressionSelectors"] == [{"key": "app", "operator": "In", "values": ["api-gateway", "reporting"]}]
    for bad in ({"app": []}, {"app": ["nats", 3]}, {"app": 3}, ["app=nats"]):
        with pytest.raises(InvalidParameters) as err:
            validate({"nats_selector": bad})
        assert "nats_selector" in str(err.value)
