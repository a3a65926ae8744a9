"""The tests' own port helpers (`tests/net.py`)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.net import unassigned_port


def test_unassigned_ports_are_free_distinct_and_outside_the_kernels_own_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [unassigned_port() for _ in range(20)]
    assert len(set(ports)) == 20
    assert all(20_000 <= port < low for port in ports), (low, ports)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free: nothing else took it
