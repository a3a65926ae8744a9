"""The async GitHub client: one cheap object per installation over a shared pool.

https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

import aiohttp
import msgspec
from multidict import CIMultiDict
from opentelemetry.trace import SpanKind
from yarl import URL

from ghbot import metrics, telemetry
from ghbot.auth import AppAuth
from ghbot.breaker import CircuitBreaker
from ghbot.client.call import (
    REDIRECTS,
    Call,
    api_origins,
    build_url,
    is_mutation,
    origin,
    resource_of,
)
from ghbot.client.credentials import AuthRetry, Credentials, TokenSource, credentials_for
from ghbot.client.options import DEFAULT_OPTIONS, Budgets, ClientOptions
from ghbot.client.pool import current_pool
from ghbot.client.response import (
    Response,
    answer_for,
    error_from,
    graphql_error,
    graphql_limited,
    items_of,
)
from ghbot.client.watch import CallWatcher, call_watcher
from ghbot.config import Settings, graphql_url
from ghbot.digits import whole_number
from ghbot.errors import (
    CircuitOpen,
    ConnectionFailed,
    Forbidden,
    GitHubError,
    InstallationUnavailable,
    LeaseExhausted,
    NotFound,
    RateLimited,
    ServerError,
    Timeout,
    TransportError,
    Unauthorized,
    UsageError,
)
from ghbot.logs import LogLimiter
from ghbot.ratelimit import Budget, Lease, RateLimit, holding_lease, limits_off
from ghbot.telemetry import API_ENDPOINT, API_METHOD, RATE_LIMIT_REMAINING, STATUS_CODE

if TYPE_CHECKING:
    from ghbot.rest import Rest

__all__ = ["CallWatcher", "GitHub", "Holds", "call_watcher"]

#: An answer a retry does not change (the fake GitHub's for what it does not implement).
NOT_IMPLEMENTED = 501

log = logging.getLogger("ghbot.client")
#: The WARNINGs of requests the client refused itself (`_log_refused`): a few a minute.
_REFUSED_LOGGED = LogLimiter(burst=5, per=60.0)


_encode = msgspec.json.encode

Answer = tuple[int, Mapping[str, str], bytes]

#: GitHub's secondary limits on an installation's content-creating requests (its
#: POSTs, GraphQL mutations included): at most this many in this many seconds.
CONTENT_LIMITS = ((80, 60.0), (500, 3600.0))


class _Paused(Exception):
    """A request about to go found its installation paused: admit it again."""


class _Refused(Exception):
    """The client's own count of a budget refused a request (`error`, raised to the
    caller unless `_send_retrying` waits it out): never sent."""

    def __init__(self, error: RateLimited, budget: Budget) -> None:
        super().__init__(error.message)
        self.error, self.budget = error, budget


def _unturn(lease: Lease | None) -> None:
    """Give back the write `_go` took of `lease` for a request that did not go. (The
    turn its lane granted is not given back: the lane counts one write more than went,
    on the safe side.)"""
    if lease is not None and lease.writes is not None:
        lease.writes += 1


class _WriteLane:
    """One installation's writes: one exchange at a time, `interval` apart at GitHub.

    GitHub's secondary limit measures the gap between two writes' *arrivals*, which we
    never see; but each is bounded by what we do see: a request arrives after we start
    sending it, and before we finish reading its answer. So the next write is sent no
    earlier than `interval` after the previous write's answer was read (or its
    exchange failed), and then

        next arrival ≥ next send ≥ previous answer + interval ≥ previous arrival + interval

    whatever delays the token lookup, the pool, the connection, the network or the
    event loop add to either write: they can only push a send later. Spacing when
    writes are *scheduled* holds nothing of the kind: a first write held up minting
    its token reaches GitHub together with the writes scheduled an interval after it.
    What keeps the chain true:

    - `lock` is held across each exchange (every attempt: a retry and a redirect hop
      reach GitHub too), so writes never overlap and "previous" is well defined;
    - `free_at` is set when the exchange ends, however it ends, from the same clock
      the wait reads; an exchange that failed (a timeout, a dropped connection) is
      taken to have reached GitHub, if at all, before we saw it fail;
    - the clock is read again after each sleep, since a timer may fire early (the
      loop's timers run on another clock, with its own resolution).

    The price is one answer's latency per write on top of `interval`. Writes of other
    installations have lanes of their own; reads never wait for one.

    The lane also keeps GitHub's numbers for content-creating writes
    (`CONTENT_LIMITS`): it notes when each exchange ended (a granted turn: when the
    lane's next write may go), which is after the write reached GitHub, and holds the
    next until the oldest of the window's has left it. A write that waits for that
    holds the lane: the installation's other writes wait behind it.
    """

    __slots__ = ("created", "free_at", "lock")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        #: When the next write may be sent (epoch seconds, the client's clock).
        self.free_at = 0.0
        #: The content-creating writes of the longest window: when each exchange
        #: ended (a granted turn: when the lane's next write may go), oldest first.
        self.created: deque[float] = deque()

    def next_free(self) -> float:
        """When the lane's next write may be sent (after the last, or a turn granted)."""
        return self.free_at

    def content_free(self, now: float) -> float:
        """When the next content-creating write may be sent within GitHub's numbers
        (`now` or earlier: at once)."""
        created = self.created
        while created and created[0] <= now - CONTENT_LIMITS[-1][1]:
            created.popleft()
        free = 0.0
        for limit, window in CONTENT_LIMITS:
            if len(created) >= limit:
                free = max(free, created[-limit] + window)
        return free


class Holds(NamedTuple):
    """What an installation's client holds that a new client would not know: when its
    next write may go (the write lane's pacing, and turns granted to writes sent
    elsewhere, `grant_write`; 0 when writes are not paced), until when a
    secondary-limit pause holds every request, and until when its open breaker refuses
    calls (0 for none). Epoch seconds of the client's clock."""

    writes_after: float
    paused_until: float
    breaker_until: float


class _State:
    """What the clients of one installation share: budgets, breaker, writes, pause."""

    __slots__ = (
        "_asking",
        "_lane",
        "breaker",
        "budgets",
        "limited",
        "limited_at",
        "paused_until",
    )

    def __init__(self, budgets: Budgets, breaker: CircuitBreaker | None) -> None:
        self.budgets = budgets
        self.breaker = breaker
        self.paused_until = 0.0
        #: Secondary limits in a row, of reads and of writes (a success of the kind
        #: ends the row): a limit without `retry-after` waits 60 s doubled per earlier
        #: one, across requests, as GitHub asks ("then back off exponentially").
        self.limited = [0, 0]
        #: When the last of them was counted: a limit answered to a request sent before
        #: that is of the same burst (requests in flight together), not one more in a
        #: row, and waits as long as the first did.
        self.limited_at = [-math.inf, -math.inf]
        self._lane: _WriteLane | None = None
        self._asking: asyncio.Lock | None = None

    @property
    def asking(self) -> asyncio.Lock:
        """Held while the client asks GitHub for the budgets' numbers (`learn_budget`),
        made on first use."""
        if self._asking is None:
            self._asking = asyncio.Lock()
        return self._asking

    @property
    def lane(self) -> _WriteLane:
        """The installation's write lane, made on its first paced write."""
        if self._lane is None:
            self._lane = _WriteLane()
        return self._lane


class GitHub:
    """A client for GitHub's REST and GraphQL APIs, as one app, installation or token.

    Give at most one of `token` (sent as `token …`), `auth` (an `AppAuth`: the app's
    JWT) or `tokens` with `installation_id` (a `TokenSource`, e.g. `InstallationTokens`
    or the Ray app-auth actor); none means unauthenticated. `options` holds what many
    clients share; `budgets` and `breaker` are the installation's own. An instance
    holds no session (see `ghbot.client.pool`) and costs well under a few KB.
    """

    __slots__ = ("_creds", "_homes", "_lease", "_state", "base_url", "options")

    def __init__(
        self,
        *,
        base_url: str | None = None,
        token: str | None = None,
        auth: AppAuth | None = None,
        tokens: TokenSource | None = None,
        installation_id: int | None = None,
        options: ClientOptions | None = None,
        budgets: Budgets | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.options = options or DEFAULT_OPTIONS
        self.base_url = base_url.rstrip("/") if base_url else self.options.base_url
        #: Where the credentials may go (`request` with an absolute URL elsewhere).
        self._homes = api_origins(self.base_url)
        self._creds: Credentials = credentials_for(
            token=token, auth=auth, tokens=tokens, installation_id=installation_id
        )
        self._state = _State(budgets or Budgets(margin=self.options.margin), breaker)
        self._lease: Lease | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> GitHub:
        """Build a client with options from `Settings`; `kwargs` are `GitHub`'s own."""
        options = kwargs.pop("options", None) or ClientOptions.from_settings(settings)
        return cls(options=options, **kwargs)

    def __repr__(self) -> str:
        return f"GitHub({self.base_url!r}, {self._creds!r})"

    async def __aenter__(self) -> GitHub:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The pool is shared by every client on the loop; it closes with the loop.
        return None

    @property
    def rest(self) -> Rest:
        """GitHub's REST API, typed (`ghbot.rest`; docs/rest.md), sent through `request()`.

        A new view each time (two small objects, no cycle back to this client).
        """
        from ghbot.rest import Rest  # the package is imported on first use

        return Rest(self)

    @property
    def budgets(self) -> Budgets:
        """The installation's rate-limit budgets."""
        return self._state.budgets

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The installation's circuit breaker, if any."""
        return self._state.breaker

    @property
    def settled(self) -> bool:
        """Tell whether forgetting this installation's client loses nothing GitHub asked.

        False while a write is in flight, the write interval since the last one has not
        passed, the content-creating writes of the last minute or hour are as many as
        GitHub allows (`CONTENT_LIMITS`), or a secondary-limit pause is in force: a new
        client would know none of that and could write too soon. A runtime keeps the
        client until it is settled.
        """
        state, now = self._state, self.options.clock()
        lane = state._lane
        if lane is not None and (
            lane.lock.locked() or lane.next_free() > now or lane.content_free(now) > now
        ):
            return False
        return state.paused_until <= now

    @property
    def paused(self) -> bool:
        """Whether a secondary-limit pause is in force (GitHub asked for no request)."""
        return self._state.paused_until > self.options.clock()

    def holds(self) -> Holds:
        """Return what a new client of the installation would not know (`Holds`).

        A write in flight counts as ending now: its interval runs from now.
        """
        state, now = self._state, self.options.clock()
        lane, interval = state._lane, self.options.pace_writes or 0.0
        writes_after = breaker_until = 0.0
        if lane is not None:
            writes_after = lane.next_free()
            if lane.lock.locked():
                writes_after = max(writes_after, now + interval)
        if state.breaker is not None and (left := state.breaker.retry_after(now)) > 0:
            breaker_until = now + left
        return Holds(writes_after, state.paused_until, breaker_until)

    def hold(
        self, *, writes_after: float = 0.0, paused_until: float = 0.0, breaker_until: float = 0.0
    ) -> None:
        """Take over what another client of the installation held (`holds`). Never
        shortens a wait this client already has."""
        state = self._state
        state.paused_until = max(state.paused_until, paused_until)
        if writes_after > 0:
            lane = state.lane
            lane.free_at = max(lane.free_at, writes_after)
        if state.breaker is not None:
            state.breaker.open_until(breaker_until, self.options.clock())

    async def grant_write(self, spacing: float) -> None:
        """Give the installation's next write turn to a write sent elsewhere (a quota
        lease's task, which sends it as soon as this returns).

        Waits for the lane's writes so far and any secondary-limit pause (raising
        `RateLimited` for a pause longer than `max_rate_limit_wait`, as a request
        would); then the lane's next write goes `spacing` from now, which leaves the
        granted write that long, less the interval, to reach GitHub.
        """
        state = self._state
        lane = state.lane
        with _waiting():
            await lane.lock.acquire()
        try:  # held: a write in flight has ended and set `free_at` (its end + interval)
            while True:
                now = self.options.clock()
                paused = state.paused_until - now
                if paused > self.options.max_rate_limit_wait:
                    raise RateLimited(
                        429,
                        "the installation is paused after a secondary rate limit",
                        kind="secondary",
                        retry_after=paused,
                    )
                # Counted as content-creating: its method is not known here.
                content = self._content_wait(lane, None)
                if (wait := max(lane.free_at - now, paused, content)) <= 0:
                    break
                await self._pause(wait)
            now = self.options.clock()
            lane.free_at = now + spacing
            lane.created.append(now + spacing)  # it reaches GitHub before then
        finally:
            lane.lock.release()

    @property
    def credentials(self) -> Credentials:
        """How this client authenticates (its `kind` and cache `identity`; no secret)."""
        return self._creds

    def with_lease(self, lease: Lease) -> GitHub:
        """Return a client whose core requests spend `lease` (see `Budget.lease`).

        The copy shares credentials, budgets, breaker and pacing with this client; a
        request beyond the lease raises `LeaseExhausted`.
        """
        clone = copy.copy(self)
        clone._lease = lease
        return clone

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        pace: bool | None = None,
    ) -> Response:
        """Send one request and return GitHub's answer, or raise a `ghbot.errors` error.

        `url` is a path under `base_url` or an absolute URL (used verbatim). An absolute
        URL on another host than the API's (`base_url`'s, and uploads.github.com beside
        api.github.com) is sent as a redirect there would be: without the credentials,
        spending no budget, not cached; so a URL taken from a payload's text never
        carries the installation's token away. `json` is
        encoded as the body; `body` sends raw bytes or text instead (set its
        Content-Type in `headers`). Mutating methods are paced per installation unless
        `pace=False`. Retries, rate-limit waits, 401 recovery, redirects and conditional
        requests happen inside (see `ClientOptions`). Raises `GitHubError` subclasses
        for error answers, `Timeout`/`ConnectionFailed` when no answer came,
        `CircuitOpen` when the breaker refuses, and `RateLimited` when the budget is
        spent or GitHub asks for a longer wait than `max_rate_limit_wait`.
        """
        method = method.upper()
        target = build_url(self.base_url, url, params)
        resource = resource_of(target.path, self.base_url)
        call = self._call(method, target, json, body, headers, resource)
        if url.startswith(("https://", "http://")) and origin(target) not in self._homes:
            call.leave()
        return await self._send(call, pace=call.writes if pace is None else pace)

    async def paginate(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Any]:
        """Yield the items of every page, following `Link: rel="next"` verbatim.

        Items wrapped in an object (search `items`, `repositories`, …) are found by
        `response.items_of`; pass `key` to name the list. Set `per_page` (≤ 100) in
        `params`.
        """
        async for page in self.pages(url, params=params, headers=headers):
            for item in items_of(page.data, key):
                yield item

    async def pages(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Response]:
        """Yield every page's whole `Response`, following `Link: rel="next"` verbatim."""
        next_url: str | None = url
        while next_url:
            page = await self.request("GET", next_url, params=params, headers=headers)
            yield page
            next_url, params = page.links.get("next"), None

    async def graphql(self, query: str, /, **variables: Any) -> Any:
        """Run a GraphQL query or mutation and return its `data`.

        Raises `GraphQLError` when the answer lists errors. A rate limit among them
        (`RATE_LIMITED`, or `RATE_LIMIT`), answered 200, is waited out or raised as
        `RateLimited` as a REST answer's is, classified by its headers and message.
        GHES: `https://HOST/api/v3` → `https://HOST/api/graphql`.
        https://docs.github.com/en/graphql/guides/forming-calls-with-graphql
        """
        target = URL(graphql_url(self.base_url))
        payload = {"query": query, "variables": variables}
        call = self._call("POST", target, payload, None, None, "graphql")
        call.writes = is_mutation(query)
        answer = await self._send(call, pace=call.writes)
        data = answer.data if isinstance(answer.data, dict) else {}
        if data.get("errors"):
            raise graphql_error(data, url=str(target), request_id=answer.request_id)
        return data.get("data")

    # --- one logical request --------------------------------------------------------

    def _call(
        self,
        method: str,
        target: URL,
        json: Any,
        body: bytes | str | None,
        headers: Mapping[str, str] | None,
        resource: str | None,
    ) -> Call:
        if target.user is not None and self._creds.kind != "none":
            shown = target.with_user(None)
            message = f"{shown} carries a user: send it with a client without credentials"
            raise UsageError(message)
        # Header names are case-insensitive: a caller's `accept` replaces the default
        # `Accept`, not goes beside it, and `Authorization` is one header to drop.
        sent: CIMultiDict[str] = CIMultiDict(self.options.base_headers)
        payload: bytes | None = None
        if json is not None:
            payload = _encode(json)
            sent["Content-Type"] = "application/json; charset=utf-8"
        elif body is not None:
            payload = body.encode() if isinstance(body, str) else body
        if headers:
            sent.update(headers)
        call = Call(method, target, payload, sent, resource)
        etags = self.options.etags
        if method == "GET" and etags is not None and "If-None-Match" not in sent:
            call.cache_key = (self._creds.identity, call.text, sent.get("Accept", ""))
            call.cached = etags.get(call.cache_key)
            if call.cached is not None:
                sent["If-None-Match"] = call.cached.etag
        return call

    async def _send(self, call: Call, *, pace: bool) -> Response:
        """Send one logical request (with its retries) inside a client span."""
        with telemetry.span(f"GitHub {call.method}", kind=SpanKind.CLIENT) as span:
            recording = span.is_recording()
            if recording:
                span.set_attributes({API_METHOD: call.method, API_ENDPOINT: call.url.path})
            answer = await self._send_retrying(call, pace=pace)
            if recording:
                span.set_attribute(STATUS_CODE, answer.status)
                remaining = whole_number(answer.headers.get("x-ratelimit-remaining", ""))
                if remaining is not None:
                    span.set_attribute(RATE_LIMIT_REMAINING, remaining)
            return answer

    async def _send_retrying(self, call: Call, *, pace: bool) -> Response:
        opts, limited = self.options, self._state.limited
        interval = opts.pace_writes if pace else None
        attempt = limit_hits = hops = 0
        asked = False  # GitHub asked for a budget's numbers (`learn_budget`)
        retry = AuthRetry()
        while True:
            try:
                budget, (status, headers, raw) = await self._attempt(call, interval)
            except TransportError as exc:
                if call.at_home():  # another host's failure says nothing of GitHub's
                    self._outcome(ok=False)
                if attempt >= opts.retry.max_retries:
                    raise
                metrics.retry("network")
                await self._backoff(call, attempt, exc.reason, type(exc).__name__)
                attempt += 1
                continue
            except _Refused as refused:
                # The budget's own count said no: never sent. Asked GitHub first when
                # no answer has told it when it reopens; waited out in-line when its
                # reset (or its open leases' settling) is near, as GitHub's limits
                # are; not when no reset is known (a guess), nor by a task that holds
                # a lease itself when only leases stand in the way (it would wait on
                # its own): raised, its caller waits.
                refusal, spent = refused.error, refused.budget
                if not asked and not spent.told:
                    asked = True
                    if await self.learn_budget(spent):
                        continue
                own = holding_lease.get() and spent.usable(opts.clock()) >= 1
                guessed = refusal.reset_after is None
                if own or guessed or not self._may_wait(refusal, limit_hits):
                    _log_refused(call, refusal)
                    raise refusal from None
                limit_hits += 1
                metrics.retry("rate_limit")
                _log_refused(call, refusal, waits=True)
                await self._pause(opts.retry.spread(refusal.retry_after))
                continue
            except RateLimited as exc:  # a pause or the content count, too long to wait
                _log_refused(call, exc)
                raise
            self._observe(budget, status, headers)
            if call.at_home():
                # 501: the server does not implement this (RFC 9110 15.6.2), a lasting
                # answer, no sign of it failing, and not retried below.
                self._outcome(ok=status < 500 or status == NOT_IMPLEMENTED)
            # A GraphQL rate limit is a 200: an error below, as a 403's is.
            if (status < 300 or status == 304) and not graphql_limited(call, status, raw):
                if call.sent_at > self._state.limited_at[call.writes]:
                    limited[call.writes] = 0  # sent after the last limit: the row ends
                if call.writes:
                    _note_written()
                return answer_for(call, status, headers, raw, opts.etags)
            if status in REDIRECTS and hops < opts.max_redirects and call.may_follow(status):
                hops += 1
                call.follow(status, headers.get("Location", ""))
                continue
            # GitHub's time, for the wait until a reset, which is GitHub's epoch second.
            now = self._state.budgets.clock.now(opts.clock())
            kind = call.writes
            again = call.sent_at > self._state.limited_at[kind]  # not of the last burst
            hits = limited[kind] if again else max(limited[kind] - 1, 0)
            error = error_from(call, status, headers, raw, now, hits)
            if isinstance(error, RateLimited) and error.kind == "secondary" and again:
                limited[kind] += 1
                self._state.limited_at[kind] = opts.clock()
            if (
                isinstance(error, ServerError)
                and status != NOT_IMPLEMENTED
                and attempt < opts.retry.max_retries
            ):
                metrics.retry("server_error")
                await self._backoff(call, attempt, f"HTTP {status}")
                attempt += 1
            elif isinstance(error, RateLimited) and self._may_wait(error, limit_hits):
                limit_hits += 1
                metrics.retry("secondary_rate_limit" if error.kind == "secondary" else "rate_limit")
                await self._wait_out(call, error)
            elif (
                isinstance(error, Unauthorized)
                and call.at_home()  # another host's 401 is not about the token
                and await self._recover(retry, error, call.headers.get("Authorization"))
            ):
                metrics.retry("auth")
            else:
                raise error

    async def _attempt(self, call: Call, interval: float | None) -> tuple[Budget | None, Answer]:
        """Admit and send one HTTP exchange; a paced write takes its turn in the lane.

        The pause of a secondary limit is checked inside the turn, so a write that
        queued before the pause began still waits it out, then goes alone. (The write
        that drew the limit notes the pause before it next awaits, so before the
        writer after it can run.)
        """
        lease = self._lease
        turned = lease if lease is not None and lease.writes is not None and call.writes else None
        if not interval:
            while True:
                budget = await self._admit(call)
                await self._go(call, budget, turned)
                try:
                    return budget, await self._exchange(call, budget)
                except _Paused:  # a pause began while it waited for a connection
                    _unturn(turned)
        opts, lane = self.options, self._state.lane
        with _waiting():
            await lane.lock.acquire()
        creates = call.method == "POST"
        try:
            while (wait := lane.next_free() - opts.clock()) > 0:
                await self._pause(wait)
            while creates and (wait := self._content_wait(lane, call)) > 0:
                await self._pause(wait)
            while True:
                budget = await self._admit(call)
                await self._go(call, budget, turned)
                call.sent_at = 0.0
                try:
                    return budget, await self._exchange(call, budget)
                except _Paused:  # a pause began while it waited for a connection
                    _unturn(turned)
                finally:
                    if call.sent_at:  # it went: it counts for the spacing and content
                        ended = opts.clock()
                        lane.free_at = ended + interval
                        if creates:  # it reached GitHub, if at all, before its end
                            lane.created.append(ended)
        finally:
            lane.lock.release()

    def _content_wait(self, lane: _WriteLane, call: Call | None) -> float:
        """How long the next content-creating write (`call`; None: a turn granted to
        a quota lease's write) waits for GitHub's numbers; raise `RateLimited`
        (secondary) when longer than `max_rate_limit_wait`."""
        now = self.options.clock()
        wait = lane.content_free(now) - now
        if wait > self.options.max_rate_limit_wait:
            limits = ", ".join(f"{n} in {w:.0f} s" for n, w in CONTENT_LIMITS)
            raise RateLimited(
                429,
                f"the installation made as many content-creating requests as GitHub allows "
                f"({limits})",
                kind="secondary",
                retry_after=wait,
                method=call.method if call is not None else "",
                url=call.shown() if call is not None else "a quota lease's write",
            )
        return wait

    async def _go(self, call: Call, budget: Budget | None, turned: Lease | None) -> None:
        """Take the write's turn (`turned`'s lane); give the unit `_admit` took back when
        that stops it (no turn, a drain). The call's watcher is told it goes in
        `_exchange`, once no pause holds it."""
        try:
            if turned is not None:  # after `_admit`'s waits: sent in its turn
                await self._write_turn(turned)
        except BaseException:
            if budget is not None:  # never sent: GitHub counted nothing
                self._refund(budget)
            raise

    async def _write_turn(self, lease: Lease) -> None:
        """Take one of the lease's writes and wait for its turn in the installation's
        write lane (`Lease.write_turn`); raise `LeaseExhausted` when none is left."""
        if lease.writes is not None:
            if lease.writes <= 0:
                raise LeaseExhausted(
                    "quota lease has no write left for this write (every attempt takes "
                    "one): ask for more, quota.lease(n, writes=k)"
                )
            lease.writes -= 1
        if lease.write_turn is not None:
            with _waiting():
                await lease.write_turn()

    async def _admit(self, call: Call) -> Budget | None:
        """Check the breaker, a pause and the budget before one HTTP exchange."""
        opts, state = self.options, self._state
        now = opts.clock()
        if state.breaker is not None:
            state.breaker.check(now)
        # Looked at again after each wait: a request in flight meanwhile may have drawn
        # a longer pause, or opened the breaker.
        while state.paused_until > now:
            wait = state.paused_until - now
            if wait > opts.max_rate_limit_wait:
                raise RateLimited(
                    429,
                    "the installation is paused after a secondary rate limit",
                    kind="secondary",
                    retry_after=wait,
                    method=call.method,
                    url=call.shown(),
                )
            await self._pause(opts.retry.spread(wait))
            now = opts.clock()
            if state.breaker is not None:
                state.breaker.check(now)
        if call.resource is None:
            return None
        budget = state.budgets.get(call.resource)
        if self._lease is not None and call.resource == "core":
            budget.spend(self._lease)
            return budget
        try:
            budget.acquire(now, method=call.method, url=call.shown())
        except RateLimited as exc:  # judged in `_send_retrying`, outside the write lane
            raise _Refused(exc, budget) from None
        return budget

    async def learn_budget(self, budget: Budget) -> bool:
        """Ask GitHub for `budget`'s numbers (`GET /rate_limit`, which counts against no
        limit) when no answer has told it its limit and its window's reset
        (`Budget.told`): its refusal cannot say when it reopens, and a handler waiting
        on it sends nothing that would tell it. One question at a time.

        Return whether `budget` was told meanwhile, so that what it refused is worth
        trying again; an error of GitHub's, or no answer, leaves it as it was, but for
        GitHub Enterprise Server's saying rate limiting is off (`limits_off`), which
        stops the budget counting (`Budget.unmeter`).
        https://docs.github.com/en/rest/rate-limit/rate-limit
        """
        state = self._state
        if budget.told:
            return False
        async with state.asking:
            if budget.told or not budget.metered:  # another request asked meanwhile
                return True
            try:
                answer = await self.request("GET", "/rate_limit")
            except (GitHubError, TransportError) as exc:
                if isinstance(exc, GitHubError) and limits_off(exc.status, exc.message):
                    budget.unmeter()
                    return True
                log.debug("no rate limits from GitHub: %s", type(exc).__name__)
                return False
            now = self.options.clock()
            state.budgets.clock.observe(answer.headers.get("date"), now)
            limit = RateLimit.from_body(answer.data, budget.resource)
            if limit is None and (seen := answer.rate_limit) is not None:
                limit = seen if seen.resource == budget.resource else None
            budget.observe(limit, now)  # spent nothing: no unit to give back
            return budget.told

    async def _exchange(self, call: Call, budget: Budget | None) -> Answer:
        """Send the request once; return status, headers and body, or raise TransportError.

        A request that never got a connection (cancelled while it waited for one, too),
        or whose token could not be had, gives `budget`'s unit back.
        """
        headers, pool = call.headers, self.options.pool or current_pool()
        try:
            authorization = await self._creds.authorization() if call.at_home() else None
            await pool.semaphore.acquire()
        except BaseException as exc:  # no token, or cancelled before a connection: never sent
            if budget is not None:
                self._refund(budget)
            self.token_failed(exc)
            raise
        if not call.at_home():
            headers.pop("Authorization", None)
        elif authorization is not None:
            headers["Authorization"] = authorization
        try:
            if call.at_home() and self._state.paused_until > self.options.clock():
                # A secondary limit drawn while this waited for a connection (or its
                # token): not sent into the pause; `_admit` waits it out first.
                if budget is not None:
                    self._refund(budget)
                raise _Paused
            try:
                _note_call(call)  # it goes now (a draining shard may stop it here)
            except BaseException:
                if budget is not None:
                    self._refund(budget)
                raise
            call.sent_at = self.options.clock()
            # Timed from when the request may go: waiting for the pool is not GitHub's.
            started = time.perf_counter()
            try:
                async with pool.session.request(
                    call.method,
                    call.url,
                    headers=headers,
                    data=call.body,
                    allow_redirects=False,
                    timeout=self.options.client_timeout,
                ) as answer:
                    status, body = answer.status, await answer.read()
            except TimeoutError as exc:
                metrics.api_request(call.method, None, time.perf_counter() - started)
                timeout = self.options.client_timeout
                if isinstance(exc, aiohttp.ConnectionTimeoutError):
                    if budget is not None:
                        self._refund(budget)  # no connection within its timeout: never sent
                    message = f"no connection within {timeout.sock_connect:g} s"
                else:
                    message = f"no answer within {timeout.total:g} s"
                raise Timeout(message, method=call.method, url=call.shown()) from None
            except aiohttp.ClientError as exc:
                metrics.api_request(call.method, None, time.perf_counter() - started)
                if budget is not None and isinstance(exc, aiohttp.ClientConnectorError):
                    self._refund(budget)  # no connection: GitHub never saw it
                # Another host's error text may hold its URL, query and all (a
                # pre-signed URL's signature): its type alone, then.
                message = (
                    f"{type(exc).__name__}: {exc}"[:300] if call.at_home() else type(exc).__name__
                )
                raise ConnectionFailed(message, method=call.method, url=call.shown()) from None
            took = time.perf_counter() - started
            metrics.api_request(call.method, status, took)
            if log.isEnabledFor(logging.DEBUG):
                # The path only: a query may hold a secret (a client_secret, a code).
                log.debug(
                    "%s %s -> %d",
                    call.method,
                    call.url.path,
                    status,
                    extra={"http_status": status, "duration_ms": round(took * 1000, 3)},
                )
            return status, answer.headers, body
        finally:
            pool.semaphore.release()

    # --- budgets, breaker, waits ----------------------------------------------------

    def _observe(self, budget: Budget | None, status: int, headers: Mapping[str, str]) -> None:
        if budget is None:  # not an API request counted (another host's clock, say)
            return
        budgets, now = self._state.budgets, self.options.clock()
        budgets.clock.observe(headers.get("date"), now)
        limit = RateLimit.from_headers(headers)
        if status == 304 or limit is None or limit.resource != budget.resource:
            # GitHub did not count it against this budget: give the unit back.
            self._refund(budget)
        if limit is None:  # a success without the headers: GitHub meters nothing there
            budget.observe(None, now, status=status)
        else:
            budgets.get(limit.resource).observe(limit, now)
            github_now = budgets.clock.now(now)
            metrics.rate_limit_seen(
                limit.resource, limit.remaining, limit.limit, limit.reset, github_now
            )

    def _refund(self, budget: Budget) -> None:
        """Give back the unit `_admit` took (to this client's lease, for core)."""
        budget.refund(self._lease if budget.resource == "core" else None)

    def _outcome(self, *, ok: bool) -> None:
        breaker = self._state.breaker
        if breaker is None:
            return
        if ok:
            breaker.record_success(self.options.clock())
        else:
            breaker.record_failure(self.options.clock())

    async def _backoff(
        self, call: Call, attempt: int, why: str, error_type: str = "ServerError"
    ) -> None:
        delay = self.options.retry.backoff(attempt)
        log.warning(
            "retrying %s %s after %s in %.2f s",
            call.method,
            call.url.path,
            why,
            delay,
            extra={"error_type": error_type},
        )
        await self._pause(delay)

    def _may_wait(self, error: RateLimited, hits: int) -> bool:
        """Pause the installation for a secondary limit; tell whether to wait in-line."""
        opts, state = self.options, self._state
        if error.kind == "secondary":
            metrics.secondary_rate_limits.add(1)
            state.paused_until = max(state.paused_until, opts.clock() + error.retry_after)
        return hits < opts.max_rate_limit_waits and error.retry_after <= opts.max_rate_limit_wait

    async def _wait_out(self, call: Call, error: RateLimited) -> None:
        log.warning(
            "%s rate limit on %s %s; waiting %.0f s",
            error.kind,
            call.method,
            call.url.path,
            error.retry_after,
            extra={"error_type": "RateLimited", "http_status": error.status},
        )
        if error.kind != "secondary":  # the pause of a secondary limit is waited in _admit
            await self._pause(self.options.retry.spread(error.retry_after))

    async def _recover(self, retry: AuthRetry, error: Unauthorized, sent: str | None) -> bool:
        """Let the credentials judge a 401 to the request sent with `sent` (its
        `Authorization`): True once it may be sent again (after any wait)."""
        now = self.options.clock()
        try:
            delay = await self._creds.recover(retry, error.message, error.headers, now, sent)
        except Exception as exc:
            self.token_failed(exc)
            raise
        if delay is None:
            return False
        if delay:
            await self._pause(delay)
        return True

    def token_failed(self, exc: BaseException) -> None:
        """Judge why the installation's token could not be had, raising what its caller
        should see instead of `exc`, if anything.

        GitHub failed the exchange (a 5xx, a timeout, a dropped connection, after the
        exchange's own retries): open the installation's breaker and raise
        `CircuitOpen`; no call can go until it can, so its deliveries wait as in an
        outage instead of spending their attempts on it. GitHub refused it because the
        App is not installed there (404) or the installation is suspended (403 saying
        so): raise `InstallationUnavailable`, which no wait cures.
        """
        installation_id = getattr(self._creds, "installation_id", None)
        if installation_id is not None and (gone := _unavailable(exc, installation_id)):
            raise gone from exc
        breaker = self._state.breaker
        if breaker is None or not isinstance(exc, ServerError | TransportError):
            return
        now = self.options.clock()
        breaker.trip(now)
        left = breaker.retry_after(now)
        message = f"{breaker.name}: no token ({type(exc).__name__}); calls wait {left:g} s"
        raise CircuitOpen(message, retry_after=left) from exc

    async def _pause(self, seconds: float) -> None:
        """Sleep `seconds` (the options' sleep), telling the call's watcher."""
        with _waiting():
            await self.options.sleep(seconds)


def _unavailable(exc: BaseException, installation_id: int) -> InstallationUnavailable | None:
    """`InstallationUnavailable` for GitHub's refusal (`exc`) of an installation's token
    that says it is not installed or suspended; None for any other failure."""
    if isinstance(exc, NotFound):
        suspended, what = False, "not installed (uninstalled, or another App's)"
    elif isinstance(exc, Forbidden) and "suspended" in str(exc).lower():
        suspended, what = True, "suspended"
    else:
        return None
    status = 403 if suspended else 404
    return InstallationUnavailable(
        status,
        f"installation {installation_id} is {what}: GitHub refused its token",
        installation_id=installation_id,
        suspended=suspended,
        method=getattr(exc, "method", ""),
        url=getattr(exc, "url", ""),
        request_id=getattr(exc, "request_id", None),
    )


@contextmanager
def _waiting() -> Iterator[None]:
    """Tell the call's watcher, if any, that a wait of the client's own begins, then
    ends (it may refuse the wait by raising before it begins)."""
    watcher = call_watcher.get()
    if watcher is None:
        yield
        return
    watcher.waiting(True)
    try:
        yield
    finally:
        watcher.waiting(False)


def _log_refused(call: Call, error: RateLimited, *, waits: bool = False) -> None:
    """Log a request its installation's budget refused (by the client's own count): it
    `waits` in-line, or is raised and its handler waits; the line says which handler
    (its log fields). A few a minute of each, not one a request."""
    if (held := _REFUSED_LOGGED.allow("waits" if waits else "raised")) is not None:
        log.warning(
            "%s rate limit on %s %s: %s; %s %.0f s%s",
            error.kind,
            call.method,
            call.url.path,
            error.message,
            "waiting" if waits else "not sent, the handler waits",
            error.retry_after,
            f" ({held} such lines held back)" if held else "",
            extra={"error_type": "RateLimited", "http_status": error.status},
        )


def _note_call(call: Call) -> None:
    """Tell the call's watcher that `call` is about to be sent."""
    if (watcher := call_watcher.get()) is not None:
        watcher.calling(call.writes)


def _note_written() -> None:
    """Tell the call's watcher that GitHub did a write."""
    if (watcher := call_watcher.get()) is not None:
        watcher.written()
