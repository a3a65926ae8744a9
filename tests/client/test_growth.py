"""What the client keeps per installation or per answer stays bounded over months.

The token cache drops expired tokens, the ETag cache bounds the bytes it keeps, and
the redelivery sweeper forgets the GUIDs it asked for once GitHub would no longer
redeliver them.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from ghbot.auth import InstallationToken
from ghbot.client import ETagCache, InstallationTokens
from ghbot.client.etag import CachedAnswer
from ghbot.errors import UsageError
from ghbot.redelivery import GITHUB_WINDOW, Failed, RedeliverySweeper
from ghbot.testing import FakeClock


async def test_expired_tokens_are_dropped_though_their_installations_never_return(
    clock: FakeClock,
) -> None:
    async def mint(installation_id: int) -> InstallationToken:
        return InstallationToken(f"ghs_{installation_id}", clock() + 3600, minted_at=clock())

    cache = InstallationTokens(mint, clock=clock)
    for installation_id in range(1, 101):
        await cache.get(installation_id)
    clock.advance(3600)  # every one of them has expired
    await cache.get(1000)
    assert all(cache.cached(i) is None for i in range(1, 101))
    assert cache.cached(1000) is not None
    assert repr(cache) == "InstallationTokens(1 cached, 0 in flight)"


async def test_a_token_is_dropped_only_once_expired(clock: FakeClock) -> None:
    async def mint(installation_id: int) -> InstallationToken:
        return InstallationToken("ghs_ok", clock() + 3600, minted_at=clock())

    cache = InstallationTokens(mint, clock=clock)
    await cache.get(1)
    clock.advance(3599)  # past the refresh margin, not expired: kept until replaced
    await cache.get(2)
    assert cache.cached(1) is not None


def answer(size: int) -> CachedAnswer:
    return CachedAnswer('"etag"', b"x" * size, {})


def test_the_etag_cache_bounds_the_bytes_it_keeps() -> None:
    cache = ETagCache(maxsize=100, max_bytes=1000)
    for n in range(10):
        cache.put(("installation:1", f"https://api/{n}", "json"), answer(300))
    assert len(cache) == 3 and cache.size_bytes == 900
    assert cache.get(("installation:1", "https://api/9", "json")) is not None
    assert cache.get(("installation:1", "https://api/6", "json")) is None  # least recent


def test_the_etag_cache_counts_a_replaced_answer_once_and_skips_a_huge_one() -> None:
    cache = ETagCache(maxsize=100, max_bytes=1000)
    key = ("installation:1", "https://api/a", "json")
    for _ in range(5):
        cache.put(key, answer(400))
    assert len(cache) == 1 and cache.size_bytes == 400
    cache.put(key, answer(1001))  # bigger than the whole budget: the stale one goes too
    assert len(cache) == 0 and cache.size_bytes == 0
    cache.put(key, answer(10))
    cache.clear()
    assert cache.size_bytes == 0
    cache.put(key, answer(1000))  # exactly the budget: kept
    assert len(cache) == 1 and cache.size_bytes == 1000


def test_a_hit_makes_an_answer_the_most_recently_used() -> None:
    cache = ETagCache(maxsize=2)
    first, second, third = (("installation:1", f"https://api/{n}", "json") for n in range(3))
    cache.put(first, answer(1))
    cache.put(second, answer(1))
    assert cache.get(first) is not None
    cache.put(third, answer(1))  # evicts the least recently used: `second`, not `first`
    assert cache.get(second) is None and cache.get(first) is not None


@pytest.mark.parametrize(("maxsize", "max_bytes"), [(0, 1), (1, 0)])
def test_an_etag_cache_holds_at_least_one_answer_and_byte(maxsize: int, max_bytes: int) -> None:
    with pytest.raises(UsageError, match="at least 1"):
        ETagCache(maxsize, max_bytes=max_bytes)


class _App:
    """The two calls the sweeper makes, over a list of failed attempts."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.failing: list[dict[str, Any]] = []

    def fail(self, guid: str) -> None:
        """Log a failed attempt of `guid` now (the listing is newest first)."""
        attempt = {
            "id": len(self.failing) + 1,
            "guid": guid,
            "delivered_at": datetime.fromtimestamp(self.clock(), tz=UTC).isoformat(),
            "status": "Invalid HTTP Response: 503",
        }
        self.failing.insert(0, attempt)

    async def hook_delivery_pages(
        self, per_page: int = 100, resume: str | None = None
    ) -> AsyncIterator[tuple[list[dict[str, Any]], str | None]]:
        yield list(self.failing), None

    async def redeliver(self, attempt_id: int) -> None:
        return None


async def _nothing_held(failed: list[Failed]) -> set[str]:
    return set()


async def test_the_sweeper_forgets_what_it_asked_for_once_github_would_not_redeliver(
    clock: FakeClock,
) -> None:
    app = _App(clock)
    sweeper = RedeliverySweeper(app, _nothing_held, clock=clock)
    for n in range(50):
        app.fail(f"g{n}")
    assert len((await sweeper.sweep()).redelivered) == 50
    assert sweeper.stats()["remembered"] == 50
    app.failing.clear()
    clock.advance(GITHUB_WINDOW + 1)
    await sweeper.sweep()
    assert sweeper.stats()["remembered"] == 0


def test_an_etag_cache_shared_by_threads_keeps_its_count_of_bytes() -> None:
    """`ETagCache`: clients on several threads (one loop each) may share one cache. Four
    threads store and read overlapping keys at once, with the interpreter switching
    threads often; the bytes counted stay those of the bodies kept, within bounds."""
    cache = ETagCache(maxsize=50, max_bytes=4_000)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for n in range(5_000):
                key = ("GET", f"/repos/o/r/issues/{(n * seed) % 80}", "installation:1")
                if cache.get(key) is None:
                    cache.put(key, CachedAnswer(f'"{n}"', b"x" * (1 + (n * 7 + seed) % 200), {}))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(seed,)) for seed in (1, 3, 7, 11)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(before)
    assert errors == []
    kept = list(cache._entries.values())
    assert cache.size_bytes == sum(len(answer.body) for answer in kept)
    assert cache.size_bytes <= 4_000 and len(kept) <= 50
