"""A circuit breaker per installation, as a small state machine over an injected `now`.

Closed: calls go through and outcomes are counted over a sliding window. When at least
`min_calls` outcomes fell in the window and at least `failure_ratio` of them failed,
or the last `min_calls` calls all failed, it opens. (The second rule opens it at the
start of an outage of a busy installation, whose window is full of successes: without
it, its deliveries spent their attempts on the outage and were dead-lettered.) Open:
calls are refused until `open_for` seconds have passed, then it half-opens. Half-open:
calls go through; `close_after` successes in a row close it, any failure opens it again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import StrEnum

from ghbot.errors import CircuitOpen

__all__ = ["CircuitBreaker", "State"]


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


OnChange = Callable[[State, State], None]


class CircuitBreaker:
    """Refuse calls to GitHub for one installation while they keep failing.

    `on_change(old, new)` is called on every state change (for logs and metrics).
    Only failures that say GitHub or the network is unwell should be recorded as
    failures (5xx, timeouts, dropped connections), not 4xx answers.
    """

    __slots__ = (
        "_failing",
        "_opened_at",
        "_outcomes",
        "_state",
        "_streak",
        "close_after",
        "failure_ratio",
        "min_calls",
        "name",
        "on_change",
        "open_for",
        "window",
    )

    def __init__(
        self,
        *,
        window: float = 60.0,
        failure_ratio: float = 0.5,
        min_calls: int = 5,
        open_for: float = 30.0,
        close_after: int = 3,
        on_change: OnChange | None = None,
        name: str = "",
    ) -> None:
        self.window = window
        self.failure_ratio = failure_ratio
        self.min_calls = min_calls
        self.open_for = open_for
        self.close_after = close_after
        self.on_change = on_change
        self.name = name
        self._state = State.CLOSED
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._opened_at = 0.0
        self._streak = 0
        #: Failures in a row while closed.
        self._failing = 0

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, {self._state.value})"

    def state(self, now: float) -> State:
        """Return the state at `now`; an open breaker half-opens once `open_for` has passed."""
        if self._state is State.OPEN and now - self._opened_at >= self.open_for:
            self._move(State.HALF_OPEN)
            self._streak = 0
        return self._state

    def allows(self, now: float) -> bool:
        """Tell whether a call may start at `now`."""
        return self.state(now) is not State.OPEN

    def check(self, now: float) -> None:
        """Raise `CircuitOpen` (with the seconds left) when a call may not start at `now`."""
        if not self.allows(now):
            left = self.open_for - (now - self._opened_at)
            raise CircuitOpen(
                f"circuit {self.name or ''} is open".replace("  ", " "), retry_after=left
            )

    def retry_after(self, now: float) -> float:
        """Return the seconds until calls are allowed again (0 when they are)."""
        if self.state(now) is not State.OPEN:
            return 0.0
        return max(self.open_for - (now - self._opened_at), 0.0)

    def open_until(self, until: float, now: float) -> None:
        """Be open until `until` (what another breaker of the installation said, taken
        over with it); nothing when that has passed or this one is open longer."""
        if until <= now or (self.state(now) is State.OPEN and self.retry_after(now) >= until - now):
            return
        self._open(until - self.open_for)

    def trip(self, now: float) -> None:
        """Open at `now` whatever the state: for a failure that says no call can
        succeed for now (the installation's token could not be had from GitHub)."""
        self._open(now)

    def record_success(self, now: float) -> None:
        """Count a call that worked."""
        state = self.state(now)
        if state is State.HALF_OPEN:
            self._streak += 1
            if self._streak >= self.close_after:
                self._outcomes.clear()
                self._move(State.CLOSED)
            return
        self._failing = 0
        self._add(now, ok=True)

    def record_failure(self, now: float) -> None:
        """Count a call that failed; may open the breaker."""
        state = self.state(now)
        if state is State.HALF_OPEN:
            self._open(now)
            return
        if state is State.OPEN:
            return
        self._add(now, ok=False)
        self._failing += 1
        failures = sum(1 for _, ok in self._outcomes if not ok)
        total = len(self._outcomes)
        ratio = total >= self.min_calls and failures >= self.failure_ratio * total
        if ratio or self._failing >= self.min_calls:
            self._open(now)

    def failure_rate(self, now: float) -> float:
        """Return the share of failed calls in the window (0 when there were none)."""
        self._trim(now)
        if not self._outcomes:
            return 0.0
        return sum(1 for _, ok in self._outcomes if not ok) / len(self._outcomes)

    def _add(self, now: float, *, ok: bool) -> None:
        self._outcomes.append((now, ok))
        self._trim(now)

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        while self._outcomes and self._outcomes[0][0] <= horizon:
            self._outcomes.popleft()

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._streak = self._failing = 0
        self._outcomes.clear()
        self._move(State.OPEN)

    def _move(self, new: State) -> None:
        old, self._state = self._state, new
        if old is not new and self.on_change is not None:
            self.on_change(old, new)
