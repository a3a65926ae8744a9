"""Rate limits as GitHub states them: read its headers, classify refusals, the waits.

Pure state over header mappings and a `now` the caller passes (epoch seconds).
https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#handle-rate-limit-errors-appropriately
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum
from functools import lru_cache

from ghbot.digits import whole_number

__all__ = [
    "SECONDARY_MIN_WAIT",
    "GitHubClock",
    "LimitKind",
    "RateLimit",
    "classify",
    "classify_graphql",
    "http_date",
    "limits_off",
    "retry_wait",
]

#: With neither `retry-after` nor an exhausted primary limit, wait at least this long.
SECONDARY_MIN_WAIT = 60.0
#: Never wait longer than an hour for a secondary limit's exponential backoff.
SECONDARY_MAX_WAIT = 3600.0
#: What GitHub Enterprise Server answers `GET /rate_limit` (a 404) with rate limiting
#: off, as its users report it (vermiculus/magithub#104, actions/stale#1227).
LIMITS_OFF = "Rate limiting is not enabled."


class LimitKind(StrEnum):
    """What a 403 or 429 means."""

    PRIMARY = "primary"
    SECONDARY = "secondary"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One answer's `x-ratelimit-*` headers."""

    limit: int
    remaining: int
    used: int
    reset: float
    resource: str

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimit | None:
        """Read the rate-limit headers; None when the limit or the count is absent (GHES
        with limits off sends neither) or not written in ASCII digits."""
        remaining = _int(headers.get("x-ratelimit-remaining"))
        limit = _int(headers.get("x-ratelimit-limit"))
        if remaining is None or limit is None:
            return None
        return cls(
            limit=limit,
            remaining=remaining,
            used=_int(headers.get("x-ratelimit-used")) or max(limit - remaining, 0),
            reset=float(_int(headers.get("x-ratelimit-reset")) or 0),
            resource=headers.get("x-ratelimit-resource") or "core",
        )

    @classmethod
    def from_body(cls, data: object, resource: str) -> RateLimit | None:
        """Read `resource`'s numbers from a `GET /rate_limit` answer's body; None when
        it has none (GHES with limits off answers 404).
        https://docs.github.com/en/rest/rate-limit/rate-limit
        """
        resources = data.get("resources") if isinstance(data, dict) else None
        numbers = resources.get(resource) if isinstance(resources, dict) else None
        if not isinstance(numbers, dict):
            return None
        try:
            limit, remaining = int(numbers["limit"]), int(numbers["remaining"])
            reset = float(numbers["reset"])
        except (KeyError, TypeError, ValueError):
            return None
        used = int(numbers.get("used") or max(limit - remaining, 0))
        return cls(limit=limit, remaining=remaining, used=used, reset=reset, resource=resource)


def classify(status: int, headers: Mapping[str, str], message: str = "") -> LimitKind | None:
    """Classify an answer as a primary limit, a secondary limit, or a plain 403.

    Both kinds come as 403 or 429, so the headers and message decide: a message about a
    secondary limit (or GitHub's older "abuse" wording) or a `retry-after` header means
    secondary; `x-ratelimit-remaining: 0` means primary; any other 429, or 403 whose
    message speaks of a rate limit, is secondary; any other 403 is `FORBIDDEN`. Returns
    None for every other status.
    """
    if status not in (403, 429):
        return None
    lowered = message.lower()
    if (kind := _said(headers, lowered)) is not None:
        return kind
    if status == 429 or "rate limit" in lowered:
        return LimitKind.SECONDARY
    return LimitKind.FORBIDDEN


def classify_graphql(headers: Mapping[str, str], message: str) -> LimitKind:
    """Classify a GraphQL rate-limit error (an error whose `type` says so, answered 200)
    by the headers and message, as `classify` does a REST answer's.

    A secondary limit's message (or "abuse") or a `retry-after` header means secondary;
    `x-ratelimit-remaining: 0`, or GitHub's primary wording ("API rate limit exceeded",
    which GitHub has sent with requests left in the headers:
    octokit/plugin-throttling.js#632), primary; anything else secondary, whose wait
    pauses the installation. `headers`' names are lower case.
    https://docs.github.com/en/graphql/overview/rate-limits-and-query-limits-for-the-graphql-api
    """
    lowered = message.lower()
    if (kind := _said(headers, lowered)) is not None:
        return kind
    if "api rate limit" in lowered or "primary rate limit" in lowered:
        return LimitKind.PRIMARY
    return LimitKind.SECONDARY


