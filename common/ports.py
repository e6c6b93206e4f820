"""Free loopback ports, for the local broker and registry, `make run`, the benches, chaos runs and the tests."""

from __future__ import annotations

import random
import socket
from pathlib import Path


class NoFreePort(RuntimeError):
    """No free port (or run of ports) was found."""


def port_free(port: int) -> bool:
    """Whether `port` can be bound on 127.0.0.1 now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(span: int = 1) -> int:
    """A free loopback port the kernel picks, whose `span - 1` successors are free too (a local Kafka node
    listens on port+1 for its controller: `connector.local_kafka.NODE_PORT_SPAN`)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 65000 and all(port_free(port + i) for i in range(1, span)):
            return port
    raise NoFreePort(f"no {span} free consecutive ports found")


def preferred_port(preferred: int) -> int:
    """`preferred` if it is free, else any free port."""
    return preferred if port_free(preferred) else free_port()


def free_ports(count: int, span: int = 2) -> list[int]:
    """`count` free ports, each with its `span - 1` successors free too (a node's controller, a secured node's
    other listeners) and no two runs adjacent.

    Taken below the kernel's ephemeral range: a node (re)started on its ports (chaos, tests; a JVM takes
    seconds to bind) must not find one taken meanwhile as the source port of some outgoing connection.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    ports: list[int] = []
    for _ in range(1000):
        port = rng.randrange(10_000, max(10_000 + span, low - span))
        if any(abs(port - other) < span for other in ports):
            continue
        if all(port_free(port + i) for i in range(span)):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise NoFreePort(f"no {count} free runs of {span} ports found")
