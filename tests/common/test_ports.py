"""common.ports on real sockets: the ports it gives can be bound, and a taken port is never given."""

from __future__ import annotations

import socket
from pathlib import Path

from common.ports import free_port, free_ports, port_free, preferred_port


def test_a_free_run_of_ports_binds_and_a_taken_port_is_not_free() -> None:
    port = free_port(span=3)
    with socket.socket() as a, socket.socket() as b, socket.socket() as c:
        for offset, s in enumerate((a, b, c)):
            s.bind(("127.0.0.1", port + offset))
        assert not port_free(port + 1)
        assert preferred_port(port) != port
    assert port_free(port)
    assert preferred_port(port) == port


def test_free_port_pairs_are_apart_and_bindable() -> None:
    ports = free_ports(3)
    assert len(ports) == 3
    assert all(abs(p - q) > 1 for p in ports for q in ports if p != q)
    assert all(port_free(p) and port_free(p + 1) for p in ports)


def test_free_port_runs_lie_below_the_ephemeral_range() -> None:
    # A secured node binds five listeners seconds after the pick: none may be a port the kernel hands out
    # meanwhile as an outgoing connection's source.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    runs = free_ports(2, span=5)
    assert all(p + 4 < low for p in runs)
    assert abs(runs[0] - runs[1]) >= 5
    assert all(port_free(p + i) for p in runs for i in range(5))
