"""What a Kafka client needs beyond a bootstrap address: a TLS context and, for OAUTHBEARER, a token.

`ssl_context` builds the TLS context from PEM files (the system trust store when no CA file is given; a client
certificate for mutual TLS). `OAuthClientCredentials` is the OAUTHBEARER token provider Confluent Cloud, Aiven and
Redpanda document: an OIDC client-credentials grant against a token endpoint, the token kept until shortly before
it expires and fetched again after. `MskIamTokens` signs Amazon MSK's IAM tokens with the optional
`aws-msk-iam-sasl-signer-python` package. Both are shared by every client of a process (`token_provider`), so a
service with many connections asks the endpoint once per token lifetime.

Nothing here logs a secret: a failed token request is reported with its status code and the endpoint, never the
body or the credentials.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka.abc import AbstractTokenProvider

#: A token is fetched again once this share of its lifetime has passed (Kafka's Java client refreshes at 80 %).
REFRESH_AT = 0.8
#: Never keep a token longer than this, whatever its `expires_in` says.
MAX_TOKEN_AGE_S = 3600.0


class KafkaAuthError(RuntimeError):
    """A credential could not be obtained (token endpoint refused, signer missing): not a network blip."""


def ssl_context(
    ca_file: Path | None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    key_password: str | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client TLS context: verifies the server against `ca_file` (or the system store), presents a client
    certificate when `cert_file` is given. Raises `ssl.SSLError` / `OSError` for unusable files."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None, key_password)
    return context


@dataclass(frozen=True)
class OAuthConfig:
    """An OIDC client-credentials grant (RFC 6749 §4.4), the secret sent as HTTP Basic (client_secret_basic)."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    audience: str | None = None
    extensions: tuple[tuple[str, str], ...] = ()
    ca_file: Path | None = None
    timeout_s: float = 10.0


@dataclass
class _Token:
    value: str
    refresh_at: float


class OAuthClientCredentials(AbstractTokenProvider):  # type: ignore[misc]
    """aiokafka's OAUTHBEARER token provider over a client-credentials grant, refreshed before expiry.

    Concurrent connections share one request (a lock); a token is reused until `REFRESH_AT` of its lifetime.
    `clock` is injected so tests can move time without sleeping.
    """

    def __init__(self, config: OAuthConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._token: _Token | None = None
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
        self.fetches = 0

    async def token(self) -> str:
        # One lock per event loop: a command may run several loops (asyncio.run) over the process's provider.
        lock = self._locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            if self._token is None or self._clock() >= self._token.refresh_at:
                self._token = await self._fetch()
            return self._token.value

    def extensions(self) -> dict[str, str]:
        """SASL extensions sent with the token (Confluent Cloud: logicalCluster, identityPoolId)."""
        return dict(self.config.extensions)

    async def _fetch(self) -> _Token:
        config = self.config
        form = {"grant_type": "client_credentials"}
        if config.scope:
            form["scope"] = config.scope
        if config.audience:
            form["audience"] = config.audience
        verify: ssl.SSLContext | bool = ssl_context(config.ca_file) if config.ca_file else True
        started = self._clock()
        try:
            async with httpx.AsyncClient(verify=verify, timeout=config.timeout_s) as client:
                response = await client.post(config.token_url, data=form, auth=(config.client_id, config.client_secret))
        except httpx.HTTPError as exc:
            raise KafkaAuthError(
                f"OAuth token endpoint {config.token_url} unreachable ({type(exc).__name__})"
            ) from None
        if response.status_code != 200:
            raise KafkaAuthError(
                f"OAuth token endpoint {config.token_url} refused the client credentials (HTTP {response.status_code})"
            )
        try:
            body: Mapping[str, Any] = response.json()
            value = str(body["access_token"])
            lifetime = float(body.get("expires_in", MAX_TOKEN_AGE_S))
        except (ValueError, KeyError, TypeError):
            raise KafkaAuthError(f"OAuth token endpoint {config.token_url} answered without an access_token") from None
        self.fetches += 1
        return _Token(value, started + min(lifetime, MAX_TOKEN_AGE_S) * REFRESH_AT)


class MskIamTokens(AbstractTokenProvider):  # type: ignore[misc]
    """Amazon MSK IAM: a SigV4-signed token from the AWS credentials of the environment (the optional
    `aws-msk-iam-sasl-signer-python` package, `pip install 'pinwheel-kafka-connector[msk]'`)."""

    def __init__(self, region: str, clock: Callable[[], float] = time.time) -> None:
        try:
            from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
        except ImportError:
            raise KafkaAuthError(
                "KAFKA_SASL_MECHANISM=AWS_MSK_IAM needs the optional package aws-msk-iam-sasl-signer-python "
                "(pip install 'pinwheel-kafka-connector[msk]')"
            ) from None
        self._signer = MSKAuthTokenProvider
        self.region = region
        self._clock = clock
        self._token: _Token | None = None

    async def token(self) -> str:
        if self._token is None or self._clock() >= self._token.refresh_at:
            value, expiry_ms = await asyncio.to_thread(self._signer.generate_auth_token, self.region)
            now = self._clock()
            self._token = _Token(str(value), now + max(0.0, expiry_ms / 1000 - now) * REFRESH_AT)
        return self._token.value


_PROVIDERS: dict[object, AbstractTokenProvider] = {}


def token_provider(key: object, build: Callable[[], AbstractTokenProvider]) -> AbstractTokenProvider:
    """The process's one provider for `key` (every client of a service shares its tokens)."""
    provider = _PROVIDERS.get(key)
    if provider is None:
        provider = _PROVIDERS[key] = build()
    return provider
