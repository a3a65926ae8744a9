"""Installation tokens, cached for their life with one refresh in flight per installation.

A token lives one hour; it is refreshed `margin` seconds (5 min) before it expires and
never kept longer than `ttl` (TOKEN_CACHE_TTL, 55 min by default), unless that refresh
fails: the cached token is then used while it is valid, with a WARNING. Concurrent
callers for the same installation share one exchange. Expired tokens are dropped (a pass
every few minutes), so the cache holds the installations of the last hour or so, not
every installation ever seen. In the Ray runtime the app-auth actor,
the only holder of the private key, plays the `TokenSource` part instead.
https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from ghbot import metrics, telemetry
from ghbot.auth import TOKEN_REFRESH_MARGIN, InstallationToken
from ghbot.client.watch import call_watcher
from ghbot.logs import LogLimiter
from ghbot.telemetry import CACHE_HIT, INSTALLATION_ID, TOKEN_TYPE

log = logging.getLogger("ghbot.client.tokens")

__all__ = ["InstallationTokens", "Mint"]

#: A cached token is still handed out when its refresh fails while it has more than
#: this many seconds left (time for the request that takes it to reach GitHub).
STALE_SPARE = 10.0
#: After such a failed refresh, the cached token is handed out this long without
#: asking for a new one: one exchange tried per installation every 5 s, not one per
#: request.
KEPT_FOR = 5.0
#: The WARNINGs of tokens kept after failed refreshes: a few a minute, not one a request.
_KEPT_LOGGED = LogLimiter(burst=5, per=60.0)

#: Exchange an installation id for a new token (e.g. `GitHubApp.create_installation_token`).
Mint = Callable[[int], Awaitable[InstallationToken]]


class InstallationTokens:
    """A `TokenSource` over `mint`: an LRU of `maxsize` tokens, single-flight refresh.

    Tokens past their expiry are dropped within `margin` seconds (at least a minute)
    of it, whether or not their installation comes back.

    `get(id, force=True)` is what a client calls after a 401: it mints anew unless the
    cached token is under `fresh_window` seconds old (a 401 then is propagation, and a
    new token would not help). The client takes a 401 within 5 s of minting for
    propagation and does not force; a `fresh_window` longer than that hands a client
    that forces the token it was refused with, once, and its 401 is then final. A
    forced refresh drops the refused token at once: callers that come while the
    exchange runs wait for the new token instead of being handed the refused one.

    A failed exchange caches nothing and raises to every waiter, except that a
    refresh made before expiry (inside the margin, or past `ttl`) that fails leaves
    the cached token in use while it has over `STALE_SPARE` (10) seconds left,
    logged at WARNING (a few a minute): the exchange is tried again by the first
    `get` `KEPT_FOR` (5) seconds later.
    """

    __slots__ = (
        "_clock",
        "_inflight",
        "_kept_until",
        "_mint",
        "_next_sweep",
        "_tokens",
        "fresh_window",
        "margin",
        "maxsize",
        "minted",
        "ttl",
    )

    def __init__(
        self,
        mint: Mint,
        *,
        ttl: float = 3300.0,
        margin: float = TOKEN_REFRESH_MARGIN,
        maxsize: int = 15_000,
        fresh_window: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._mint = mint
        self.ttl = ttl
        self.margin = margin
        self.maxsize = maxsize
        self.fresh_window = fresh_window
        self._clock = clock
        self._tokens: OrderedDict[int, InstallationToken] = OrderedDict()
        self._inflight: dict[int, asyncio.Task[InstallationToken]] = {}
        #: Installations whose refresh failed with a valid token cached: until when that
        #: token is handed out without asking again (`KEPT_FOR`).
        self._kept_until: dict[int, float] = {}
        self._next_sweep = 0.0
        #: How many exchanges this cache made (for metrics and tests).
        self.minted = 0

    def __repr__(self) -> str:
        return f"InstallationTokens({len(self._tokens)} cached, {len(self._inflight)} in flight)"

    async def get(self, installation_id: int, *, force: bool = False) -> InstallationToken:
        """Return a usable token for `installation_id`, exchanging one when needed."""
        with telemetry.span("GitHub installation token") as span:
            token, hit = await self._get(installation_id, force)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "installation token cache %s",
                    "hit" if hit else "miss",
                    extra={"installation_id": installation_id},
                )
            if span.is_recording():
                span.set_attribute(TOKEN_TYPE, "installation_token")
                span.set_attribute(CACHE_HIT, hit)
                span.set_attribute(INSTALLATION_ID, installation_id)
            return token

    async def _get(self, installation_id: int, force: bool) -> tuple[InstallationToken, bool]:
        """Return the token and whether it came from the cache."""
        now = self._clock()
        if now >= self._next_sweep:
            self._drop_expired(now)
        token = self._tokens.get(installation_id)
        if token is not None:
            kept = not force and now < self._kept_until.get(installation_id, 0.0)
            if kept and now < token.expires_at - STALE_SPARE:
                metrics.token_cache_lookups.add(1, metrics.CACHE_HIT)
                return token, True  # its refresh failed a moment ago: not asked again yet
            if not force and self._usable(token, now):
                self._tokens.move_to_end(installation_id)
                metrics.token_cache_lookups.add(1, metrics.CACHE_HIT)
                return token, True
            if force and token.is_fresh(now, self.fresh_window):
                metrics.token_cache_lookups.add(1, metrics.CACHE_HIT)
                return token, True
        metrics.token_cache_lookups.add(1, metrics.CACHE_MISS)
        if force and token is not None:
            # GitHub refused it: handed out no more, so the callers that come while the
            # exchange runs wait for its token instead of drawing a 401 each.
            del self._tokens[installation_id]
        task = self._inflight.get(installation_id)
        if task is None:
            if token is not None:
                # Replacing a cached token: before it expires, or after GitHub refused it.
                metrics.token_refreshes.add(1, metrics.REACTIVE if force else metrics.PROACTIVE)
            task = asyncio.ensure_future(self._exchange(installation_id))
            self._inflight[installation_id] = task
        try:
            # A waiter cancelled while it waits must not cancel the exchange for the others.
            return await asyncio.shield(task), False
        except Exception as exc:
            if force or token is None or self._tokens.get(installation_id) is not token:
                raise  # refused, none, or dropped meanwhile (refused by another caller)
            now = self._clock()
            if now >= token.expires_at - STALE_SPARE:
                raise
            self._kept_until[installation_id] = now + KEPT_FOR
            if (held := _KEPT_LOGGED.allow("kept")) is not None:
                log.warning(
                    "installation %d: no new token yet (%s); the cached one is used until "
                    "it expires, a new one asked for every %g s%s",
                    installation_id,
                    type(exc).__name__,
                    KEPT_FOR,
                    f" ({held} such lines held back)" if held else "",
                    extra={"installation_id": installation_id},
                )
            return token, True

    def invalidate(self, installation_id: int) -> None:
        """Forget the cached token of `installation_id` (e.g. the app was uninstalled)."""
        self._tokens.pop(installation_id, None)
        self._kept_until.pop(installation_id, None)

    def cached(self, installation_id: int) -> InstallationToken | None:
        """Return the cached token without refreshing it (None when there is none)."""
        return self._tokens.get(installation_id)

    def _drop_expired(self, now: float) -> None:
        """Forget every expired token; the next look is `margin` (at least 60) s away.

        One pass over the cache every few minutes, not an LRU's eviction: an
        installation that stopped sending deliveries leaves no token behind.
        """
        self._next_sweep = now + max(self.margin, 60.0)
        expired = [i for i, token in self._tokens.items() if now >= token.expires_at]
        for installation_id in expired:
            del self._tokens[installation_id]
            self._kept_until.pop(installation_id, None)

    def _usable(self, token: InstallationToken, now: float) -> bool:
        if token.needs_refresh(now, self.margin):
            return False
        return token.minted_at is None or now < token.minted_at + self.ttl

    async def _exchange(self, installation_id: int) -> InstallationToken:
        call_watcher.set(None)  # its own task's context: the exchange is not the caller's call
        try:
            token = await self._mint(installation_id)
            self.minted += 1
            self._kept_until.pop(installation_id, None)
            self._tokens[installation_id] = token
            self._tokens.move_to_end(installation_id)
            while len(self._tokens) > self.maxsize:
                self._tokens.popitem(last=False)
            return token
        finally:
            del self._inflight[installation_id]
