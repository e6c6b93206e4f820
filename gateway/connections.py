"""Connection hygiene below the app: header size caps, read deadlines and a connection limit.

uvicorn's httptools protocol puts no bound on a request's header block (httptools buffers a header value
however long it gets, at a cost that grows faster than its size), no deadline on a connection that sends
nothing or half a request, and no limit on open connections short of the process's file descriptors.
`GuardedHttpToolsProtocol` adds them, per connection:

- the request line past `max_request_line_bytes` → 414, the header block past `max_header_bytes` → 431,
  both while the bytes stream in (httptools never holds more than the cap plus one read);
- the header block must be complete `header_timeout_s` after the connection opened (or after the first
  byte of a later request on it) → 408 (or a silent close if nothing came), the body `body_timeout_s`
  after its headers → 408;
- at most `max_connections` open connections per process, kept below the file-descriptor limit so the
  process can always accept, reach Kafka and open its spool. A connection past the limit displaces the
  least recently active one that has no request in progress (idle, or with its headers still coming);
  only when every connection is busy is the new one refused.

`ConnectionTable` is the per-process bookkeeping and policy (which connection to displace, metrics, a
rate-limited log line); the protocol is the shell that applies it. The app creates the table and hands
it to the protocol through the ASGI lifespan state (`app_state`), the only channel uvicorn offers
between an app and its protocol instances.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

TABLE_STATE_KEY = "gateway.connections"
LIMIT_LOG_INTERVAL_S = 60.0
REFUSAL_LINGER_S = 0.2  # after a 4xx we answer on our own, the connection is aborted this much later
# Descriptors kept out of the connection limit: Kafka, the spool, the listener, logs, and the connections still
# in their TLS handshake (uvicorn's protocol sees a connection only once its handshake is done).
FD_RESERVE_MIN = 64


def default_max_connections(fd_limit: int | None = None) -> int:
    """The connection limit when none is configured: the soft open-file limit less a reserve (1/4, at least 64)."""
    if fd_limit is None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if fd_limit == resource.RLIM_INFINITY:
            fd_limit = 65536
    return max(1, fd_limit - max(FD_RESERVE_MIN, fd_limit // 4))


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    max_header_bytes: int
    max_request_line_bytes: int
    header_timeout_s: float
    body_timeout_s: float

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ConnectionLimits:
        return cls.from_values(settings.model_dump())

    @classmethod
    def defaults(cls) -> ConnectionLimits:
        return cls.from_values({name: field.default for name, field in GatewaySettings.model_fields.items()})

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> ConnectionLimits:
        return cls(
            max_connections=values["max_connections"] or default_max_connections(),
            max_header_bytes=values["max_header_bytes"],
            max_request_line_bytes=min(values["max_request_line_bytes"], values["max_header_bytes"]),
            header_timeout_s=values["header_timeout_s"],
            body_timeout_s=values["body_timeout_s"],
        )


class Phase(Enum):
    IDLE = "idle"  # waiting for a request (just opened, or kept alive after a response)
    HEAD = "head"  # request line and headers arriving
    BODY = "body"  # headers complete, body arriving
    APP = "app"  # request complete, the app is answering it
    CLOSING = "closing"  # closed by us; the descriptor is held until the TLS shutdown ends


class Tracked(Protocol):
    """What the table needs of a connection."""

    @property
    def displaceable(self) -> bool: ...

    def drop(self, reason: str) -> None: ...


class ConnectionTable:
    """The open connections of one process, least recently active first."""

    def __init__(
        self, limits: ConnectionLimits, metrics: GatewayMetrics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self._clock = clock
        self._open: OrderedDict[Tracked, None] = OrderedDict()
        self._last_log: float | None = None
        self._since_log = {"displaced": 0, "refused": 0}

    def __len__(self) -> int:
        return len(self._open)

    def opened(self, conn: Tracked) -> None:
        """Register `conn`; past the limit, displace the least recently active idle connection or refuse `conn`."""
        self._open[conn] = None
        if len(self._open) > self.limits.max_connections:
            victim = next((c for c in self._open if c is not conn and c.displaceable), None)
            if victim is not None:
                self._limit_hit("displaced")
                victim.drop("displaced_idle")
            else:
                self._limit_hit("refused")
                conn.drop("refused_at_limit")
        self.metrics.connections_open.set(len(self._open))

    def active(self, conn: Tracked) -> None:
        """`conn` started a request: it moves to the most recently active end."""
        if conn in self._open:
            self._open.move_to_end(conn)

    def closed(self, conn: Tracked) -> None:
        self._open.pop(conn, None)
        self.metrics.connections_open.set(len(self._open))

    def dropped(self, reason: str) -> None:
        self.metrics.count_connection_dropped(reason)

    def _limit_hit(self, kind: str) -> None:
        """One WARNING per LIMIT_LOG_INTERVAL_S at most, with what happened since the previous one."""
        self._since_log[kind] += 1
        now = self._clock()
        if self._last_log is not None and now - self._last_log < LIMIT_LOG_INTERVAL_S:
            return
        log.warning(
            "connection limit reached",
            extra={
                "limit": self.limits.max_connections,
                "open": len(self._open),
                "displaced_idle": self._since_log["displaced"],
                "refused": self._since_log["refused"],
            },
        )
        self._last_log = now
        self._since_log = {"displaced": 0, "refused": 0}


_REASONS = {408: "Request Timeout", 414: "URI Too Long", 431: "Request Header Fields Too Large"}


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that broke a limit."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `ConnectionTable.limits` (see the module doc)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if TABLE_STATE_KEY not in app_state:
            # An app other than the gateway's (the benchmark's reference servers): one table with the
            # default limits for the server, so they run under the same protocol.
            app_state[TABLE_STATE_KEY] = ConnectionTable(ConnectionLimits.defaults(), GatewayMetrics())
        self._table: ConnectionTable = app_state[TABLE_STATE_KEY]
        self._limits = self._table.limits
        self.phase = Phase.IDLE
        self._head_bytes = 0  # bytes received since the current request's head began
        self._header_bytes = 0  # request line + header names and values, as parsed
        self._refusal: tuple[int, str] | None = None
        self._deadline: asyncio.TimerHandle | None = None

    # -- what the table asks --------------------------------------------------------------------

    @property
    def displaceable(self) -> bool:
        if self.phase is Phase.CLOSING:
            return True
        busy = self.cycle is not None and not self.cycle.response_complete
        return self.phase in (Phase.IDLE, Phase.HEAD) and not busy

    def drop(self, reason: str) -> None:
        """Close at once (no TLS close_notify exchange: the descriptor is freed in this loop iteration)."""
        self._table.dropped(reason)
        # Out of the table now, not at connection_lost (a later callback): the next connection of a burst
        # must displace another one.
        self._table.closed(self)
        self.phase = Phase.CLOSING
        self._disarm()
        self._disconnect_cycle()
        self.transport.abort()

    # -- connection events ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._limits.header_timeout_s, self._header_timeout)
        self._table.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._table.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.phase is Phase.CLOSING:
            return
        if self.phase is not Phase.BODY:
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
            else:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self._table.dropped("invalid_request")
                self.phase = Phase.CLOSING
                self._disarm()
                self.send_400_response(msg)
            return
        # The head is still incomplete: httptools holds at most the cap plus this read.
        if self.phase is Phase.HEAD and self._head_bytes > self._limits.max_header_bytes:
            self._refuse(*self._head_too_large())

    # -- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.phase = Phase.HEAD
        self._header_bytes = 0
        self._table.active(self)
        if self._deadline is None:  # a later request on a kept-alive connection
            self._arm(self._limits.header_timeout_s, self._header_timeout)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self._limits.max_request_line_bytes:
            self._refusal = (414, "request_line_too_long")
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if len(self.url) + self._header_bytes > self._limits.max_header_bytes:
            self._refusal = (431, "header_too_large")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.phase = Phase.BODY
        self._head_bytes = 0
        self._arm(self._limits.body_timeout_s, self._body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.phase = Phase.APP
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.phase is Phase.APP:
            self.phase = Phase.IDLE  # uvicorn's keep-alive timer now bounds the wait for the next request

    # -- refusals and deadlines -----------------------------------------------------------------

    def _head_too_large(self) -> tuple[int, str]:
        # No header parsed yet: the bytes are (still) the request line.
        if not self.headers:
            return 414, "request_line_too_long"
        return 431, "header_too_large"

    def _refuse(self, status: int, reason: str) -> None:
        """Answer `status` and close: the request is not read further."""
        self._table.dropped(reason)
        self.phase = Phase.CLOSING
        self._disarm()
        self._disconnect_cycle()
        text = _REASONS[status]
        body = f"{status} {text}\n".encode()
        self.transport.write(
            f"HTTP/1.1 {status} {text}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        # close() starts the TLS shutdown, which keeps reading (and decrypting) whatever the client still
        # sends until the client answers it: a hostile client never does. The answer is on its way (written
        # to the socket at once); the descriptor is freed shortly after, whatever the client does.
        self.transport.close()
        self.loop.call_later(REFUSAL_LINGER_S, self.transport.abort)

    def _header_timeout(self) -> None:
        self._deadline = None
        if self.phase is Phase.HEAD:
            self._refuse(408, "header_timeout")
        elif self.phase is Phase.IDLE:
            self.drop("idle_timeout")  # opened and sent nothing

    def _body_timeout(self) -> None:
        self._deadline = None
        if self.phase is Phase.BODY:
            self._refuse(408, "body_timeout")

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _disconnect_cycle(self) -> None:
        """A request the app is reading gets `http.disconnect`, and nothing it sends is written."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
