"""A small OAuth 2.0 token endpoint on loopback, for the secured local broker's OAUTHBEARER listener.

Managed Kafka (Confluent Cloud, MSK, Aiven) increasingly authenticates clients with OAuth/OIDC: the client
trades its id and secret for a signed JWT at the identity provider's token endpoint (client-credentials
grant), and the broker checks the JWT's signature against the provider's JWKS, its audience, issuer and
expiry. This server plays the provider: `POST /token` and `GET /.well-known/jwks.json`, RS256 tokens with
`sub` (the client id, hence the Kafka principal `User:<client id>`), `iat`, `exp`, `iss`, `aud`, `scope` and
`jti`. It records the tokens it issued (never the tokens themselves), so a test can see a client refresh.

The JWT is signed with `cryptography` directly (header.payload.signature, base64url): no JWT library needed.
It never logs a request: secrets travel in them.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

JWKS_PATH = "/.well-known/jwks.json"
TOKEN_PATH = "/token"  # noqa: S105 (a URL path, not a secret)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def sign_jwt(key: rsa.RSAPrivateKey, kid: str, claims: dict[str, Any]) -> str:
    """An RS256 JWS compact serialization of `claims` (RFC 7515/7519)."""
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def jwk(key: rsa.RSAPublicKey, kid: str) -> dict[str, str]:
    """The public key as a JWK (RFC 7517), as a JWKS endpoint serves it."""
    numbers = key.public_numbers()
    return {
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": kid,
        "n": b64url(_uint(numbers.n)),
        "e": b64url(_uint(numbers.e)),
    }


@dataclass(frozen=True)
class IssuedToken:
    """What the endpoint remembers of a token it issued (not the token: it is a credential)."""

    client_id: str
    jti: str
    issued_at: int
    expires_at: int
    scope: str


@dataclass
class LocalOidc:
    """The token endpoint and JWKS of one test session or run; `start` binds a free loopback port.

    `clients` maps client id to secret; `lifetime_s` is every token's lifetime (short ones make clients
    refresh within a test).
    """

    audience: str = "pinwheel-kafka"
    lifetime_s: int = 300
    clients: dict[str, str] = field(default_factory=dict)
    issued: list[IssuedToken] = field(default_factory=list)
    kid: str = field(default_factory=lambda: secrets.token_hex(8))
    _key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048), repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the token endpoint is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    def add_client(self, client_id: str, secret: str | None = None) -> str:
        """Register a client (its secret made up unless given); returns the secret."""
        secret = secret or secrets.token_urlsafe(24)
        with self._lock:
            self.clients[client_id] = secret
        return secret

    def tokens_of(self, client_id: str) -> list[IssuedToken]:
        with self._lock:
            return [token for token in self.issued if token.client_id == client_id]

    def issue(self, client_id: str, scope: str = "kafka") -> str:
        """A signed token for `client_id` (recorded in `issued`)."""
        now = int(time.time())
        claims = {
            "sub": client_id, "iss": self.issuer, "aud": self.audience, "iat": now, "nbf": now,
            "exp": now + self.lifetime_s, "scope": scope, "jti": secrets.token_hex(12), "client_id": client_id,
        }  # fmt: skip
        with self._lock:
            self.issued.append(IssuedToken(client_id, str(claims["jti"]), now, now + self.lifetime_s, scope))
        return sign_jwt(self._key, self.kid, claims)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [jwk(self._key.public_key(), self.kid)]}

    def authenticate(self, authorization: str | None, form: dict[str, str]) -> str | None:
        """The client id when the request carries a known id and its secret (HTTP Basic or form), else None."""
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, _, password = decoded.partition(":")
            client_id, secret = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)
        if client_id is None or secret is None:
            return None
        with self._lock:
            expected = self.clients.get(client_id)
        if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
            return None
        return client_id

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a daemon thread; returns the base URL."""
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="local-oidc", daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _handler(oidc: LocalOidc) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Silent: the requests carry client secrets and the answers tokens."""

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == JWKS_PATH:
                self._json(200, oidc.jwks())
            elif self.path == "/.well-known/openid-configuration":
                self._json(200, {"issuer": oidc.issuer, "token_endpoint": oidc.token_url, "jwks_uri": oidc.jwks_url})
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self) -> None:
            if self.path != TOKEN_PATH:
                self._json(404, {"error": "not_found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode()).items()}
            if form.get("grant_type") != "client_credentials":
                self._json(400, {"error": "unsupported_grant_type"})
                return
            client_id = oidc.authenticate(self.headers.get("Authorization"), form)
            if client_id is None:
                self._json(401, {"error": "invalid_client"})
                return
            token = oidc.issue(client_id, form.get("scope") or "kafka")
            self._json(200, {"access_token": token, "token_type": "Bearer", "expires_in": oidc.lifetime_s})

    return Handler