def _said(headers: Mapping[str, str], lowered: str) -> LimitKind | None:
    """The kind an answer says outright, REST's or GraphQL's: secondary by its message
    (or GitHub's older "abuse" wording) or a `retry-after`; primary by
    `x-ratelimit-remaining: 0`. None when it says neither (`lowered`: the message)."""
    if "secondary rate limit" in lowered or "abuse" in lowered:
        return LimitKind.SECONDARY
    if headers.get("retry-after") is not None:
        return LimitKind.SECONDARY
    if headers.get("x-ratelimit-remaining") == "0":
        return LimitKind.PRIMARY
    return None


def limits_off(status: int, message: str) -> bool:
    """Tell whether an answer to `GET /rate_limit` says the server meters nothing:
    GitHub Enterprise Server with rate limiting off answers it 404 with `LIMITS_OFF`.
    Any other error (a 404 of a server whose endpoint is missing) says nothing."""
    return status == 404 and LIMITS_OFF.lower().rstrip(".") in message.lower()


def retry_wait(headers: Mapping[str, str], now: float, attempt: int = 0) -> float:
    """Return how long to wait before retrying after a rate limit, in seconds.

    `retry-after` if present; else, when the primary limit is spent, until
    `x-ratelimit-reset` (plus one second, as the reset is rounded down); `now` is
    GitHub's time, as far as the caller knows it (`GitHubClock`: a reset is GitHub's
    epoch second, and a local clock ahead of GitHub's would retry too soon); else at least
    `SECONDARY_MIN_WAIT`, doubling with each earlier `attempt` (the client counts the
    installation's secondary limits in a row, across requests, reads apart from
    writes), up to `SECONDARY_MAX_WAIT`.
    """
    retry_after = _int(headers.get("retry-after"))
    if retry_after is not None:
        return float(max(retry_after, 0))
    reset = _int(headers.get("x-ratelimit-reset"))
    if headers.get("x-ratelimit-remaining") == "0" and reset is not None:
        return max(reset - now, 0.0) + 1.0
    return min(SECONDARY_MIN_WAIT * 2.0 ** max(attempt, 0), SECONDARY_MAX_WAIT)


class GitHubClock:
    """How far GitHub's clock is from the local one, learned from answers' `Date`.

    Rate-limit resets are GitHub's epoch seconds: a budget, and the wait for a primary
    limit, compare them with GitHub's time (`now`), the local clock plus this offset,
    as a local clock ahead of GitHub's would reopen a spent budget, and retry, before
    GitHub's window resets. The offset is whole seconds, changed only when an answer
    differs from it by more than a second; a `Date` is rounded down and arrives an
    answer's trip late, so it errs on the late side, by a second or two at most.
    """

    __slots__ = ("offset",)

    def __init__(self) -> None:
        #: Seconds to add to the local clock to get GitHub's.
        self.offset = 0.0

    def __repr__(self) -> str:
        return f"GitHubClock(offset={self.offset:+.0f} s)"

    def observe(self, date: str | None, now: float) -> None:
        """Take an answer's `Date` header, received at local time `now`."""
        server = http_date(date)
        if server is None:
            return
        measured = round(server - now)
        if abs(measured - self.offset) > 1:
            self.offset = float(measured)

    def now(self, local: float) -> float:
        """Return GitHub's time when the local clock says `local`."""
        return local + self.offset


@lru_cache(maxsize=8)  # one `Date` a second, shared by every answer in it
def http_date(value: str | None) -> float | None:
    """Return an HTTP date (a `Date` header) in epoch seconds; None if it is not one."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _int(value: str | None) -> int | None:
    return None if value is None else whole_number(value.strip())
