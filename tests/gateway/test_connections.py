"""The connection table's policy (no sockets): whom a connection past the limit displaces, and the log's pace."""

from __future__ import annotations

import logging

import pytest

from gateway.connections import ConnectionLimits, ConnectionTable, default_max_connections
from gateway.metrics import GatewayMetrics


class Conn:
    def __init__(self, table: ConnectionTable, name: str, displaceable: bool = True) -> None:
        self.table, self.name, self.displaceable = table, name, displaceable
        self.dropped: str | None = None

    def drop(self, reason: str) -> None:
        self.dropped = reason
        self.table.dropped(reason)
        self.table.closed(self)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def table(limit: int, clock: Clock) -> tuple[ConnectionTable, GatewayMetrics]:
    metrics = GatewayMetrics()
    limits = ConnectionLimits(limit, 16384, 8192, 10.0, 15.0)
    return ConnectionTable(limits, metrics, clock), metrics


def dropped(metrics: GatewayMetrics, reason: str) -> float:
    return metrics.registry.get_sample_value("gateway_connections_dropped_total", {"reason": reason}) or 0.0


def test_past_the_limit_the_least_recently_active_idle_connection_makes_room() -> None:
    t, metrics = table(3, Clock())
    a, b, c = Conn(t, "a"), Conn(t, "b"), Conn(t, "c")
    for conn in (a, b, c):
        t.opened(conn)
    t.active(a)  # a started a request since: b is now the least recently active
    d = Conn(t, "d")
    t.opened(d)
    assert (a.dropped, b.dropped, c.dropped, d.dropped) == (None, "displaced_idle", None, None)
    assert len(t) == 3
    assert metrics.registry.get_sample_value("gateway_connections_open") == 3
    assert dropped(metrics, "displaced_idle") == 1


def test_busy_connections_are_never_displaced_and_the_newcomer_is_refused() -> None:
    t, metrics = table(2, Clock())
    busy = [Conn(t, f"busy{i}", displaceable=False) for i in range(2)]
    for conn in busy:
        t.opened(conn)
    newcomer = Conn(t, "new")
    t.opened(newcomer)
    assert [c.dropped for c in busy] == [None, None]
    assert newcomer.dropped == "refused_at_limit"
    assert len(t) == 2
    assert dropped(metrics, "refused_at_limit") == 1


def test_a_burst_displaces_a_different_connection_each_time() -> None:
    t, _ = table(5, Clock())
    first = [Conn(t, f"c{i}") for i in range(5)]
    for conn in first:
        t.opened(conn)
    burst = [Conn(t, f"n{i}") for i in range(5)]
    for conn in burst:
        t.opened(conn)
    assert [c.dropped for c in first] == ["displaced_idle"] * 5
    assert [c.dropped for c in burst] == [None] * 5


def test_the_limit_is_logged_at_most_once_a_minute_with_the_counts(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    t, _ = table(1, clock)
    t.opened(Conn(t, "first"))
    with caplog.at_level(logging.WARNING, logger="gateway.connections"):
        for i in range(100):
            t.opened(Conn(t, f"c{i}"))
            clock.now += 1.0  # 100 connections over 100 s of the injected clock
    lines = [r for r in caplog.records if r.getMessage() == "connection limit reached"]
    assert len(lines) == 2  # at 0 s and at 60 s
    assert [r.__dict__["displaced_idle"] for r in lines] == [1, 60]
    assert lines[0].__dict__["limit"] == 1


@pytest.mark.parametrize(("fd_limit", "expected"), [(256, 192), (1024, 768), (128, 64), (20000, 15000)])
def test_the_default_limit_leaves_a_quarter_of_the_descriptors(fd_limit: int, expected: int) -> None:
    assert default_max_connections(fd_limit) == expected
