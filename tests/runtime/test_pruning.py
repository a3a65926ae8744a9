"""The shard forgets delivery GUIDs past the deduplication window, by itself.

Only deduplication ends: the events stay, so a restarted shard, a dead letter's
replay and a redelivery inside the window behave as before the prune.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from actors.bot import InstallationActor, on
from actors.ray.deploy import build_settings
from actors.runtime_events import stream_name
from actors.shard import ShardCore
from actors.shard_hosts import DEDUP_WINDOW
from ghbot.errors import ConfigError, JournalUnavailable
from ghbot.events import Event
from ghbot.journal import FaultyJournal, Journal
from ghbot.retry import RetryPolicy
from tests.runtime.conftest import INSTALLATION, VSHARDS, batch, inbound, payload, shard_of

DAY = 24 * 3600.0


async def _no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


class Doomed(InstallationActor):
    """Every handler run fails: each delivery ends dead-lettered."""

    @on("issues.opened")
    async def opened(self, event: Event) -> None:
        raise RuntimeError("GitHub was down")


def later(seconds: float) -> Any:
    """A shard clock `seconds` ahead of the journal's (which stamps with time.time)."""
    return lambda: time.time() + seconds


_started: list[ShardCore] = []


def core(journal: Journal, **kwargs: Any) -> ShardCore:
    kwargs.setdefault("sleep", _no_sleep)
    kwargs.setdefault("retry", RetryPolicy(base=0.0, cap=0.0))
    kwargs.setdefault("prune_after", 3600.0)  # only the tests of the loop start it early
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Doomed, **kwargs)
    _started.append(shard)
    return shard


@pytest.fixture(autouse=True)
async def _close_shards(journal: Journal) -> Any:  # closed before the journal is
    yield
    while _started:
        await _started.pop().close()


class Watched(FaultyJournal):
    """Tells when a prune dropped GUIDs, after failing the first `failures` prunes."""

    def __init__(self, inner: Journal, failures: int = 0) -> None:
        super().__init__(inner)
        self.failures = failures
        self.pruned = asyncio.Event()

    async def prune_deliveries(self, *args: Any, **kwargs: Any) -> int:
        if self.failures:
            self.failures -= 1
            raise JournalUnavailable("injected prune failure")
        dropped = await super().prune_deliveries(*args, **kwargs)
        if dropped:
            self.pruned.set()
        return dropped


async def held(journal: Journal, guid: str) -> set[str]:
    return await journal.delivered(stream_name(INSTALLATION), [guid], shard=shard_of(INSTALLATION))


async def test_a_started_shard_prunes_guids_past_the_window_by_itself(journal: Journal) -> None:
    first = core(journal, prune_after=3600.0)
    await first.start()
    item = inbound(Doomed, "issues", payload("issues.opened"), delivery_id="old")
    assert await first.ingest(batch(item)) == ["accepted"]
    await first.wait_idle()
    await first.close()
    assert await held(journal, "old") == {"old"}

    # Four days on, a restarted shard forgets the GUID without being asked to.
    watched = Watched(journal)
    shard = core(watched, clock=later(4 * DAY), prune_after=0.0)
    await shard.start()
    await asyncio.wait_for(watched.pruned.wait(), 10)
    assert shard.counters["pruned"] == 1
    assert await held(journal, "old") == set()
    records = await journal.read(stream_name(INSTALLATION), shard=shard_of(INSTALLATION))
    assert "DeliveryReceived" in [r.type for r in records]  # the events stay
    # What the docs warn of: past the window, a redelivery is journaled again.
    assert await shard.ingest(batch(item)) == ["accepted"]
    await shard.close()


async def test_a_redelivery_within_the_window_is_still_a_duplicate(journal: Journal) -> None:
    shard = core(journal, clock=later(DEDUP_WINDOW - 600))
    await shard.start()
    item = inbound(Doomed, "issues", payload("issues.opened"), delivery_id="recent")
    await shard.ingest(batch(item))
    assert await shard.prune() == 0
    assert await shard.ingest(batch(item)) == ["duplicate"]


