"""Secrets: the one mask for everything shown, journaled or archived.

A secret is masked as ``***`` wherever it turns up:

- values of environment variables that a ``*_env`` parameter names (the events DSN, webhook URLs) or
  whose names look secret (``*PASSWORD*``, ``*TOKEN*``, ``*DSN*``, ...), and the password of such a
  value when it is a URL;
- passwords inside DSNs and URLs (``scheme://user:PASSWORD@host``), ``password=...`` pairs, bearer
  tokens and Slack webhook URLs, whoever wrote them;
- whole values of parameters whose names look secret.

``redact_text`` masks a string, ``redact`` a parameter tree (a copy), ``redact_notebook`` every string
of a notebook but its embedded images. Nothing else in gamedaylib masks on its own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "MASK", "redact", "redact_notebook", "redact_text", "redact_url", "register_secret_envs", "secret_values",
]

MASK = "***"
MIN_SECRET_LENGTH = 6

SECRET_ENV_NAME = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|CREDENTIAL|PRIVATE_?KEY|DSN|WEBHOOK|HOOK)", re.IGNORECASE
)
_SECRET_PARAMETER = re.compile(
    r"(password|passwd|secret|token|api[_-]?key|credential|private[_-]?key)", re.IGNORECASE
)
_DSN_PASSWORD = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?P<post>@)", re.IGNORECASE)
_KV_SECRET = re.compile(r"(?P<pre>\b(?:password|passwd|token|secret|api[_-]?key)=)(?P<pw>[^\s&;'\"]+)", re.IGNORECASE)
_BEARER = re.compile(r"(?P<pre>\bBearer\s+)(?P<pw>[A-Za-z0-9._~+/=-]+)")
_WEBHOOK = re.compile(r"https://hooks\.slack\.com/\S+", re.IGNORECASE)

# environment variables whose values are secrets, whatever their names: the defaults of the *_env
# parameters, and every variable a run's *_env parameters name (``register_secret_envs``)
_secret_env_names: set[str] = {"GAMEDAY_EVENTS_DSN"}


def register_secret_envs(params: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
    """Remember the environment variables the ``*_env`` parameters name: their values are secrets."""
    items = params.items() if isinstance(params, Mapping) else params
    for name, value in items:
        if isinstance(name, str) and name.endswith("_env") and isinstance(value, str) and value:
            _secret_env_names.add(value)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values to mask wherever they turn up: every variable named by a ``*_env`` parameter or whose
    name looks secret, and the password and path of such a value when it is a URL. Longest first."""
    env = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in env.items():
        if not value or not (name in _secret_env_names or SECRET_ENV_NAME.search(name)):
            continue
        found.add(value)
        try:
            parts = urlsplit(value)
            if parts.password:
                found.add(parts.password)
            if parts.netloc and len(parts.path) >= 8:
                found.add(parts.path)
        except ValueError:
            continue
    return sorted((v for v in found if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def redact_text(text: str) -> str:
    """``text`` with secret values from the environment, DSN/URL passwords, ``password=`` pairs,
    bearer tokens and webhook URLs masked."""
    for value in secret_values():
        if value in text:
            text = text.replace(value, MASK)
    text = _DSN_PASSWORD.sub(lambda m: m["pre"] + MASK + m["post"], text)
    text = _KV_SECRET.sub(lambda m: m["pre"] + MASK, text)
    text = _BEARER.sub(lambda m: m["pre"] + MASK, text)
    return _WEBHOOK.sub(MASK, text)


def redact(value: Any, key: str = "") -> Any:
    """A copy safe to archive: values of secret-looking names masked whole, every string masked by
    ``redact_text``. The variables ``*_env`` names point at are remembered as secret."""
    if key and _SECRET_PARAMETER.search(key) and not key.endswith("_env"):
        return MASK if value not in (None, "") else value
    if isinstance(value, Mapping):
        register_secret_envs(value)
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_notebook(value: Any, key: str = "") -> Any:
    """Every string of a notebook (a JSON tree) masked; embedded images (``image/*``) left as they are."""
    if isinstance(value, Mapping):
        return {k: redact_notebook(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_notebook(v, key) for v in value]
    if isinstance(value, str) and not key.startswith("image/"):
        return redact_text(value)
    return value


def redact_url(message: str, url: str) -> str:
    """``message`` (e.g. an error about ``url``) without ``url`` or any of its parts (host, path, query):
    webhook URLs are secrets whole."""
    parts = urlsplit(url)
    for secret in sorted({url, parts.netloc, parts.hostname or "", parts.path, parts.query}, key=len, reverse=True):
        if secret and len(secret) > 1:
            message = message.replace(secret, MASK)
    return redact_text(message)
