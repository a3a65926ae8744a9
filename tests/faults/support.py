"""What the fault suites share: the private PostgreSQL server, the length of a run
(reduced, or full with ``GHBOT_FAULTS_FULL=1``), a bot that records its effects in a
`History`, a steady stream of deliveries into a shard (`stream`, `settle`), and
`GitHubRig`, a shard against the fake GitHub on GitHub's time. The fixtures over them
are in this directory's conftest.

The private server is never the machine's own (other tests use that one): `initdb` into
a temporary directory, `pg_ctl` on a free port with its socket in that directory, run
as the ``postgres`` OS user when the tests run as root (initdb refuses root).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from actors.bot import InstallationActor, on
from actors.local import LocalShard
from actors.shard import ShardCore
from actors.wire import Inbound
from ghbot.client import close_pool
from ghbot.config import Settings
from ghbot.events import Event
from ghbot.journal import open_journal
from ghbot.testing import FakeClock, FakeGitHub, app_key_pair
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


# --- a shard against a fake GitHub, on a fake clock ------------------------------------

REPO_OWNER, REPO_NAME = "octo-org", "faults"
REPO = f"{REPO_OWNER}/{REPO_NAME}"
GH_INSTALLATION = 77


class Commenter(InstallationActor):
    """Read the issue, then comment `seen <delivery id>` on it: one comment per delivery."""

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        number = event.payload.issue.number
        await self.github.request("GET", f"/repos/{REPO}/issues/{number}")
        body = {"body": f"seen {event.delivery_id}"}
        await self.github.request("POST", f"/repos/{REPO}/issues/{number}/comments", json=body)


class GitHubRig:
    """A `LocalShard` of `Commenter` (SQLite journal) against a `FakeGitHub`.

    The fake keeps GitHub's time, `github_clock` (a `FakeClock`); the app and the
    runtime read `app_clock`, which is GitHub's time plus `skew` (a test steps it, as
    an NTP correction steps a machine's clock). Every wait of the runtime and of the
    client moves GitHub's time on instead of sleeping.
    """

    def __init__(self, tmp: Path, *, request_timeout: float = 30.0) -> None:
        self.tmp = tmp
        self.request_timeout = request_timeout
        self.github_clock = FakeClock()
        self.skew = 0.0
        self.history = History()
        self.fake: FakeGitHub | None = None
        self.local: LocalShard | None = None
        self.journal: Any = None
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._timer_ids = itertools.count()
        self._advancer: asyncio.Task[None] | None = None

    def app_clock(self) -> float:
        return self.github_clock() + self.skew

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of GitHub's time: wake up when `_advance` gets there.

        Sleeps end in the order of their deadlines, as in real time: one task's short
        backoff never outlasts another's long wait. (Moving the clock on by each sleep
        at once, as `FakeClock.sleep` does, lets one task's 0.3 s backoff span another's
        30 s breaker wait when many run at the same time.)
        """
        self.github_clock.sleeps.append(seconds)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deadline = self.github_clock.now + max(seconds, 0.0)
        heapq.heappush(self._timers, (deadline, next(self._timer_ids), future))
        await future

    async def _advance(self) -> None:
        """Move GitHub's time to the next deadline every half millisecond of real time."""
        while True:
            await asyncio.sleep(0.0005)
            if not self._timers:
                continue
            deadline = self._timers[0][0]
            self.github_clock.now = max(self.github_clock.now, deadline)
            while self._timers and self._timers[0][0] <= deadline:
                future = heapq.heappop(self._timers)[2]
                if not future.done():
                    future.set_result(None)

    async def __aenter__(self) -> GitHubRig:
        self._advancer = asyncio.create_task(self._advance())
        private, public = app_key_pair()
        self.fake = await FakeGitHub(
            app_id=1, public_key_pem=public, clock=self.github_clock
        ).start()
        self.fake.add_installation(GH_INSTALLATION, REPO_OWNER, [REPO_NAME])
        for number in range(1, ISSUES + 1):
            self.fake.add_issue(REPO, f"issue {number}")
        settings = Settings(
            app_id=1,
            private_key=private,
            webhook_secrets=("faults",),
            api_url=self.fake.url,
            journal_url=f"sqlite://{self.tmp}/journal",
            request_timeout=self.request_timeout,
        )
        self.journal = await open_journal(settings.journal_url, shard_count=VSHARDS)
        self.local = LocalShard(
            Commenter,
            settings,
            self.journal,
            vshards=VSHARDS,
            clock=self.app_clock,
            sleep=self.sleep,
            schedule=False,
        )
        await self.local.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.local is not None:
            await self.local.close()
        if self._advancer is not None:
            self._advancer.cancel()
        if self.journal is not None:
            await self.journal.close()
        if self.fake is not None:
            await self.fake.stop()
        await close_pool()

    @property
    def shard(self) -> ShardCore:
        assert self.local is not None
        return self.local.shard

    def deliveries(self, count: int) -> list[Inbound]:
        """The next `count` deliveries for the installation, over its issues."""
        items = []
        for _ in range(count):
            n = next(_counter)
            body = payload(
                "issues.opened",
                installation=GH_INSTALLATION,
                issue__number=n % ISSUES + 1,
                repository__full_name=REPO,
                repository__name=REPO_NAME,
            )
            guid = f"gh{n}-{uuid.uuid4().hex[:6]}"
            items.append(inbound(Commenter, "issues", body, delivery_id=guid))
        return items

    async def stream(self, sender: Sender, count: int, *, batch: int = 2) -> None:
        """Send `count` deliveries, `batch` at a time, letting the shard run between."""
        for _ in range(0, count, batch):
            await sender.send(self.deliveries(batch))
            await asyncio.sleep(0.002)

    async def settle(self, sender: Sender, *, dead: Iterable[str] = ()) -> dict[str, int]:
        """Wait until every delivery is handled; take the comments as the effects; check."""
        assert await sender.redeliver() == 0
        async with asyncio.timeout(60):
            await self.shard.wait_idle()
        assert self.fake is not None
        repo = self.fake.store.repo(REPO_OWNER, REPO_NAME)
        assert repo is not None
        comments = [c for n in range(1, ISSUES + 1) for c in repo.comments.get(n, [])]
        comments.sort(key=lambda c: c["id"])
        self.history.effects = [c["body"].removeprefix("seen ") for c in comments]
        found = await journaled(self.journal, [GH_INSTALLATION], vshards=VSHARDS)
        return check(self.history, found, dead=dead)

    def mints(self) -> int:
        """How many installation tokens were asked for (each JWT exchange)."""
        assert self.fake is not None
        return sum(1 for r in self.fake.requests if r.path.endswith("/access_tokens"))