async def test_pruning_keeps_what_dead_letters_and_restarts_need(journal: Journal) -> None:
    shard = core(journal, clock=later(4 * DAY))
    await shard.start()
    item = inbound(Doomed, "issues", payload("issues.opened"), delivery_id="doomed")
    await shard.ingest(batch(item))
    await shard.wait_idle()
    assert await shard.prune() == 1
    await shard.close()

    restarted = core(journal, clock=later(4 * DAY))
    await restarted.start()
    dead = await restarted.dead_letters()
    assert [(d["delivery_id"], d["handler"]) for d in dead] == [("doomed", "opened")]
    assert await restarted.replay(INSTALLATION, "doomed", None) == 1
    await restarted.wait_idle()
    assert len(await restarted.dead_letters()) == 1  # failed again, dead-lettered again


async def test_a_failed_prune_is_logged_and_tried_again(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Watched(journal, failures=1)
    first = core(flaky)
    await first.start()
    await first.ingest(batch(inbound(Doomed, "issues", payload("issues.opened"))))
    await first.wait_idle()
    await first.close()

    shard = core(flaky, clock=later(4 * DAY), prune_after=0.0, prune_every=0.01)
    await shard.start()
    await asyncio.wait_for(flaky.pruned.wait(), 10)
    assert shard.counters["pruned"] == 1
    assert "pruning delivery GUIDs failed (journal_unavailable)" in caplog.text
    # Deliveries kept coming in meanwhile.
    more = inbound(Doomed, "issues", payload("issues.opened"))
    assert await shard.ingest(batch(more)) == ["accepted"]


def _env(pem: bytes, **more: str) -> dict[str, str]:
    return {
        "GITHUB_APP_ID": "1",
        "GITHUB_PRIVATE_KEY": pem.decode(),
        "GITHUB_WEBHOOK_SECRET": "topsecret",
        "GITHUB_API_URL": "http://127.0.0.1:9",
        **more,
    }


def test_the_window_is_githubs_three_days_or_ghess_seven_unless_set(pem_pkcs8: bytes) -> None:
    bot = {"bot": "examples.greeter:Greeter"}
    github = _env(pem_pkcs8, GITHUB_API_URL="https://api.github.com")
    assert build_settings(bot, github).dedup_window == 3 * DAY
    # Any other API is taken for GitHub Enterprise Server, which keeps deliveries a
    # week: a GUID forgotten after 3 days could be redelivered from there and run twice.
    ghes = _env(pem_pkcs8, GITHUB_API_URL="https://github.example.com/api/v3")
    assert build_settings(bot, ghes).dedup_window == 7 * DAY
    assert build_settings(bot, _env(pem_pkcs8)).dedup_window == 7 * DAY  # the fake's
    set_to = _env(pem_pkcs8, GITHUB_API_URL="https://api.github.com", GHBOT_DEDUP_WINDOW="90000")
    assert build_settings(bot, set_to).dedup_window == 90000
    with pytest.raises(ConfigError, match="dedup_window='60'"):
        build_settings({**bot, "dedup_window": "60"}, _env(pem_pkcs8))
    # At least 21600 s (the README): the floor itself is taken.
    assert build_settings({**bot, "dedup_window": "21600"}, _env(pem_pkcs8)).dedup_window == 21600
    with pytest.raises(ConfigError, match="dedup_window='21599'"):
        build_settings({**bot, "dedup_window": "21599"}, _env(pem_pkcs8))


async def test_by_default_a_shard_prunes_a_minute_after_it_starts_then_hourly(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/architecture.md: "a minute after it starts and hourly after that"."""
    loops: dict[str, tuple[float, float]] = {}

    async def recorded(
        self: ShardCore, job: Any, first: float, every: float, *, operation: str, what: str
    ) -> None:
        loops[operation] = (first, every)

    monkeypatch.setattr(ShardCore, "_forever", recorded)
    shard = ShardCore(range(VSHARDS), VSHARDS, journal, Doomed, sleep=_no_sleep)
    _started.append(shard)
    await shard.start()
    await asyncio.sleep(0)  # the loop's task has begun
    assert loops["prune"] == (60.0, 3600.0)
