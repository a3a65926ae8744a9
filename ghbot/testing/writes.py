"""GitHub's secondary limit on content writes, as the fake enforces it.

GitHub asks for at least one second between an installation's mutating requests and
answers a burst with a secondary-limit 403 and `retry-after`. The fake applies that
rule when `FakeGitHub(write_interval=…)` is set; `secondary_limits` counts the answers.
https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#pause-between-mutative-requests
"""

from __future__ import annotations

import math
from typing import Any

from ghbot.client.call import WRITES, is_mutation

__all__ = ["WRITE_METHODS", "WriteSpacing", "is_write"]

WRITE_METHODS = WRITES  # the client's: what it paces, the fake spaces


def is_write(method: str, path: str, json: Any) -> bool:
    """Tell whether a request is a content write: a mutating method, a GraphQL mutation."""
    if method not in WRITE_METHODS:
        return False
    if path != "/graphql":
        return True
    query = json.get("query") if isinstance(json, dict) else None
    return isinstance(query, str) and is_mutation(query)


class WriteSpacing:
    """Refuse an installation's write that arrives under `interval` after its previous one.

    `interval` None turns the rule off. A refused write starts a penalty: every write
    of that installation arriving within `retry_after` seconds is refused too, with the
    seconds left. Every write arrival counts as the installation's previous one,
    refused or not, as GitHub sees traffic, not outcomes.
    """

    __slots__ = ("_last", "_until", "interval", "retry_after")

    def __init__(self, interval: float | None = None, retry_after: int = 60) -> None:
        self.interval = interval
        self.retry_after = retry_after
        self._last: dict[str, float] = {}
        self._until: dict[str, float] = {}

    def refuse(self, key: str, arrived: float) -> int | None:
        """Note a write of `key` that arrived at `arrived`; return a retry-after, or None.

        Arrivals are taken when the fake starts handling a request, but checked after
        its body is read, so two writes may be checked out of order: the gap is taken
        either way round.
        """
        if self.interval is None:
            return None
        last = self._last.get(key)
        self._last[key] = arrived if last is None else max(last, arrived)
        until = self._until.get(key, 0.0)
        if arrived < until:
            return max(math.ceil(until - arrived), 1)
        if last is not None and abs(arrived - last) < self.interval:
            self._until[key] = arrived + self.retry_after
            return self.retry_after
        return None

    def reset(self) -> None:
        """Forget every arrival and penalty."""
        self._last.clear()
        self._until.clear()
