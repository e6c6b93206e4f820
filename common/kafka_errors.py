"""What a Kafka client's failure means for the one who waits: retry it, or stop and fix the configuration.

A broker not listening yet, a leader being elected, a request timing out: the cluster is *unreachable* for now
and waiting (with back-off) fixes it. A refused password, a missing ACL, a certificate that does not verify:
the cluster answered and said no, so retrying only repeats the refusal; the service or command stops with
one line naming the cause and the variables to check (exit 2, as for any bad setting).

`classify_kafka_error` is a pure function over the exception and its chain (`__cause__`, `__context__`):
aiokafka wraps the real cause in several ways (a KafkaConnectionError whose cause is the SASL refusal, an
ssl.SSLCertVerificationError raised by the socket layer, an authorization error by name). The messages built
here name error classes, topics and variables, never a value that could be a secret.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import socket
import ssl
from dataclasses import dataclass

from aiokafka import errors as kafka_errors

#: The broker refused the record itself (too large, corrupt): sending it again fails the same way, whatever
#: the cluster's health. The gateway and the processors' runtime each add their own (`PERMANENT_ERRORS`,
#: `RECORD_ERRORS`).
RECORD_REFUSED_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.CorruptRecordException,
)


class Kind(enum.Enum):
    UNREACHABLE = "unreachable"  # wait and retry
    MISCONFIGURED = "misconfigured"  # the cluster refused us: stop, exit 2
    OTHER = "other"  # not about reaching Kafka: the caller decides (usually a bug: let it crash)


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str  # one line, for logs, /readyz and stderr; no secrets

    @property
    def retry(self) -> bool:
        return self.kind is Kind.UNREACHABLE


class KafkaUnreachable(RuntimeError):
    """Kafka did not answer within the time allowed; `str()` is the one line to print."""


class KafkaMisconfigured(RuntimeError):
    """The cluster refused us (authentication, authorization, TLS): retrying cannot help; `str()` is the line."""


_SASL_HINT = "check KAFKA_SASL_MECHANISM / KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD"
_TLS_HINT = "check KAFKA_SECURITY_PROTOCOL and the KAFKA_SSL_* settings (CA file, client certificate, host name)"
_ACL_HINT = "grant the principal the ACLs in docs/operations.md"

# Errors the cluster answers with when it will not let us in: (class name, reason). By name, so that a class
# missing from an aiokafka version is simply not matched.
_REFUSALS: tuple[tuple[str, str], ...] = (
    ("SaslAuthenticationFailed", f"authentication failed (SASL): {_SASL_HINT}"),
    ("AuthenticationFailedError", f"authentication failed (SASL): {_SASL_HINT}"),
    ("UnsupportedSaslMechanismError", "the brokers do not offer this SASL mechanism: check KAFKA_SASL_MECHANISM"),
    ("IllegalSaslStateError", f"SASL handshake refused: check KAFKA_SECURITY_PROTOCOL; {_SASL_HINT}"),
    ("AuthenticationMethodNotSupported", "authentication method not supported: check KAFKA_SASL_MECHANISM"),
    ("TopicAuthorizationFailedError", f"not authorized for topic(s) {{detail}}: {_ACL_HINT}"),
    ("GroupAuthorizationFailedError", f"not authorized for the consumer group {{detail}}: {_ACL_HINT}"),
    ("TransactionalIdAuthorizationFailed", f"not authorized for the transactional id(s): {_ACL_HINT}"),
    ("ClusterAuthorizationFailedError", f"not authorized for a cluster operation: {_ACL_HINT}"),
    ("DelegationTokenAuthorizationFailed", f"not authorized (delegation token): {_ACL_HINT}"),
    ("SecurityDisabled", "the brokers have security disabled: check KAFKA_SECURITY_PROTOCOL"),
)

# OpenSSL reasons of a handshake the other side refused for what we sent or expect (as opposed to a
# connection cut halfway, which is transient).
_TLS_REFUSALS = frozenset(
    {
        "WRONG_VERSION_NUMBER",  # TLS spoken to a plaintext listener
        "UNSUPPORTED_PROTOCOL",
        "TLSV1_ALERT_UNKNOWN_CA",  # the broker does not trust our client certificate
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "NO_PROTOCOLS_AVAILABLE",
    }
)


_NETWORK_ERRNOS = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.ETIMEDOUT, errno.EADDRNOTAVAIL}
)


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and its causes/contexts, outermost first (at most 10, no cycles)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _detail(exc: BaseException) -> str:
    """What aiokafka puts in an authorization error: the topic or group name (never a secret)."""
    args = [str(arg) for arg in exc.args if isinstance(arg, str | int) and str(arg)]
    return ", ".join(args) if args else "(not named)"


def _refusal(exc: BaseException) -> str | None:
    for kind in type(exc).__mro__:
        for name, reason in _REFUSALS:
            if kind.__name__ == name:
                return reason.replace("{detail}", _detail(exc))
    if isinstance(exc, ssl.SSLCertVerificationError):
        what = getattr(exc, "verify_message", None) or "the broker's certificate"
        return f"TLS certificate verification failed ({what}): {_TLS_HINT}"
    if isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None) in _TLS_REFUSALS:
        return f"TLS handshake refused ({getattr(exc, 'reason', None)}): {_TLS_HINT}"
    return None


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, kafka_errors.KafkaError):
        return bool(getattr(exc, "retriable", False)) or isinstance(
            exc,
            kafka_errors.KafkaTimeoutError
            | kafka_errors.RequestTimedOutError
            | kafka_errors.BrokerNotAvailableError
            | kafka_errors.KafkaUnavailableError,
        )
    # Refused, reset, no route, a name not resolved yet (the DNS name of a pod not yet scheduled), a TLS
    # handshake cut halfway; not any OSError: a file that cannot be read is no reason to wait for Kafka.
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return True
    return isinstance(
        exc,
        ConnectionError
        | socket.gaierror
        | TimeoutError
        | asyncio.TimeoutError
        | asyncio.IncompleteReadError
        | ssl.SSLEOFError
        | ssl.SSLZeroReturnError,
    )


def _describe(exc: BaseException) -> str:
    """`Type: message` (aiokafka repeats its class name in the message: said once)."""
    name = type(exc).__name__
    text = str(exc)
    if text.startswith(f"{name}: "):
        text = text[len(name) + 2 :]
    return f"{name}: {text}" if text else name


def classify_kafka_error(exc: BaseException) -> Verdict:
    """MISCONFIGURED when anything in the chain is a refusal (authentication, authorization, TLS), else
    UNREACHABLE when the failure is a connection or timeout one, else OTHER."""
    chain = _chain(exc)
    for link in chain:
        if (reason := _refusal(link)) is not None:
            return Verdict(Kind.MISCONFIGURED, reason)
    if isinstance(exc, KafkaUnreachable):
        return Verdict(Kind.UNREACHABLE, str(exc))
    if any(_transient(link) for link in chain):
        return Verdict(Kind.UNREACHABLE, f"kafka unreachable: {_describe(exc)}")
    return Verdict(Kind.OTHER, _describe(exc))
