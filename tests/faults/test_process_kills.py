"""kill -9 of each kind of ghbot process, in turn, under a steady stream of deliveries.

On the session's local Ray (`ray_serve`, Ray-marked like tests/cluster), one deployment
of `tests.faults.labeler:Labeler` (two shards, SQLite journal) takes signed deliveries
through Serve's HTTP proxy, `RATE` a second over three installations (new ones for
each kill, so each kill also sees installations activated and tokens minted). In turn,
these processes are killed with SIGKILL, each found by its pid: a shard actor, the
app-auth actor, the ingress's Serve replica, Serve's HTTP proxy and Serve's controller.
After each kill the stream goes on until its answers have been 2xx for a second; then
what was not acknowledged (503, a connection error, another 5xx) is sent again, as
GitHub's redelivery would, the shards are waited for, and the history is checked
against the journal (`tests.history.check`). The killed process must have been
replaced (another pid, alive).

Pids come from the GCS actor table (`ray._private.state.actors`, what `ray list
actors` reads): `ray.util.state` needs the dashboard, which the session's Ray runs
without.

And the raylet of a worker node: on a Ray cluster of two raylets of its own
(`two_nodes`, tests/cluster/test_two_nodes.py) with a private PostgreSQL journal,
`raylet_kill_job.py` puts both shards on the worker node, streams, kills that node's
raylet, and judges where the shards came back (the head) and the history.

Reduced: 1 s of stream before each kill, at least 2 s after (2 s and 3 s for the
raylet), and no proxy kill (Serve took 22 to 32 s to replace its proxy: over the time
the default run may take). Full (``GHBOT_FAULTS_FULL=1``): every kill, 5 s and 15 s
(10 s and 20 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from actors.ray.names import APP_AUTH_NAME, running_shards, shard_name
from ghbot.journal import open_journal
from tests.cluster.conftest import SECRET, deploy, fake  # noqa: F401  (fixtures)
from tests.cluster.test_two_nodes import two_nodes  # noqa: F401  (a fixture)
from tests.faults.http_stream import (
    BOT,
    Delivery,
    HttpSender,
    delivery,
    effects,
    install_all,
    label_requests,
)
from tests.faults.support import FULL, PrivatePostgres, seconds
from tests.history import History, check, journaled

pytestmark = [pytest.mark.faults, pytest.mark.cluster]

RATE = 40.0  # deliveries a second
BEFORE = seconds(1, 5)  # the stream before a kill
AFTER = seconds(2, 15)  # at least this long after it
RECOVERY_LIMIT = 90.0  # a kill not recovered from by then fails the test
VSHARDS = 4
JOB = Path(__file__).with_name("raylet_kill_job.py")


def _alive_actor(class_prefix: str, name: str | None = None) -> tuple[str, int]:
    """Return (actor id, pid) of the one alive actor of that class (and name)."""
    from ray._private import state

    found = [
        (actor_id, int(actor["Pid"]))
        for actor_id, actor in state.actors(actor_state_name="ALIVE").items()
        if actor["ActorClassName"].startswith(class_prefix)
        and (name is None or actor["Name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} alive actors of class {class_prefix} ({name})"
    return found[0]


def _pid_finders(namespace: str) -> dict[str, Callable[[], int]]:
    import ray

    def shard() -> int:
        handle = ray.get_actor(shard_name(0), namespace=namespace)
        return cast(int, ray.get(handle.pid.remote(), timeout=30))

    return {
        "shard 0": shard,
        "app-auth actor": lambda: _alive_actor("AppAuthActor", APP_AUTH_NAME)[1],
        "ingress replica": lambda: _alive_actor("ServeReplica:ghbot:WebhookIngress")[1],
        "Serve HTTP proxy": lambda: _alive_actor("ProxyActor")[1],
        "Serve controller": lambda: _alive_actor("ServeController")[1],
    }


async def _replaced(find: Callable[[], int], old: int) -> int:
    """Wait until the process found is another one than `old`; return its pid."""
    deadline = time.monotonic() + RECOVERY_LIMIT
    while True:
        try:
            pid = await asyncio.to_thread(find)
            if pid != old:
                return pid
        except Exception:  # gone, or restarting: look again
            if time.monotonic() > deadline:
                raise
        assert time.monotonic() < deadline, f"pid {old} not replaced in {RECOVERY_LIMIT} s"
        await asyncio.sleep(0.2)


async def _idle(namespace: str) -> None:
    shards = running_shards(namespace)
    idle = await asyncio.gather(*(s.wait_idle.remote(60.0) for s in shards))
    assert all(idle), f"shards not idle after 60 s: {idle}"


async def _check(journal_url: str, github: Any, history: History, installations: list[int]) -> Any:
    history.effects = effects(github, installations)
    journal = await open_journal(journal_url, shard_count=VSHARDS)
    try:
        found = await journaled(journal, installations, vshards=VSHARDS)
    finally:
        await journal.close()
    return check(history, found)


class Stream:
    """The deliveries of one phase: round robin over its installations and issues."""

    def __init__(self, installations: list[int]) -> None:
        self.installations = installations
        self.n = 0

    def __call__(self) -> Delivery:
        installation = self.installations[self.n % len(self.installations)]
        item = delivery(installation, self.n // len(self.installations))
        self.n += 1
        return item


async def _kill_mid_stream(
    sender: HttpSender, make: Stream, what: str, find: Callable[[], int]
) -> dict[str, Any]:
    """Stream, kill the process `find` finds, stream until steady again; resend what
    was not acknowledged. Return the phase's figures."""
    answered = len(sender.log)
    start = time.monotonic()
    sent = await sender.stream(make, rate=RATE, until=lambda: time.monotonic() > start + BEFORE)
    old = await asyncio.to_thread(find)
    os.kill(old, signal.SIGKILL)
    killed_at = time.monotonic()

    def recovered() -> bool:
        now = time.monotonic()
        assert now < killed_at + RECOVERY_LIMIT, f"{what}: no steady 2xx {RECOVERY_LIMIT} s on"
        return now > killed_at + AFTER and sender.steady_since(killed_at, 1.0)

    sent += await sender.stream(make, rate=RATE, until=recovered)
    failed = sender.failed_since(killed_at)
    new = await _replaced(find, old)
    during = Counter(status for _, status in sender.log[answered:])
    resent = await sender.resend()
    return {
        "sent": sent,
        "answers": dict(during),
        "recovered in s": round(failed[-1][0] - killed_at, 2) if failed else 0.0,
        "resent": resent,
        "pid": f"{old} -> {new}",
    }


