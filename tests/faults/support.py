"""What the fault suites share: the private PostgreSQL server, the length of a run
(reduced, or full with ``GHBOT_FAULTS_FULL=1``), and a bot that records its effects in a
`History`. The fixtures over them are in this directory's conftest.

The private server is never the machine's own (other tests use that one): `initdb` into
a temporary directory, `pg_ctl` on a free port with its socket in that directory, run
as the ``postgres`` OS user when the tests run as root (initdb refuses root).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import ClassVar

import pytest

from actors.bot import InstallationActor, on
from ghbot.events import Event
from tests.history import History

FULL = os.environ.get("GHBOT_FAULTS_FULL") == "1"


def seconds(reduced: float, full: float) -> float:
    """How long a phase of a suite lasts: `full` with GHBOT_FAULTS_FULL=1."""
    return full if FULL else reduced


class Effects(InstallationActor):
    """Record one effect per `issues.opened` in `history`, after a short await."""

    history: ClassVar[History] = History()

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        await asyncio.sleep(0.001)
        type(self).history.effect(event.delivery_id or "")


# --- a private PostgreSQL -------------------------------------------------------------


def skip_or_fail(why: str) -> None:
    if os.environ.get("GHBOT_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{why} and GHBOT_REQUIRE_POSTGRES=1")
    pytest.skip(why)


class PrivatePostgres:
    """A PostgreSQL server of its own in `root`, on `port`; see the module."""

    def __init__(self, bin_dir: Path, root: Path, port: int, as_user: str | None) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.port = port
        self.as_user = as_user
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / tool), *args]
        if self.as_user:
            command = ["runuser", "-u", self.as_user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = str(self.root / "server.log")
        args = ("-D", str(self.data), "-o", options, "-l", log, "-m", mode, "-w", "restart")
        self._run("pg_ctl", *args)

    def running_pid(self) -> int | None:
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(pid_file.read_text().split()[0])
        return None

    def cleanup(self) -> None:
        """Stop the server if it runs (by pg_ctl, else its pid), then remove `root`."""
        if self.running_pid() is not None:
            done = self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", check=False)
            pid = self.running_pid()
            if done.returncode != 0 and pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
