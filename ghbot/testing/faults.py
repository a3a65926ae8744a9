"""Faults the fake GitHub injects on request, scripted from tests.

```python
fake.faults.add(r"/issues$", "server_error", count=2)          # two 502s, then normal
fake.faults.add(r"/comments", "secondary", retry_after=30)     # 403 + retry-after: 30
fake.faults.add(r".", "slow", delay=0.5, count=None)            # every answer late
fake.faults.add(r"/pulls", "secondary", retry_after=60, delay=0.2)  # a late 403
fake.faults.add(r"/issues$", "primary", status=429)              # out of budget, as a 429
```

Kinds: `server_error` (5xx, `status` default 502), `secondary` (403/429 secondary limit,
`retry-after` when `retry_after` is given), `primary` (403 with `x-ratelimit-remaining:
0`; `status=429` for a 429), `unauthorized` (401 Bad credentials), `slow` (answer as
usual), `drop` (close the connection without an answer), `status` (any `status` with
`message`), `redirect` (`status` default 307 to `location`). Each waits `delay` seconds
first. `count` is how many matching requests the fault hits (None: all).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from ghbot.errors import UsageError

__all__ = ["KINDS", "Fault", "Faults"]

KINDS = frozenset(
    {"server_error", "secondary", "primary", "unauthorized", "slow", "drop", "status", "redirect"}
)


@dataclass(slots=True)
class Fault:
    kind: str
    pattern: re.Pattern[str]
    count: int | None
    method: str | None = None
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    location: str | None = None
    message: str | None = None
    #: How many requests this fault has hit so far.
    hits: int = 0


class Faults:
    """An ordered list of faults; the first that matches a request applies to it."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._faults)

    def __len__(self) -> int:
        return len(self._faults)

    def add(
        self,
        path: str,
        kind: str,
        count: int | None = 1,
        *,
        method: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        delay: float = 0.0,
        location: str | None = None,
        message: str | None = None,
    ) -> Fault:
        """Inject `kind` into requests whose path matches the regex `path` (searched).

        Raises `UsageError` for an unknown kind, a `count` below 1 (None is every
        request) or a redirect without a location.
        """
        if kind not in KINDS:
            raise UsageError(f"unknown fault kind {kind!r}; expected one of {sorted(KINDS)}")
        if count is not None and count < 1:
            raise UsageError(f"a fault's count is None (every request) or 1 or more, not {count}")
        if kind == "redirect" and not location:
            raise UsageError("a redirect fault needs a location")
        fault = Fault(
            kind,
            re.compile(path),
            count,
            method.upper() if method else None,
            status,
            retry_after,
            delay,
            location,
            message,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def discard(self, fault: Fault) -> None:
        """Remove `fault` if it is still listed (a counted one leaves when spent)."""
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults.clear()

    def match(self, method: str, path: str) -> Fault | None:
        """Return the fault for this request and count the hit, or None."""
        with self._lock:
            for fault in self._faults:
                if fault.method not in (None, method) or not fault.pattern.search(path):
                    continue
                fault.hits += 1
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                return fault
        return None
