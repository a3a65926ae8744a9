"""The SQLite journal's disk fills up mid-stream, then has room again.

The journal's directory is a small tmpfs of its own. Under a steady stream of
deliveries, a filler file takes every free byte: appends must then fail with
`JournalUnavailable` (the ingress's 503), never acknowledge, never wedge. The filler is
removed; the stream must go on, the deliveries answered 503 are sent again (GitHub's
redelivery), and the history must hold (`tests.history`).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.faults.support import run_shard, seconds, settle, stream
from tests.history import History, Sender

pytestmark = pytest.mark.faults

FULL_FOR = seconds(3, 20)
STEADY = seconds(1.5, 10)


def fill(directory: Path) -> Path:
    """Write a file into `directory` until its file system has no byte left."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (65536, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


async def test_sqlite_disk_full_then_room_again(small_tmpfs: Path, history: History) -> None:
    shard, journal = await run_shard(f"sqlite://{small_tmpfs}/journal")
    sender = Sender(shard, history)
    try:
        before, _ = await stream(sender, time.monotonic() + STEADY)
        assert await shard.check_journal() is None  # what /readyz asks each shard
        filler = await asyncio.to_thread(fill, small_tmpfs)
        assert os.statvfs(small_tmpfs).f_bavail == 0
        # Appends fail once the WAL has to grow: within a moment of a steady stream.
        during, failed = await stream(sender, time.monotonic() + FULL_FOR)
        # Reads still answer, but /readyz says not ready: the last appends failed.
        why_not_ready = await shard.check_journal()
        room = filler.stat().st_size
        filler.unlink()
        after, _ = await stream(sender, time.monotonic() + STEADY)
        ready_again = await shard.check_journal()
        figures = await settle(shard, sender, history, journal)
    finally:
        await shard.close()
        await journal.close()
    print(f"\ndisk full {FULL_FOR:g} s: batches {before}/{during} ({failed} 503)/{after}", figures)
    print(f"why: {dict(sender.errors)}; the filler took {room >> 20} MiB")
    assert failed > 0, "no append failed while the disk was full"
    assert why_not_ready == "the journal's last appends failed: JournalUnavailable"
    assert ready_again is None
    assert figures["answered unavailable"] >= failed
    assert figures["acknowledged"] == figures["sent"]
