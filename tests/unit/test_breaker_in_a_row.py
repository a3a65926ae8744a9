"""The breaker opens on `min_calls` failures in a row, even with a window full of
successes (the start of an outage of a busy installation; tests/faults/
test_github_faults.py shows what it costs otherwise: dead letters)."""

from __future__ import annotations

from ghbot.breaker import CircuitBreaker, State


def test_failures_in_a_row_open_it_whatever_the_window_holds() -> None:
    breaker = CircuitBreaker(min_calls=5)
    for t in range(40):
        breaker.record_success(t)
    for t in range(40, 44):
        breaker.record_failure(t)
    assert breaker.state(44) is State.CLOSED  # 4 of 44: under the ratio, 4 in a row
    breaker.record_failure(44)
    assert breaker.state(44) is State.OPEN


def test_a_success_breaks_the_row() -> None:
    breaker = CircuitBreaker(min_calls=5)
    for t in range(20):
        breaker.record_success(t)
    for t in range(20, 24):
        breaker.record_failure(t)
    breaker.record_success(24)
    for t in range(25, 29):
        breaker.record_failure(t)
    assert breaker.state(29) is State.CLOSED  # 8 of 29 failed, never 5 in a row


def test_the_row_starts_again_after_the_breaker_closes() -> None:
    breaker = CircuitBreaker(min_calls=5, open_for=30, close_after=1)
    for t in range(5):
        breaker.record_failure(t)
    assert breaker.state(5) is State.OPEN
    breaker.record_success(40)  # half-open, then closed
    assert breaker.state(40) is State.CLOSED
    for t in range(41, 45):
        breaker.record_failure(t)
    assert breaker.state(45) is State.CLOSED  # the row before it opened does not count
    breaker.record_failure(45)
    assert breaker.state(45) is State.OPEN
