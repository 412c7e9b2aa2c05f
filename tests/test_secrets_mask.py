"""Secrets: one mask (``***``) for whatever is shown, journaled or archived: secret environment values,
passwords in DSNs and URLs, ``password=`` pairs, bearer tokens, Slack webhooks, secret-named values."""

from __future__ import annotations

import secrets as token_source

import pytest

from gamedaylib.secrets import (
    MASK,
    MIN_SECRET_LENGTH,
    redact,
    redact_notebook,
    redact_text,
    redact_url,
    register_secret_envs,
    secret_values,
)


def unique(prefix: str) -> str:
    return f"{prefix}{token_source.token_hex(6)}"


def test_passwords_tokens_and_webhooks_in_text_are_masked() -> None:
    text = ("psql postgresql://teei:s3cr3t-pw@db:5432/events -c 'select 1'; "
            "curl -H 'Authorization: Bearer xyz.abc-123' https://api?password=hunter2&x=1 token=t0k3n "
            "posted to https://hooks.slack.com/services/T000/B000/XXXXXXXX")
    masked = redact_text(text)
    for secret in ("s3cr3t-pw", "xyz.abc-123", "hunter2", "t0k3n", "hooks.slack.com"):
        assert secret not in masked, secret
    assert "postgresql://teei:***@db:5432/events" in masked
    assert "Bearer ***" in masked and "password=***&x=1" in masked
    assert redact_text("nothing secret here: lag 42") == "nothing secret here: lag 42"


def test_values_of_secret_looking_environment_variables_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    token, hook_path = unique("tok-"), unique("/hooks/abcdef-")
    monkeypatch.setenv("SOME_API_TOKEN", token)
    monkeypatch.setenv("PLAIN_HOOK_VAR", f"http://127.0.0.1:9{hook_path}")
    monkeypatch.setenv("SHORT_SECRET", "abc")  # too short to mask without masking ordinary words
    assert token not in redact_text(f"curl -H 'X: {token}' ...")
    assert hook_path not in redact_text(f"posted to {hook_path}")  # the URL's path alone is a secret too
    assert "abc" in redact_text("abc")
    assert len("abc") < MIN_SECRET_LENGTH
    values = secret_values()
    assert values.index(f"http://127.0.0.1:9{hook_path}") < values.index(token)  # longest first


def test_variables_named_by_env_parameters_become_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    name, value = unique("INNOCENT_NAME_").upper(), unique("value-named-by-a-param-")
    monkeypatch.setenv(name, value)
    assert value in redact_text(f"got {value}")  # an innocent name: not masked yet
    register_secret_envs({"notify_webhook_env": name, "partition_seconds": 20})
    assert redact_text(f"got {value}") == f"got {MASK}"
    other, other_value = unique("ALSO_INNOCENT_").upper(), unique("named-again-")
    monkeypatch.setenv(other, other_value)
    redact({"status_page_webhook_env": other})  # redacting parameters remembers their *_env names too
    assert other_value not in redact_text(other_value)


def test_redact_masks_a_copy_of_a_parameter_tree() -> None:
    params = {
        "events_dsn": "postgresql://teei:s3cr3t@db:5432/events",
        "api_token": "abc123",
        "db_password": "",
        "events_dsn_env": "GAMEDAY_EVENTS_DSN",
        "commands": {"preflight": ["psql postgresql://u:hunter2@h/db -c 'select 1'",
                                   "curl -H 'Authorization: Bearer xyz.abc'"]},
        "service_pods": ("api-gateway", "reporting"),
        "partition_seconds": 20,
    }
    safe = redact(params)
    text = repr(safe)
    for secret in ("s3cr3t", "abc123", "hunter2", "xyz.abc"):
        assert secret not in text
    assert safe["events_dsn"] == "postgresql://teei:***@db:5432/events"
    assert safe["api_token"] == MASK and safe["db_password"] == ""  # an empty secret is shown empty
    assert safe["events_dsn_env"] == "GAMEDAY_EVENTS_DSN"  # the *name* of a variable is not a secret
    assert safe["service_pods"] == ["api-gateway", "reporting"] and safe["partition_seconds"] == 20
    assert params["api_token"] == "abc123" and params["commands"]["preflight"][0].count("hunter2") == 1


def test_notebooks_are_masked_except_their_images() -> None:
    image = "iVBORw0KGgo" + "password=notreally" * 3  # base64 of an image may look like anything
    nb = {"cells": [{"cell_type": "code", "source": "dsn = 'postgresql://u:pw-in-source@h/db'",
                     "outputs": [{"output_type": "display_data",
                                  "data": {"text/plain": "Bearer abc.def", "image/png": image}}]}],
          "metadata": {"kernelspec": {"name": "python3"}}}
    safe = redact_notebook(nb)
    assert "pw-in-source" not in safe["cells"][0]["source"]
    assert safe["cells"][0]["outputs"][0]["data"]["text/plain"] == "Bearer ***"
    assert safe["cells"][0]["outputs"][0]["data"]["image/png"] == image
    assert safe["metadata"] == nb["metadata"]


def test_an_error_about_a_webhook_does_not_repeat_any_part_of_it() -> None:
    url = "https://status.example.com:8443/api/incidents/s3cr3tpath?key=q-s3cr3t"
    message = (f"<urlopen error [Errno -2] Name or service not known: status.example.com:8443> "
               f"while posting to {url}; path /api/incidents/s3cr3tpath")
    safe = redact_url(message, url)
    for part in ("status.example.com", "s3cr3tpath", "q-s3cr3t"):
        assert part not in safe, part
    assert "Name or service not known" in safe
