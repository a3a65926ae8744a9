"""One HTTP exchange: admitted, sent through the shared pool, and what its answer tells
the budgets and the breaker (`Exchange`, a base of `GitHub`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import aiohttp

from ghbot import metrics
from ghbot.budget import Budget, Lease
from ghbot.client.admission import Admission
from ghbot.client.call import Call, meters_nothing
from ghbot.client.pool import current_pool
from ghbot.client.watch import note_call, watched_wait
from ghbot.errors import ConnectionFailed, Timeout
from ghbot.ratelimit import RateLimit

__all__ = ["Answer", "Exchange"]

log = logging.getLogger("ghbot.client")

Answer = tuple[int, Mapping[str, str], bytes]


class _Paused(Exception):
    """A request about to go found its installation paused: admit it again."""


def _unturn(lease: Lease | None) -> None:
    """Give back the write `_go` took of `lease` for a request that did not go. (The
    turn its lane granted is not given back: the lane counts one write more than went,
    on the safe side.)"""
    if lease is not None and lease.writes is not None:
        lease.writes += 1


class Exchange(Admission):
    """`GitHub`'s HTTP exchanges: each admitted (a paced write in its turn), sent, and
    its answer observed. A base of `GitHub`; never used alone."""

    __slots__ = ()

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
        with watched_wait():
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
                note_call(call)  # it goes now (a draining shard may stop it here)
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

    def _observe(
        self, call: Call, budget: Budget | None, status: int, headers: Mapping[str, str]
    ) -> None:
        """Take an answer's rate-limit headers into the budgets; an answer without
        them may say the server meters nothing (`meters_nothing`)."""
        if budget is None:  # not an API request counted (another host's clock, say)
            return
        budgets, now = self._state.budgets, self.options.clock()
        budgets.clock.observe(headers.get("date"), now)
        limit = RateLimit.from_headers(headers)
        if status == 304 or limit is None or limit.resource != budget.resource:
            # GitHub did not count it against this budget: give the unit back.
            self._refund(budget)
        if limit is None:
            if meters_nothing(status, headers, call.url.path, self.base_url):
                budget.observe(None, now, status=status)
        else:
            budgets.get(limit.resource).observe(limit, now)
            github_now = budgets.clock.now(now)
            metrics.rate_limit_seen(
                limit.resource, limit.remaining, limit.limit, limit.reset, github_now
            )

    def _outcome(self, *, ok: bool) -> None:
        breaker = self._state.breaker
        if breaker is None:
            return
        if ok:
            breaker.record_success(self.options.clock())
        else:
            breaker.record_failure(self.options.clock())
