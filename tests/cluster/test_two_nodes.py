"""Two raylets on this machine, one PostgreSQL journal: ghbot across nodes.

The test starts a Ray cluster of its own with `ray start` (a head and a second node,
one CPU each, no dashboard, in a temporary directory of its own), runs
`two_nodes_job.py` as that cluster's driver, and judges the JSON it prints: shard 0 and
shard 1 on different nodes, every delivery acknowledged, handled (commented at the
fake GitHub) exactly once, and journaled exactly once and completed in PostgreSQL.
It always stops the processes of its own cluster (by pid, never `ray stop`, which
would stop every Ray on the machine) and drops its PostgreSQL schema.

Needs GHBOT_TEST_POSTGRES_URL (skipped without it, failed if GHBOT_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.cluster.conftest import free_port

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
JOB = Path(__file__).with_name("two_nodes_job.py")
RAY = Path(sys.executable).with_name("ray")


@pytest.fixture
def postgres_url() -> str:
    """Return GHBOT_TEST_POSTGRES_URL if it answers; skip (or fail, when required)."""
    url = os.environ.get("GHBOT_TEST_POSTGRES_URL", "")
    problem = "GHBOT_TEST_POSTGRES_URL is not set"
    if url:

        async def probe() -> None:
            conn = await asyncpg.connect(url, timeout=5)
            await conn.close()

        try:
            asyncio.run(probe())
            problem = ""
        except Exception as exc:
            problem = f"PostgreSQL at GHBOT_TEST_POSTGRES_URL is unreachable: {exc!r}"
    if problem:
        if os.environ.get("GHBOT_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{problem} and GHBOT_REQUIRE_POSTGRES=1")
        pytest.skip(problem)
    return url


def _drop_schema(url: str, schema: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def _processes_of(temp_dir: Path) -> set[int]:
    """Pids of the processes this cluster runs: those naming `temp_dir`, and descendants.

    Ray's daemons (GCS, raylets, agents, log monitor) name the temporary directory on
    their command line; workers rename themselves (`ray::…`) but are the raylets'
    children.
    """
    parents: dict[int, int] = {}
    own: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        if str(temp_dir).encode() in cmdline and pid != os.getpid():
            own.add(pid)
    found = set(own)
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return found


def _stop(temp_dir: Path, grace: float = 10.0) -> list[int]:
    """Stop this cluster's processes: SIGTERM, then SIGKILL after `grace` s; return leftovers."""
    pids = _processes_of(temp_dir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            pids = {pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)}
            if not pids:
                return []
            time.sleep(0.2)
    return sorted(pids)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture
def two_nodes(postgres_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Start a head and a second raylet; yield (GCS address, environment); stop them.

    Depends on `postgres_url` so that a skipped test starts no Ray.
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="ghbot2n-", dir="/tmp"))  # short: socket paths
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    for name in ("RAY_ADDRESS", "RAY_SERVE_ENABLE_HA_PROXY", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    # Token authentication, with a token of this cluster's own, stated for every process:
    # left unset, a head started where ~/.ray/auth_token exists turns it on, and a
    # second `ray start --address` does not follow (Ray 2.60), so it cannot join.
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port = free_port()
    common = ["--num-cpus=1", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    head = ["--head", f"--port={port}", "--include-dashboard=false"]
    starts = [
        [*head, f"--ray-client-server-port={free_port()}"],
        [f"--address=127.0.0.1:{port}"],
    ]
    try:
        for args in starts:
            # Every node its own agent port: the default (52365) would be shared.
            args = [*args, *common, f"--dashboard-agent-listen-port={free_port()}"]
            started = subprocess.run(
                [str(RAY), "start", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=90,
                check=False,
            )
            assert started.returncode == 0, f"ray start {args}:\n{started.stderr[-3000:]}"
        yield f"127.0.0.1:{port}", env
    finally:
        leftovers = _stop(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not leftovers, f"processes of the test's Ray survived SIGKILL: {leftovers}"


def test_two_raylets_share_one_postgres_journal(
    postgres_url: str, two_nodes: tuple[str, dict[str, str]]
) -> None:
    url = postgres_url
    address, env = two_nodes
    schema = f"ghbot_two_nodes_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in url else "?"
    try:
        journal = f"{url}{sep}schema={schema}"
        job = subprocess.run(
            [sys.executable, str(JOB), "--address", address, "--journal-url", journal],
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
    finally:
        _drop_schema(url, schema)
    lines = [line for line in job.stdout.splitlines() if line.startswith("RESULT ")]
    assert job.returncode == 0 and lines, f"the job failed:\n{job.stderr[-4000:]}"
    result = json.loads(lines[-1].removeprefix("RESULT "))
    print("two-node result:", json.dumps(result, indent=1))  # shown on failure, or with -s

    # Two nodes, one shard on each; the deployment's other actors somewhere on them.
    assert len(result["nodes"]) == 2
    assert sorted(result["shard_nodes"]) == sorted(result["nodes"]), result
    assert result["app_auth_node"] in result["nodes"]
    assert result["ingress_nodes"] and set(result["ingress_nodes"]) <= set(result["nodes"])

    # 4 installations x 5 deliveries: each accepted once; each redelivery a duplicate.
    assert result["sent"] == 20
    assert result["statuses"] == {"202": 20, "200": 4}
    assert result["shard_received"] == [10, 10] and result["shard_duplicates"] == [2, 2]
    # The batches crossed from the ingress's node to each shard's over the shards'
    # TCP channels, not as Ray calls.
    assert all(n > 0 for n in result["shard_channel_batches"]), result
    # Handled exactly once: one comment per delivery at the fake, none missing.
    assert result["idle"] == [True, True]
    assert result["missing"] == [] and result["handled_more_than_once"] == []
    assert result["unexpected_comments"] == []
    # Journaled exactly once in PostgreSQL, and completed.
    for installation, journaled in result["journal"].items():
        assert journaled == {
            "received": 5,
            "distinct": 5,
            "completed": 5,
            "guids_match": True,
        }, installation
