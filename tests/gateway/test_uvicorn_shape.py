"""uvicorn's internals the gateway stands on still have the shape it expects: this fails, loudly, on an upgrade
that changes them (pyproject.toml bounds uvicorn below its next minor release; raising the bound means this passes).

`gateway/connections.py` subclasses uvicorn's private `HttpToolsProtocol`: it overrides some of its methods,
calls others and reads its per-connection state, and replaces `data_received` whole (a copy of uvicorn's with
the header cap added). `gateway/server.py` runs several workers under uvicorn's `Multiprocess` supervisor and
reads its worker processes' pids. tests/gateway/test_connections.py and test_workers.py hold the behaviour; this
names the exact piece of uvicorn that moved.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import socket
import textwrap
from collections.abc import Callable
from typing import Any

import httptools
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from gateway.connections import GuardedHttpToolsProtocol

# The methods GuardedHttpToolsProtocol overrides (calling super()'s, but for data_received), with the parameters
# it passes them.
OVERRIDDEN = {
    "__init__": ["self", "config", "server_state", "app_state", "_loop"],
    "connection_made": ["self", "transport"],
    "connection_lost": ["self", "exc"],
    "data_received": ["self", "data"],
    "on_message_begin": ["self"],
    "on_url": ["self", "url"],
    "on_header": ["self", "name", "value"],
    "on_headers_complete": ["self"],
    "on_message_complete": ["self"],
    "on_response_complete": ["self"],
}
# The methods of uvicorn's it calls itself (from its data_received and its refusals).
CALLED = {
    "_unset_keepalive_if_required": ["self"],
    "_should_upgrade": ["self"],
    "handle_websocket_upgrade": ["self"],
    "_unsupported_upgrade_warning": ["self"],
    "send_400_response": ["self", "msg"],
}
# uvicorn's data_received, which GuardedHttpToolsProtocol.data_received replaces: the SHA-256 of its source
# (dedented). A change there may be a fix our copy lacks: read uvicorn's new one, carry the change over into
# gateway/connections.py, then put the new digest here.
DATA_RECEIVED_SHA256 = "02c2572f1df559070eba7f206a3f7e251782f5af4aaae194fc1ffb67f24c3873"


def _parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize(("name", "parameters"), [*OVERRIDDEN.items(), *CALLED.items()])
def test_the_methods_we_override_or_call_keep_their_parameters(name: str, parameters: list[str]) -> None:
    method = getattr(HttpToolsProtocol, name, None)
    assert callable(method), f"uvicorn's HttpToolsProtocol has no {name} any more"
    assert _parameters(method) == parameters, f"uvicorn's HttpToolsProtocol.{name} changed its parameters"


def test_every_override_is_one_of_those() -> None:
    """A method added to GuardedHttpToolsProtocol that shadows one of uvicorn's is listed above."""
    ours = {name for name, value in vars(GuardedHttpToolsProtocol).items() if callable(value)}
    shadowed = {name for name in ours if hasattr(HttpToolsProtocol, name)}
    assert shadowed == set(OVERRIDDEN)


def test_data_received_is_the_one_our_copy_was_made_from() -> None:
    source = textwrap.dedent(inspect.getsource(HttpToolsProtocol.data_received))
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == DATA_RECEIVED_SHA256, (
        f"uvicorn {uvicorn.__version__} changed HttpToolsProtocol.data_received, which "
        "GuardedHttpToolsProtocol.data_received replaces: carry the change over, then update the digest:\n" + source
    )


async def _ok(scope: Any, receive: Any, send: Any) -> None:  # never called: no request is completed here
    raise AssertionError("not reached")


async def test_the_state_we_read_is_there_on_a_real_connection() -> None:
    """A real socket: uvicorn's own construction and connection_made, then the first bytes of a request."""
    config = uvicorn.Config(_ok, http=GuardedHttpToolsProtocol, lifespan="off", log_config=None)
    config.load()
    state = ServerState()
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_accepted_socket(lambda: GuardedHttpToolsProtocol(config, state, {}), ours)
    try:
        assert isinstance(protocol, GuardedHttpToolsProtocol)
        assert protocol.transport is transport
        assert protocol.loop is loop
        assert isinstance(protocol.parser, httptools.HttpRequestParser)
        assert protocol.cycle is None
        assert protocol.logger.name == "uvicorn.error"
        assert protocol in state.connections
        theirs.sendall(b"GET /webhooks/pinwheel HTTP/1.1\r\nhost: x\r\nx-more: y")  # a head still incomplete
        for _ in range(200):
            if protocol.headers:
                break
            await asyncio.sleep(0.01)
        assert protocol.url == b"/webhooks/pinwheel"
        assert protocol.headers == [(b"host", b"x")]  # what _head_too_large looks at
        assert protocol.phase.value == "head"  # our on_message_begin ran, called by uvicorn's parser
    finally:
        transport.abort()
        theirs.close()


def test_a_request_cycle_has_the_flags_we_set() -> None:
    """`_disconnect_cycle` sets `disconnected` and `message_event` of the cycle whose `response_complete` is
    false (their names as uvicorn's RequestResponseCycle creates them)."""
    source = inspect.getsource(RequestResponseCycle.__init__)
    for attribute in ("self.response_complete", "self.disconnected", "self.message_event"):
        assert f"{attribute} =" in source or f"{attribute}:" in source, attribute


def test_the_supervisor_takes_a_config_and_sockets_and_lists_processes_with_pids() -> None:
    assert _parameters(Multiprocess.__init__) == ["self", "config", "sockets"]
    config = uvicorn.Config(_ok, workers=2, log_config=None)
    supervisor = Multiprocess(config, sockets=[])
    assert supervisor.processes == []  # filled by run(): gateway/server.py reads each one's pid
    assert callable(supervisor.run)
    process_class = type(supervisor).__init__.__globals__["Process"]
    assert isinstance(inspect.getattr_static(process_class, "pid"), property)
