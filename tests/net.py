"""Network helpers for tests that start servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import fcntl
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
