"""Fixtures of the fault suites (docs/reliability.md): a fresh `History` recorded by
`Effects`, a private PostgreSQL server, and a small tmpfs to fill.

Without PostgreSQL's binaries the PostgreSQL suite skips, and says why, unless
``GHBOT_REQUIRE_POSTGRES=1`` (then it fails); without the right to mount a tmpfs the
disk-full suite skips.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.faults.support import FULL, Effects, PrivatePostgres, skip_or_fail
from tests.history import History
from tests.net import free_port


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "faults: a fault suite of docs/reliability.md (reduced form; GHBOT_FAULTS_FULL=1: full)",
    )


@pytest.fixture
def history() -> Iterator[History]:
    """A fresh history, the one `Effects` records its effects in."""
    Effects.history = History()
    yield Effects.history


@pytest.fixture
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    """A fresh PostgreSQL server for one test, stopped and removed afterwards."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    found = [Path(b) for b in bins if (Path(b) / "pg_ctl").exists()]
    if not found:
        skip_or_fail("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    as_user = None
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            skip_or_fail("running as root (initdb refuses root) and runuser is missing")
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            skip_or_fail("running as root (initdb refuses root) and no `postgres` user")
        as_user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="ghbot-pg-", dir="/tmp"))  # a short socket path
    if as_user:
        os.chown(root, pwd.getpwnam(as_user).pw_uid, -1)
    server = PrivatePostgres(found[-1], root, free_port(), as_user)
    try:
        await asyncio.to_thread(server.init)
        await asyncio.to_thread(server.start)
        yield server
    finally:
        await asyncio.to_thread(server.cleanup)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs mounted at a temporary directory, unmounted afterwards.

    64 MiB, 256 MiB for the full run (whose stream writes more before the disk fills:
    the filler must leave room when it goes).
    """
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small file system to fill")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={256 if FULL else 64}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
