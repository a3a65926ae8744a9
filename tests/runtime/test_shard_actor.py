"""The shard actor's start and its `ready` answer, in-process without Ray.

The actor is made off the event loop (as Ray makes it before its loop runs its calls),
so it starts nothing by itself; its process set-up is skipped. `tests/cluster`
deploys the real one (`test_readiness.py`: a journal gone under it).
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

import actors.ray.shard_actor as shard_actor_module
from actors.ray.shard_actor import ShardActor
from actors.settings import RuntimeSettings
from actors.shard import ShardCore
from ghbot.config import Settings
from ghbot.errors import ConfigError, JournalUnavailable, UsageError


async def shard_actor() -> ShardActor:
    settings = Settings(app_id=1, private_key=None, webhook_secrets=())
    runtime_settings = RuntimeSettings(bot="examples.greeter:Greeter", settings=settings)
    return await asyncio.to_thread(ShardActor, 0, runtime_settings.for_shards())


async def test_a_start_that_failed_is_tried_again_by_the_next_call(bare_process: None) -> None:
    """The journal down when the shard started: the next delivery's call starts it."""
    actor = await shard_actor()
    core: Any = SimpleNamespace(draining=False)
    tries: list[int] = []

    async def start() -> Any:
        tries.append(len(tries))
        if len(tries) == 1:
            raise JournalUnavailable("postgresql: connection refused")
        return core

    actor._start = start  # type: ignore[method-assign]
    with pytest.raises(JournalUnavailable):
        await actor._ready()
    assert await actor._ready() is core
    assert await actor._ready() is core  # started: not again
    assert tries == [0, 1]


async def test_a_start_that_failed_is_tried_again_by_itself(bare_process: None) -> None:
    """Ray restarted the shard while the journal was down: once it is back, the shard
    starts without any call reaching it (its pending deliveries and schedules resumed
    only when some call did, and `/readyz` said "starting" until then)."""
    actor = await shard_actor()

    async def check_journal() -> str | None:
        return None

    core: Any = SimpleNamespace(draining=False, check_journal=check_journal)
    tries: list[int] = []

    async def start() -> Any:
        tries.append(len(tries))
        if len(tries) < 3:
            raise JournalUnavailable("postgresql: connection refused")
        return core

    actor._start = start  # type: ignore[method-assign]
    actor._start_soon()  # as __init__ does on Ray's event loop
    for _ in range(60):  # backoffs of 0.5-1 s, then 1-2 s
        await asyncio.sleep(0.1)
        starting = actor._starting
        if starting is not None and starting.done() and not starting.exception():
            break
    assert tries == [0, 1, 2]
    assert await actor.ready() == {"index": 0, "ready": True, "why": None}


async def test_a_start_refused_for_its_settings_is_not_tried_again(bare_process: None) -> None:
    actor = await shard_actor()
    tries: list[int] = []

    async def start() -> Any:
        tries.append(len(tries))
        raise UsageError("the journal was made with 8 virtual shards, not 64")

    actor._start = start  # type: ignore[method-assign]
    actor._start_soon()
    await asyncio.sleep(1.5)
    assert tries == [0]


@pytest.mark.parametrize("fails", ["taking its epochs", "loading the bot"])
async def test_a_start_that_failed_closes_the_journal_it_opened(
    bare_process: None, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    """Each failed start left a journal (a PostgreSQL pool) open: with a bot that does
    not import, every call that reached the shard opened one more."""
    actor = await shard_actor()
    closed: list[bool] = []

    class Journal:
        async def close(self) -> None:
            closed.append(True)

    async def open_journal(url: str, shard_count: int) -> Any:
        return Journal()

    async def refused(self: ShardCore) -> None:
        raise JournalUnavailable("postgresql: connection refused")

    def unloadable(path: str) -> Any:
        raise ConfigError(f"{path}: no module named 'mybot'")

    monkeypatch.setattr(shard_actor_module, "open_journal", open_journal)
    if fails == "taking its epochs":
        monkeypatch.setattr(ShardCore, "open", refused)
    else:
        monkeypatch.setattr(shard_actor_module, "load_bot", unloadable)
    with pytest.raises((JournalUnavailable, ConfigError)):
        await actor._start()
    assert closed == [True]


async def test_a_deployments_shard_is_built_to_log_a_handlers_failure_without_traceback(
    bare_process: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tracebacks are for `ghbot dev` and the harness: a handler's message may hold
    payload data, and a deployment logs the error's type alone."""
    actor = await shard_actor()
    built: dict[str, Any] = {}

    class Recording(ShardCore):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.update(kwargs)
            super().__init__(*args, **kwargs)

        async def open(self) -> None:
            raise JournalUnavailable("built: no need to go on")

    class Journal:
        async def close(self) -> None:
            pass

    async def open_journal(url: str, shard_count: int) -> Any:
        return Journal()

    monkeypatch.setattr(shard_actor_module, "open_journal", open_journal)
    monkeypatch.setattr(shard_actor_module, "ShardCore", Recording)
    with pytest.raises(JournalUnavailable):
        await actor._start()
    assert built and not built.get("tracebacks", False)


async def test_ready_says_starting_until_started_and_why_it_cannot_start(
    bare_process: None,
) -> None:
    actor = await shard_actor()
    actor.created_at -= 3.0  # made 3 s ago: `/readyz` bounds how long a start may take
    starting = {"index": 0, "ready": False, "why": "starting", "for": pytest.approx(3.0, abs=0.5)}
    assert await actor.ready() == starting
    gate = asyncio.Event()

    async def start() -> Any:
        await gate.wait()
        raise UsageError("the journal was made with 8 virtual shards, not 64")

    actor._starting = asyncio.get_running_loop().create_task(start())
    answer = await actor.ready()
    assert answer["why"] == "starting" and not answer["ready"]
    gate.set()
    with pytest.raises(UsageError):
        await actor._starting
    assert await actor.ready() == {
        "index": 0,
        "ready": False,
        "why": "cannot start: the journal was made with 8 virtual shards, not 64",
    }


async def test_ready_says_a_start_failed_while_it_tries_again(bare_process: None) -> None:
    """Not "starting": `/readyz` counts a shard starting within the hold as ready, and
    one whose start failed (the journal down) is not."""
    actor = await shard_actor()

    async def start() -> Any:
        raise JournalUnavailable("postgresql: connection refused")

    actor._start = start  # type: ignore[method-assign]
    actor._start_soon()
    with pytest.raises(JournalUnavailable):
        await asyncio.shield(actor._starting)  # type: ignore[arg-type]
    failed = {"index": 0, "ready": False, "why": "could not start; trying again"}
    assert await actor.ready() == failed
    actor._start_soon()  # the retry, under way: still a failed start
    assert await actor.ready() == failed
    assert actor._starting is not None
    with pytest.raises(JournalUnavailable):
        await actor._starting


async def test_ready_says_draining_before_asking_the_journal(bare_process: None) -> None:
    actor = await shard_actor()

    async def check_journal() -> str | None:
        return None

    since = time.monotonic() - 2.0  # draining for 2 s: `/readyz` bounds how long
    core: Any = SimpleNamespace(draining=True, draining_since=since, check_journal=check_journal)
    actor._core = core
    draining = {"index": 0, "ready": False, "why": "draining", "for": pytest.approx(2.0, abs=0.5)}
    assert await actor.ready() == draining
    core.draining = False
    assert await actor.ready() == {"index": 0, "ready": True, "why": None}