async def test_each_process_kind_killed_mid_stream(deploy: Any, fake: Any) -> None:  # noqa: F811
    app = deploy(BOT, vshards=VSHARDS, max_retries=3)
    namespace, journal_url = app.runtime.namespace, app.runtime.settings.journal_url
    history = History()
    figures: dict[str, dict[str, Any]] = {}
    installations: list[int] = []
    async with HttpSender(app.url, SECRET, history) as sender:
        kinds = _pid_finders(namespace)
        if not FULL:  # Serve took 22 to 32 s to replace its proxy: full run only
            del kinds["Serve HTTP proxy"]
        for phase, (what, find) in enumerate(kinds.items()):
            # Installations new to each phase: 0 and 2 (mod 4) on shard 0, 1 and 3 on 1.
            ours = [7000 + 10 * phase + i for i in range(3)]
            install_all(fake, ours)
            installations += ours
            figures[what] = await _kill_mid_stream(sender, Stream(ours), what, find)
            assert not sender.unacknowledged(), f"{what}: still not acknowledged after resending"
            await _idle(namespace)
            result = await _check(journal_url, fake, history, installations)
            print(f"\n{what} killed: {figures[what]}; history so far: {result}")
    repeated = sum(n - 1 for n in label_requests(fake).values() if n > 1)
    print(f"\nhandler runs repeated: {repeated}")
    assert result["acknowledged"] == result["sent"]
    for what, figure in figures.items():  # 2xx, or 5xx and connection errors: never 4xx
        odd = {status for status in figure["answers"] if status.startswith("http 4")}
        assert not odd, f"{what}: answered {odd}"


@pytest.fixture
def postgres_url(private_postgres: PrivatePostgres) -> str:
    """The journal of the two-raylet cluster (`two_nodes`): a private PostgreSQL."""
    return private_postgres.url


@pytest.mark.parametrize("split", [False, True], ids=["both-shards-on-the-worker", "split"])
def test_the_worker_nodes_raylet_killed_mid_stream(
    postgres_url: str,
    two_nodes: tuple[str, dict[str, str]],  # noqa: F811
    split: bool,
) -> None:
    address, env = two_nodes
    args = ["--before", str(seconds(2, 10)), "--after", str(seconds(3, 20))]
    args += ["--split"] if split else []
    job = subprocess.run(
        [sys.executable, str(JOB), "--address", address, "--journal-url", postgres_url, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in job.stdout.splitlines() if line.startswith("RESULT ")]
    assert job.returncode == 0 and lines, (
        f"the job failed:\n{job.stdout[-2000:]}{job.stderr[-4000:]}"
    )
    result = json.loads(lines[-1].removeprefix("RESULT "))
    print("\nraylet killed:", json.dumps(result, indent=1))
    # The shards ran where they were put (shard 0 on the head with `split`), and came
    # back on the head once the worker was dead.
    assert result["before"]["shard 0"] == ("head" if split else "worker"), result
    assert result["before"]["shard 1"] == "worker", result
    assert not result["worker_alive"]
    assert result["after"]["shard 0"] == result["after"]["shard 1"] == "head", result
    # Those on the worker were restarted, and only those: a new ingress replica that
    # starts while a shard is down no longer stops the others (it did, when the lost
    # replica had been on the worker: docs/reliability.md).
    assert result["shard_pids_changed"] == [not split, True], result
    assert all(result["idle"])
    assert result["unacknowledged"] == 0
    assert "history_broken" not in result, result["history_broken"]
    assert result["history"]["acknowledged"] == result["history"]["sent"]
