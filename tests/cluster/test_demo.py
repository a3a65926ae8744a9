"""`make demo` runs whole and ends promptly, leaving Serve's port free.

The demo starts a Ray of its own (beside the session's, if one runs) on Serve's HAProxy
ingress at port 8000, so it runs as a subprocess, on fewer deliveries than `make demo`.
Its stop used to take over 30 s: throughput-optimized Serve kept the stopping ingress
replica reachable for an external load balancer the demo does not have, and
`serve.shutdown()` gave up on the controller after 30 s. Its Ray keeps its files under
a RAY_TMPDIR of the test's, where the ingress replica's log must show the one forged
delivery the demo sends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.demo import port_free
from tests.cluster.conftest import ROOT, worker_log_lines
from tests.net import ray_lock

PORT = 8000


@pytest.fixture
def ray_tmpdir() -> Iterator[Path]:
    """A short RAY_TMPDIR (Ray's socket paths must stay under 108 bytes), removed after."""
    base = Path(tempfile.mkdtemp(prefix="ghbot-demo-", dir="/tmp"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_the_demo_handles_everything_and_stops_promptly(ray_tmpdir: Path) -> None:
    with ray_lock():  # the launcher test (or a benchmark run by hand) takes port 8000 too
        demo_runs_and_stops(ray_tmpdir)


def demo_runs_and_stops(ray_tmpdir: Path) -> None:
    if not port_free(PORT):
        pytest.skip(f"port {PORT}, which the demo's Serve ingress takes, is in use")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(ray_tmpdir)
    demo = subprocess.Popen(
        [sys.executable, "-u", "-m", "examples.demo", "--deliveries", "40", "--installations", "4"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    watchdog = threading.Timer(300, demo.kill)  # a hung demo fails the test, not the run
    watchdog.start()
    output, handled_at = [], None
    try:
        for line in demo.stdout:
            output.append(line)
            if line.startswith("Waiting for the handlers"):
                handled_at = time.monotonic()
        code = demo.wait(timeout=60)
    finally:
        watchdog.cancel()
    stopping = time.monotonic() - (handled_at or 0)
    text = "".join(output)
    assert code == 0, text
    assert "Demo finished: everything was handled exactly once." in text
    assert "failed to shut down" not in text
    assert stopping < 20, f"the demo took {stopping:.0f} s to stop:\n{text}"
    assert port_free(PORT)
    logs = ray_tmpdir / "ray" / "session_latest" / "logs"
    refusals = worker_log_lines(logs, "refused delivery")
    assert len(refusals) == 1 and '"error_type": "InvalidSignature"' in refusals[0]
    assert '"message": "refused delivery forged-' in refusals[0]
