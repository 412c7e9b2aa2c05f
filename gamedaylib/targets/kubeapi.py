"""One session with a Kubernetes API server: who we are, where we act, and calls that survive a bad minute.

``KubeApi`` wraps the ``kubernetes`` client's ``ApiClient`` with what a gameday needs and the client does
not give:

- **identity** (``KubeIdentity``): the kubeconfig context, cluster, API server URL and user the run acts
  as, read before any call, so that pre-flight can show them and the production guard can judge them;
- **error translation**: an ``ApiException`` or a transport error becomes the caller's ``GamedayError``
  subclass with the API server's own message (its ``Status`` body), the exception kept as ``__cause__``;
- **transient errors** (429 Too Many Requests, 500/502/503/504, timeouts, connection resets): retried
  with backoff (``Retry-After`` honoured) a few times for any idempotent call, and until an explicit
  deadline for the calls that must not give up early (heal, the poll loops);
- **expired credentials** (401): the credentials are read again (kubeconfig file, or the in-cluster
  token file) and the call retried once when they changed; otherwise the error says which token was
  refused and how to get a new one (``kubectl create token ... --duration``).

The ``kubernetes`` client refreshes only exec-plugin and OIDC tokens by itself (``refresh_api_key_hook``
runs when an ``expiry`` is known) and the in-cluster token file every minute; a static ``token:`` in a
kubeconfig, which ``kubectl create token`` gives, is never re-read. Hence the reload on 401.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from gamedaylib.exceptions import GamedayError, InvalidParameters, ProbeError

T = TypeVar("T")

__all__ = [
    "IN_CLUSTER",
    "TRANSIENT_STATUSES",
    "KubeApi",
    "KubeIdentity",
    "api_error_text",
    "status_of",
    "translate",
]

IN_CLUSTER = "in-cluster"
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
_SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@dataclass(frozen=True)
class KubeIdentity:
    """Where and as whom the run acts: what pre-flight shows and the production guard judges."""

    context: str  # the kubeconfig context ("in-cluster" inside a pod)
    cluster: str  # the kubeconfig cluster entry ("in-cluster")
    server: str  # the API server URL
    user: str  # the kubeconfig user entry, or the service account
    source: str  # the kubeconfig file, or the in-cluster token file
    token_expires_at: datetime | None = None  # the bearer token's ``exp`` claim, when it is a JWT

    def describe(self) -> str:
        return f"context {self.context} (cluster {self.cluster}, API server {self.server}, user {self.user})"


def api_error_text(exc: BaseException) -> str:
    """The API server's own message for an ``ApiException`` (its Status body), else ``str(exc)``."""
    body = getattr(exc, "body", None)
    status = getattr(exc, "status", None)
    if body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
        if message:
            return f"HTTP {status}: {message}"
    if status:
        return f"HTTP {status}: {getattr(exc, 'reason', '')}"
    return str(exc)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of the ``ApiException`` behind a translated error (or of the exception itself)."""
    cause: BaseException | None = exc
    while cause is not None:
        status = getattr(cause, "status", None)
        if isinstance(status, int):
            return status
        cause = cause.__cause__
    return None


def translate(error: type[GamedayError], message: str) -> GamedayError:
    """``error`` built with ``message`` (the hierarchy's constructors differ)."""
    if error is ProbeError or issubclass(error, ProbeError):
        return ProbeError("kubernetes", message)
    if error is InvalidParameters:
        return InvalidParameters({"kubernetes": message})
    return error(message)


def _token_expiry(token: str | None) -> datetime | None:
    """The ``exp`` claim of a JWT bearer token (service-account tokens are JWTs), unverified."""
    if not token:
        return None
    raw = token.split(" ", 1)[-1].strip()
    parts = raw.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        return datetime.fromtimestamp(float(payload["exp"]), timezone.utc)
    except (ValueError, KeyError, TypeError):
        return None


def _retry_after(exc: ApiException) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    try:
        value = headers.get("Retry-After")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class KubeApi:
    """A Kubernetes API session: identity, error translation, retries of transient errors, 401 reload."""

    def __init__(
        self,
        *,
        kubeconfig: str = "",
        context: str = "",
        in_cluster: bool = False,
        request_timeout: float = 15.0,
        attempts: int = 3,
        auth_hint: str = "",
        api_client: Any = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.in_cluster = in_cluster
        self.request_timeout = request_timeout
        self.attempts = max(1, attempts)
        self.auth_hint = auth_hint  # how to get a new token, named in 401 errors
        self.reloads = 0  # credentials read again after a 401
        self.retried = 0  # transient answers retried
        if api_client is not None:
            self.client = api_client
            host = getattr(getattr(api_client, "configuration", None), "host", "") or ""
            self.identity = KubeIdentity("given", "given", host, "given", "an ApiClient given by the caller")
        else:
            self.client, self.identity = self._load()

    # ------------------------------------------------------------------ credentials
    def _load(self) -> tuple[Any, KubeIdentity]:
        """A new ``ApiClient`` and the identity it acts as, from the kubeconfig or the pod's account."""
        try:
            if self.in_cluster:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api = client.ApiClient(configuration)
                token = configuration.api_key.get("BearerToken") or configuration.api_key.get("authorization")
                return api, KubeIdentity(
                    IN_CLUSTER,
                    IN_CLUSTER,
                    configuration.host,
                    "the pod's service account",
                    _SERVICE_ACCOUNT_TOKEN,
                    _token_expiry(token),
                )
            contexts, active = config.list_kube_config_contexts(config_file=self.kubeconfig or None)
            wanted = self.context or (active or {}).get("name", "")
            chosen = next((c for c in contexts or [] if c.get("name") == wanted), None)
            if chosen is None:
                known = sorted(str(c.get("name")) for c in contexts or [])
                raise InvalidParameters(
                    {"kube_context": f"context {wanted!r} is not in {self._source()} (contexts: {known})"}
                )
            configuration = client.Configuration()
            api = config.new_client_from_config(
                config_file=self.kubeconfig or None,
                context=wanted,
                persist_config=False,
                client_configuration=configuration,
            )
            ctx = chosen.get("context") or {}
            token = api.configuration.api_key.get("BearerToken") or api.configuration.api_key.get(
                "authorization"
            )
            return api, KubeIdentity(
                str(wanted),
                str(ctx.get("cluster", "")),
                str(api.configuration.host),
                str(ctx.get("user", "")),
                self._source(),
                _token_expiry(token),
            )
        except (ConfigException, OSError) as exc:
            name = "in_cluster" if self.in_cluster else "kubeconfig"
            where = "in-cluster service account" if self.in_cluster else self._source()
            raise InvalidParameters(
                {name: f"cannot load Kubernetes credentials from {where}: {exc}"}
            ) from exc

    def _source(self) -> str:
        return self.kubeconfig or "$KUBECONFIG or ~/.kube/config"

    def _token(self) -> str | None:
        api_key = getattr(getattr(self.client, "configuration", None), "api_key", None) or {}
        return api_key.get("BearerToken") or api_key.get("authorization")

    def reload(self) -> bool:
        """Read the credentials again (the kubeconfig file, or the in-cluster token file); True when the
        token changed (the old client is then closed and replaced)."""
        if self.identity.context == "given":
            return False
        before = self._token()
        try:
            fresh, identity = self._load()
        except InvalidParameters:
            return False
        fresh_token = (getattr(fresh.configuration, "api_key", None) or {}).get("BearerToken")
        if fresh_token == before:
            fresh.close()
            return False
        old, self.client, self.identity = self.client, fresh, identity
        self.reloads += 1
        old.close()
        return True

    # ------------------------------------------------------------------ calls
    def call(
        self,
        error: type[GamedayError],
        what: str,
        fn: Callable[[Any], T],
        *,
        retry_until: float | None = None,
        idempotent: bool = True,
    ) -> T:
        """``fn(api_client)``, translated: any failure raises ``error`` naming ``what``.

        Transient answers (429, 5xx) are retried up to ``attempts`` times; with ``retry_until`` (a
        ``time.monotonic()`` deadline) every transient failure, timeouts and refused connections
        included, is retried until then. ``idempotent=False`` (a create) retries only 429, which the
        server answers before doing anything. A 401 reloads the credentials once."""
        attempt, delay, reloaded = 0, 0.2, False
        while True:
            attempt += 1
            try:
                return fn(self.client)
            except ApiException as exc:
                status = exc.status
                if status == 401 and not reloaded:
                    reloaded = True
                    if self.reload():
                        continue
                if status == 401:
                    raise translate(error, f"{what}: {self.unauthorized_text(exc)}") from exc
                retryable = status in TRANSIENT_STATUSES and (idempotent or status == 429)
                wait = _retry_after(exc) or delay
                if retryable and self._may_retry(attempt, wait, retry_until):
                    self._pause(wait, retry_until)
                    delay = min(delay * 2, 2.0)
                    continue
                raise translate(error, f"{what}: {api_error_text(exc)}") from exc
            except (HTTPError, OSError) as exc:
                if retry_until is not None and idempotent and self._may_retry(attempt, delay, retry_until):
                    self._pause(delay, retry_until)
                    delay = min(delay * 2, 2.0)
                    continue
                raise translate(error, f"{what}: API server unreachable: {exc}") from exc

    def _may_retry(self, attempt: int, wait: float, retry_until: float | None) -> bool:
        if retry_until is not None:
            return time.monotonic() + min(wait, 0.05) < retry_until
        return attempt < self.attempts

    def _pause(self, wait: float, retry_until: float | None) -> None:
        self.retried += 1
        wait = wait * (0.8 + 0.4 * random.random())  # jitter, not security
        if retry_until is not None:
            wait = max(0.0, min(wait, retry_until - time.monotonic()))
        time.sleep(wait)

    def unauthorized_text(self, exc: BaseException | None = None) -> str:
        """What a 401 means for this identity and what to do about it."""
        expiry = self.identity.token_expires_at
        when = f" (its token expired at {expiry.isoformat(timespec='seconds')})" if expiry else ""
        hint = f"; {self.auth_hint}" if self.auth_hint else ""
        return (
            f"HTTP 401 Unauthorized: the API server no longer accepts the credentials of "
            f"{self.identity.describe()}{when}; they were read again from {self.identity.source} "
            f"and did not change{hint}"
        )

    def request_timeout_for(self, retry_until: float | None) -> float:
        """The per-request timeout: ``request_timeout``, shortened so that a call never overruns its
        deadline."""
        if retry_until is None:
            return self.request_timeout
        return max(1.0, min(self.request_timeout, retry_until - time.monotonic()))

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()
