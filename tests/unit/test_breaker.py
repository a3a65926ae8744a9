"""The circuit breaker as a state machine over an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghbot.breaker import CircuitBreaker, State
from ghbot.errors import CircuitOpen


def test_opens_when_half_the_calls_in_the_window_failed() -> None:
    changes: list[tuple[State, State]] = []
    breaker = CircuitBreaker(min_calls=4, on_change=lambda a, b: changes.append((a, b)))
    breaker.record_success(0)
    breaker.record_success(1)
    breaker.record_failure(2)
    assert breaker.state(2) is State.CLOSED  # 3 calls: under the minimum
    breaker.record_failure(3)
    assert breaker.state(3) is State.OPEN
    assert changes == [(State.CLOSED, State.OPEN)]


def test_needs_a_minimum_number_of_calls() -> None:
    breaker = CircuitBreaker(min_calls=5)
    for t in range(4):
        breaker.record_failure(t)
    assert breaker.state(4) is State.CLOSED


def test_old_outcomes_leave_the_window() -> None:
    breaker = CircuitBreaker(min_calls=4, window=60)
    for t in range(3):
        breaker.record_failure(t)
    for t in range(61, 65):
        breaker.record_success(t)
    breaker.record_failure(66)
    assert breaker.state(66) is State.CLOSED
    assert breaker.failure_rate(66) == pytest.approx(1 / 5)


def test_an_outcome_a_full_window_old_has_left_it() -> None:
    breaker = CircuitBreaker(window=60)
    breaker.record_failure(0)
    assert breaker.failure_rate(59.5) == 1.0
    assert breaker.failure_rate(60) == 0.0  # asked without a call since: still trimmed


def test_a_call_failing_after_the_breaker_opened_does_not_keep_it_open_longer() -> None:
    """A call that began before the breaker opened may fail after: the breaker stays
    open for its `open_for` from when it opened. A state change is said once."""
    changes: list[tuple[State, State]] = []
    breaker = CircuitBreaker(min_calls=2, on_change=lambda a, b: changes.append((a, b)))
    breaker.record_failure(0)
    breaker.record_failure(1)
    assert breaker.retry_after(1) == 30
    breaker.record_failure(10)  # the late ones: as many as opened it
    breaker.record_failure(11)
    assert breaker.retry_after(11) == 20
    # Open longer, taken over from another breaker: still open, so no change is said.
    breaker.open_until(45, now=11)
    assert breaker.retry_after(11) == 34
    assert changes == [(State.CLOSED, State.OPEN)]


def test_open_refuses_then_half_opens_after_30s_and_closes_after_3_successes() -> None:
    changes: list[tuple[State, State]] = []
    breaker = CircuitBreaker(min_calls=1, on_change=lambda a, b: changes.append((a, b)))
    breaker.record_failure(100)
    with pytest.raises(CircuitOpen) as caught:
        breaker.check(110)
    assert caught.value.retry_after == pytest.approx(20)
    assert breaker.retry_after(110) == pytest.approx(20)
    assert breaker.allows(130)
    assert breaker.state(130) is State.HALF_OPEN
    breaker.record_success(131)
    breaker.record_success(132)
    assert breaker.state(132) is State.HALF_OPEN
    breaker.record_success(133)
    assert breaker.state(133) is State.CLOSED
    assert changes == [
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.CLOSED),
    ]


def test_a_failure_while_half_open_opens_again() -> None:
    breaker = CircuitBreaker(min_calls=1)
    breaker.record_failure(0)
    assert breaker.state(30) is State.HALF_OPEN
    breaker.record_success(31)
    breaker.record_failure(32)
    assert breaker.state(32) is State.OPEN
    assert not breaker.allows(61)
    assert breaker.allows(62)


@given(
    st.lists(st.tuples(st.floats(0, 5, allow_nan=False), st.booleans()), min_size=1, max_size=80)
)
def test_invariants_hold_for_any_sequence(steps: list[tuple[float, bool]]) -> None:
    breaker = CircuitBreaker(min_calls=5)
    now = 0.0
    for gap, ok in steps:
        now += gap
        before = breaker.state(now)
        rate = breaker.failure_rate(now)
        if ok:
            breaker.record_success(now)
        else:
            breaker.record_failure(now)
        after = breaker.state(now)
        # A success never opens it; it only opens from closed on a failure at >= 50 %.
        if ok:
            assert after is not State.OPEN or before is State.OPEN
        if before is State.CLOSED and after is State.OPEN:
            assert not ok
            assert rate >= 0.0
        # While open, calls are refused until 30 s have passed.
        if after is State.OPEN:
            assert not breaker.allows(now)
            assert breaker.retry_after(now) <= 30.0


def test_open_until_takes_over_another_breaker_s_open_state_without_shortening_its_own() -> None:
    breaker = CircuitBreaker(open_for=30.0)
    breaker.open_until(100.0, now=110.0)  # passed: nothing
    assert breaker.state(110.0) is State.CLOSED
    breaker.open_until(120.0, now=110.0)
    assert breaker.state(110.0) is State.OPEN and breaker.retry_after(110.0) == 10.0
    breaker.open_until(115.0, now=111.0)  # it is open longer already
    assert breaker.retry_after(111.0) == 9.0
    breaker.open_until(125.0, now=111.0)
    assert breaker.retry_after(111.0) == 14.0
    assert breaker.state(125.0) is State.HALF_OPEN


def test_by_default_five_failures_in_a_row_open_it_for_30_s() -> None:
    """docs/architecture.md: "when at least half of its recent calls fail, or five in
    a row"."""
    breaker = CircuitBreaker()
    for second in range(20):
        breaker.record_success(float(second))
    for second in range(20, 24):
        breaker.record_failure(float(second))
    assert breaker.state(24.0) is State.CLOSED
    breaker.record_failure(24.0)
    assert breaker.state(24.0) is State.OPEN
    assert breaker.retry_after(53.5) == 0.5  # the seconds left, not rounded up
    assert breaker.state(54.0) is State.HALF_OPEN


def test_by_default_the_window_is_a_minute() -> None:
    breaker = CircuitBreaker()
    breaker.record_failure(0.0)
    assert breaker.failure_rate(59.9) == 1.0
    assert breaker.failure_rate(60.0) == 0.0


def test_an_open_circuit_names_itself_in_its_error() -> None:
    for name, message in [
        ("installation 5", "circuit installation 5 is open"),
        ("", "circuit is open"),
    ]:
        breaker = CircuitBreaker(name=name, min_calls=1)
        breaker.record_failure(0.0)
        with pytest.raises(CircuitOpen) as caught:
            breaker.check(10.0)
        assert str(caught.value) == message and caught.value.retry_after == 20.0
        assert repr(breaker) == f"CircuitBreaker({name!r}, open)"
    assert repr(CircuitBreaker()) == "CircuitBreaker('', closed)"  # unnamed by default


def test_taking_over_an_open_state_that_already_ended_changes_nothing() -> None:
    changes: list[tuple[State, State]] = []
    breaker = CircuitBreaker(on_change=lambda old, new: changes.append((old, new)))
    breaker.open_until(100.0, 100.0)
    breaker.open_until(99.0, 100.0)
    assert breaker.state(100.0) is State.CLOSED and changes == []
