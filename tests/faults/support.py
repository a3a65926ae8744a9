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
import itertools
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest

from actors.bot import InstallationActor, on
from actors.shard import ShardCore
from actors.wire import Inbound
from ghbot.events import Event
from ghbot.journal import open_journal
from tests.history import History, Sender, check, journaled
from tests.runtime.conftest import VSHARDS, inbound, payload

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


# --- a steady stream of deliveries ---------------------------------------------------

#: The installations a stream's deliveries are spread over, and the issues of each.
INSTALLATIONS = (301, 302, 303)
ISSUES = 4
_counter = itertools.count()


def deliveries(count: int) -> list[Inbound]:
    """The next `count` deliveries, spread over the installations and their issues."""
    items = []
    for _ in range(count):
        n = next(_counter)
        installation = INSTALLATIONS[n % len(INSTALLATIONS)]
        body = payload("issues.opened", installation=installation, issue__number=n % ISSUES + 1)
        items.append(inbound(Effects, "issues", body, delivery_id=f"d{n}-{uuid.uuid4().hex[:6]}"))
    return items


async def stream(sender: Sender, until: float, *, every: float = 0.01) -> tuple[int, int]:
    """Send batches of one to four deliveries until `until`; return (batches, 503s)."""
    batches = failed = 0
    sizes = itertools.cycle([1, 3, 2, 4])
    while time.monotonic() < until:
        batches += 1
        if await sender.send(deliveries(next(sizes))) is None:
            failed += 1
        await asyncio.sleep(every)
    return batches, failed


async def settle(
    shard: ShardCore, sender: Sender, history: History, journal: Any
) -> dict[str, int]:
    """Redeliver what was not acknowledged, wait until handled, and check the history."""
    for _ in range(20):
        if await sender.redeliver() == 0:
            break
        await asyncio.sleep(0.5)
    assert sender.undelivered == [], f"still refused after the fault: {sender.errors}"
    async with asyncio.timeout(60):
        await shard.wait_idle()
    assert shard.pending() == 0
    return check(history, await journaled(journal, INSTALLATIONS, vshards=VSHARDS))


async def run_shard(url: str) -> tuple[ShardCore, Any]:
    """Open the journal at `url` and start a shard of `Effects` over it."""
    journal = await open_journal(url, shard_count=VSHARDS)
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Effects)
    await shard.start()
    return shard, journal
