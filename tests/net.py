"""Network helpers for tests that start servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import fcntl
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Held while a Ray that takes this machine's fixed ports (Serve's 8000, the
#: dashboard's 8265) runs: by the launcher test and the demo test, and by a benchmark
#: run by hand under `flock /tmp/ghbot-ray.lock`. `make test` runs the launcher and
#: demo tests one after the other (scripts/test.sh); this keeps them from wanting
#: port 8000 at once in any other run (two at once, or a benchmark beside them).
RAY_LOCK = Path("/tmp/ghbot-ray.lock")


def free_port() -> int:
    """Return a port nothing listens on at 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Ray's default worker ports end here (`--max-worker-port`, 19999).
_ABOVE_RAY_WORKERS = 20_000
_handed_out: set[int] = set()


def unassigned_port() -> int:
    """Return a free port at 127.0.0.1 that the kernel does not hand out by itself.

    `free_port`'s ports come from the kernel's ephemeral range, where any process's
    next connection can take one before a server started minutes later binds it: a
    `ray up` failed so once, its GCS port taken meanwhile. This one is below that
    range (/proc/sys/net/ipv4/ip_local_port_range) and above Ray's worker ports, and
    never the same twice in a session. Falls back to `free_port` when no such port
    exists on this machine.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return free_port()
    candidates = list(set(range(_ABOVE_RAY_WORKERS, low)) - _handed_out)
    random.shuffle(candidates)
    for port in candidates[:200]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    return free_port()


@contextlib.contextmanager
def ray_lock(timeout: float = 1800.0) -> Iterator[None]:
    """Hold `RAY_LOCK` (flock, as `flock /tmp/ghbot-ray.lock CMD` does)."""
    with RAY_LOCK.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{RAY_LOCK} still held by another Ray user after {timeout:.0f} s")
                time.sleep(2.0)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
