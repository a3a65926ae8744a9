"""Stopping a shard on SIGTERM, without Ray: `ShardCore.shut_down` and `ExitAfter`.

`shut_down` refuses new deliveries, lets the ones taken finish (up to a timeout), and
closes the journal; `ExitAfter` runs it before Ray's SIGTERM handler exits the process.
The whole path on a real Ray is in tests/cluster/test_sigterm.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

from actors.bot import InstallationActor, on
from actors.ray.sigterm import RAY_EXIT, ExitAfter
from actors.runtime_events import decode_runtime, stream_name
from actors.shard import ShardCore
from ghbot.events import Event
from ghbot.journal import Journal, open_journal
from tests.runtime.conftest import VSHARDS, batch, inbound, payload, shard_of, until


class Gated(InstallationActor):
    """Each handler waits for `gate`, then notes its delivery."""

    gate: asyncio.Event = asyncio.Event()
    ran: list[str] = []

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        await type(self).gate.wait()
        type(self).ran.append(event.delivery_id or "")


def _delivery(guid: str, number: int) -> Any:
    return inbound(
        Gated, "issues", payload("issues.opened", issue__number=number), delivery_id=guid
    )


async def _completed(journal: Journal) -> list[str]:
    records = await journal.read(stream_name(234), shard=shard_of())
    return [
        getattr(decode_runtime(r.type, r.data), "delivery_id", "")
        for r in records
        if r.type == "DeliveryCompleted"
    ]


async def test_shut_down_refuses_new_deliveries_and_finishes_those_taken(tmp_path: Any) -> None:
    Gated.gate, Gated.ran = asyncio.Event(), []
    url = f"sqlite://{tmp_path}/journal"
    shard = ShardCore(range(VSHARDS), VSHARDS, await open_journal(url, shard_count=VSHARDS), Gated)
    await shard.start()
    taken = [_delivery(f"d{n}", n) for n in range(3)]
    assert await shard.ingest(batch(*taken)) == ["accepted"] * 3

    stopping = asyncio.create_task(shard.shut_down(5.0))
    await asyncio.sleep(0.05)
    assert await shard.ingest(batch(_delivery("late", 9))) == ["draining"]  # not taken
    assert not stopping.done()  # the handlers it took are still running
    Gated.gate.set()
    assert await stopping is True
    assert sorted(Gated.ran) == ["d0", "d1", "d2"]

    journal = await open_journal(url, shard_count=VSHARDS)
    try:
        assert sorted(await _completed(journal)) == ["d0", "d1", "d2"]  # nothing to resume
    finally:
        await journal.close()


async def test_what_shut_down_did_not_finish_in_time_the_next_shard_runs(tmp_path: Any) -> None:
    Gated.gate, Gated.ran = asyncio.Event(), []
    url = f"sqlite://{tmp_path}/journal"
    first = ShardCore(range(VSHARDS), VSHARDS, await open_journal(url, shard_count=VSHARDS), Gated)
    await first.start()
    assert await first.ingest(batch(_delivery("stuck", 1))) == ["accepted"]
    assert await first.shut_down(0.1) is False  # the handler never got through
    assert Gated.ran == []

    Gated.gate.set()
    journal = await open_journal(url, shard_count=VSHARDS)
    second = ShardCore(range(VSHARDS), VSHARDS, journal, Gated)
    try:
        assert await second.start() == 1
        await second.wait_idle()
        assert Gated.ran == ["stuck"] and await _completed(journal) == ["stuck"]
    finally:
        await second.close()
        await journal.close()


# A stand-in for Ray's SIGTERM handler (`Worker.main_loop`): it calls `RAY_EXIT`, looked
# up among its module's globals, as Ray's does.
EXITS: list[str] = []


def raise_sys_exit_with_custom_error_message(message: str, exit_code: int = 0) -> None:
    EXITS.append(message)


def ray_like_handler(signum: int, frame: FrameType | None) -> None:
    raise_sys_exit_with_custom_error_message("The process receives a SIGTERM.", exit_code=1)


@pytest.fixture
def ray_like_sigterm() -> Iterator[None]:
    EXITS.clear()
    previous = signal.signal(signal.SIGTERM, ray_like_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        globals()[RAY_EXIT] = raise_sys_exit_with_custom_error_message


async def test_sigterm_runs_the_coroutine_then_exits_as_ray_would(ray_like_sigterm: None) -> None:
    steps: list[str] = []
    release = asyncio.Event()

    async def before_exit() -> None:
        steps.append("draining")
        await release.wait()
        steps.append("drained")

    exit_after = ExitAfter(asyncio.get_running_loop(), before_exit)
    assert exit_after.install()
    os.kill(os.getpid(), signal.SIGTERM)
    await until(lambda: steps == ["draining"], within=5.0)
    os.kill(os.getpid(), signal.SIGTERM)  # again while stopping: still no exit
    await asyncio.sleep(0.05)
    assert EXITS == [] and exit_after.state == "stopping"
    release.set()
    # Once through, the process sends itself SIGTERM, and Ray's exit runs.
    await until(lambda: EXITS == ["The process receives a SIGTERM."], within=5.0)
    assert steps == ["draining", "drained"] and exit_after.state == "done"


async def test_a_handler_that_is_not_rays_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    def other(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(1)

    async def nothing() -> None:
        return None

    previous = signal.signal(signal.SIGTERM, other)
    try:
        exit_after = ExitAfter(asyncio.get_running_loop(), nothing)
        assert exit_after.install() is False
        assert signal.getsignal(signal.SIGTERM) is other
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "SIGTERM will stop this process at once" in caplog.text
