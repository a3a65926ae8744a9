"""One logical request: its retries, rate-limit waits, 401 recovery and redirects
(`Retrying`, a base of `GitHub`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from opentelemetry.trace import SpanKind

from ghbot import metrics, telemetry
from ghbot.budget import Budget, holding_lease
from ghbot.client.admission import Refused
from ghbot.client.call import REDIRECTS, Call
from ghbot.client.credentials import AuthRetry
from ghbot.client.exchange import Exchange
from ghbot.client.response import Response, answer_for, error_from, graphql_limited
from ghbot.client.watch import note_written
from ghbot.digits import whole_number
from ghbot.errors import (
    GitHubError,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
)
from ghbot.logs import LogLimiter
from ghbot.ratelimit import RateLimit, limits_off
from ghbot.telemetry import API_ENDPOINT, API_METHOD, RATE_LIMIT_REMAINING, STATUS_CODE

__all__ = ["NOT_IMPLEMENTED", "Retrying"]

#: An answer a retry does not change (the fake GitHub's for what it does not implement).
NOT_IMPLEMENTED = 501

log = logging.getLogger("ghbot.client")
#: The WARNINGs of requests the client refused itself (`_log_refused`): a few a minute.
_REFUSED_LOGGED = LogLimiter(burst=5, per=60.0)


class Retrying(Exchange):
    """`GitHub`'s logical requests: each sent (`_send`) until GitHub answers it for good,
    retried, waited out or recovered as `ClientOptions` says. A base of `GitHub`;
    never used alone."""

    __slots__ = ()

    if TYPE_CHECKING:  # `GitHub.request`, with which `learn_budget` asks GitHub

        async def request(self, method: str, url: str) -> Response: ...

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
            except Refused as refused:
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
            self._observe(call, budget, status, headers)
            if call.at_home():
                # 501: the server does not implement this (RFC 9110 15.6.2), a lasting
                # answer, no sign of it failing, and not retried below.
                self._outcome(ok=status < 500 or status == NOT_IMPLEMENTED)
            # A GraphQL rate limit is a 200: an error below, as a 403's is.
            if (status < 300 or status == 304) and not graphql_limited(call, status, raw):
                if call.sent_at > self._state.limited_at[call.writes]:
                    limited[call.writes] = 0  # sent after the last limit: the row ends
                if call.writes:
                    note_written()
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
