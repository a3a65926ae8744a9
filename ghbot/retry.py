"""Retry policy: which failures to retry, and how long to back off, without sleeping.

Requests to GitHub retry 5xx answers, timeouts and dropped connections with exponential
backoff and jitter, up to `max_retries` times; 4xx answers are final, but for a 401,
which the credentials recover from (`ghbot.client.credentials`), and rate limits, which
are waited out separately (`ghbot.ratelimit`). Handlers use the same policy shape for
their attempts before a delivery is dead-lettered.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ghbot.errors import GhBotError, RateLimited, ServerError, TransportError

__all__ = ["DEFAULT_MAX_RETRIES", "RetryPolicy", "is_retryable"]

DEFAULT_MAX_RETRIES = 3


def is_retryable(error: BaseException) -> bool:
    """Tell whether a failed request may succeed if sent again unchanged.

    True for `ServerError` (5xx) and `TransportError` (timeouts, connection errors);
    False for every other 4xx (400, 401, 403, 404, 410, 422, …). `RateLimited` is
    retryable only after its wait, which `RetryPolicy.delay_for` honours.
    """
    return isinstance(error, ServerError | TransportError | RateLimited)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt `n` waits about `base × 2**n`, capped.

    The delay is drawn uniformly from `[d/2, d]` where `d = min(cap, base × 2**n)`, so
    retries of many clients spread out while the delay still grows.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def backoff(self, attempt: int) -> float:
        """Return the wait before retry number `attempt` (0 for the first retry)."""
        ceiling = min(self.cap, self.base * 2.0 ** max(attempt, 0))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def spread(self, wait: float) -> float:
        """Return `wait` lengthened by up to a tenth of it (at most 5 s), at random.

        For waits GitHub named (a secondary limit's pause, a window's reset) and a
        breaker's open time: the requests and handlers they held do not all go at the
        instant it ends, the burst that draws the next secondary limit.
        """
        return wait + self.rng.uniform(0, min(wait / 10, 5.0)) if wait > 0 else wait

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Tell whether to retry after `error` on retry number `attempt` (0-based)."""
        return attempt < self.max_retries and is_retryable(error)

    def delay_for(self, error: BaseException, attempt: int) -> float:
        """Return the wait before retrying after `error`: GitHub's wait if it named one."""
        if isinstance(error, RateLimited):
            return self.spread(max(error.retry_after, 0.0))
        return self.backoff(attempt)


def describe(error: BaseException) -> str:
    """Name a failure's class for metrics and logs (`server_error`, `timeout`, …)."""
    if isinstance(error, GhBotError):
        name = type(error).__name__
        return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    return "unexpected"
