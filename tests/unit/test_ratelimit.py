"""Rate-limit headers, 403/429 classification, waits, and the leased budget."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ghbot.budget import Budget
from ghbot.errors import ConfigError, LeaseExhausted, RateLimited, UsageError
from ghbot.ratelimit import (
    SECONDARY_MIN_WAIT,
    GitHubClock,
    LimitKind,
    RateLimit,
    classify,
    classify_graphql,
    limits_off,
    retry_wait,
)

NOW = 1_700_000_000.0


def _headers(
    remaining: int, *, limit: int = 5000, reset: float = NOW + 1800, **extra: str
) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(limit),
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-used": str(limit - remaining),
        "x-ratelimit-reset": str(int(reset)),
        "x-ratelimit-resource": "core",
        **extra,
    }


def test_rate_limit_from_headers() -> None:
    limit = RateLimit.from_headers(_headers(4990))
    assert limit == RateLimit(5000, 4990, 10, NOW + 1800, "core")
    assert RateLimit.from_headers({}) is None
    # Without `x-ratelimit-used` and `-resource`: the used count follows, the core one.
    bare = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4990"}
    assert RateLimit.from_headers(bare) == RateLimit(5000, 4990, 10, 0.0, "core")


@pytest.mark.parametrize(
    ("status", "headers", "message", "kind"),
    [
        (403, _headers(0), "API rate limit exceeded for installation ID 1.", LimitKind.PRIMARY),
        (429, _headers(0), "API rate limit exceeded", LimitKind.PRIMARY),
        (
            403,
            _headers(4000) | {"retry-after": "30"},
            "You have exceeded a secondary rate limit.",
            LimitKind.SECONDARY,
        ),
        (429, _headers(4000), "You have exceeded a secondary rate limit", LimitKind.SECONDARY),
        (
            403,
            _headers(4000),
            "You have triggered an abuse detection mechanism.",
            LimitKind.SECONDARY,
        ),
        # A secondary limit can coincide with a spent primary: the message decides.
        (403, _headers(0), "You have exceeded a secondary rate limit.", LimitKind.SECONDARY),
        (429, _headers(4000), "", LimitKind.SECONDARY),
        (403, _headers(4000), "Resource not accessible by integration", LimitKind.FORBIDDEN),
        # A Retry-After on a 403 is a secondary limit whatever the message says.
        (403, _headers(4000) | {"retry-after": "60"}, "Forbidden", LimitKind.SECONDARY),
        (404, _headers(0), "Not Found", None),
        # Headers gone (a proxy dropped them), the message still names a rate limit.
        (403, {}, "API rate limit exceeded for installation ID 1.", LimitKind.SECONDARY),
    ],
)
def test_classify(
    status: int, headers: dict[str, str], message: str, kind: LimitKind | None
) -> None:
    assert classify(status, headers, message) is kind


def test_wait_follows_retry_after_first() -> None:
    assert retry_wait(_headers(0) | {"retry-after": "17"}, NOW) == 17
    # Not a delay (RFC 9110: digits): as if there were none, never a negative wait.
    assert retry_wait({"retry-after": "-5"}, NOW) == SECONDARY_MIN_WAIT


def test_wait_until_reset_when_primary_spent() -> None:
    assert retry_wait(_headers(0, reset=NOW + 120), NOW) == 121


def test_githubs_clock_learns_its_offset_in_whole_seconds() -> None:
    clock = GitHubClock()
    assert clock.now(NOW) == NOW  # no offset known yet
    clock.observe(formatdate(NOW, usegmt=True), NOW + 40.4)  # the local clock 40 s ahead
    assert clock.offset == -40 and clock.now(NOW + 40.4) == NOW + 0.4
    # Within a second of it: kept (a `Date` is rounded down, and comes a trip late).
    clock.observe(formatdate(NOW + 10, usegmt=True), NOW + 51.3)
    clock.observe(formatdate(NOW + 20, usegmt=True), NOW + 59.2)
    assert clock.offset == -40
    clock.observe(formatdate(NOW + 30, usegmt=True), NOW + 35)  # the local clock was set
    assert clock.offset == -5
    clock.observe("not a date", NOW)
    clock.observe(None, NOW)
    assert clock.offset == -5


def test_a_budget_compares_githubs_reset_with_githubs_time() -> None:
    """The local clock 40 s ahead: a window GitHub resets in 30 s is still spent here
    (the local clock passed the reset 10 s ago), and waits 30 s, not 0; a change of the
    offset moves when it reopens, not which window it is in."""
    clock = GitHubClock()
    clock.offset = -40.0
    budget = Budget(clock=clock)
    spent = RateLimit(limit=5000, remaining=0, used=5000, reset=NOW + 30, resource="core")
    budget.observe(spent, NOW + 40)
    assert budget.usable(NOW + 40) == 0 and budget.seconds_to_reset(NOW + 40) == 30
    with pytest.raises(RateLimited) as caught:
        budget.acquire(NOW + 40)
    assert caught.value.retry_after == 30 and caught.value.reset == NOW + 30  # GitHub's
    clock.offset = -42.0  # one slow answer: GitHub's time read 2 s earlier
    budget.observe(spent, NOW + 41)
    assert budget.remaining == 0 and budget.seconds_to_reset(NOW + 41) == 31
    assert budget.usable(NOW + 71) == 0 and budget.usable(NOW + 72) > 0
    assert retry_wait(_headers(0, reset=NOW + 30), clock.now(NOW + 40)) == 33


def test_wait_at_least_a_minute_then_doubles() -> None:
    headers = _headers(10)
    assert retry_wait(headers, NOW, attempt=0) == 60
    assert retry_wait(headers, NOW, attempt=1) == 120
    assert retry_wait(headers, NOW, attempt=2) == 240
    assert retry_wait(headers, NOW, attempt=30) == 3600


def test_budget_keeps_a_margin_and_refuses_with_the_reset() -> None:
    budget = Budget(margin=0.1)
    budget.observe(RateLimit.from_headers(_headers(19, limit=100, reset=NOW + 600)), NOW)
    assert budget.usable(NOW) == 9  # 10 of the window's 100 kept back
    for _ in range(9):
        budget.acquire(NOW)
    with pytest.raises(RateLimited) as caught:
        budget.acquire(NOW)
    assert caught.value.kind == "primary"
    assert caught.value.retry_after == 600
    assert caught.value.reset == NOW + 600


def test_a_budget_spent_before_any_reset_is_known_waits_a_minute_not_no_time() -> None:
    """Spent by a lease its tasks used whole before any answer told the reset: the
    refusal waits a minute (the client asks GitHub then). It said 0 s, and a handler
    refused by it ran again 20 times a second for good: no request went, so no
    answer ever told the reset."""
    budget = Budget()
    lease = budget.lease(4500, NOW)
    budget.settle(lease, 4500, NOW)
    assert not budget.told
    with pytest.raises(RateLimited) as caught:
        budget.acquire(NOW)
    assert (caught.value.retry_after, caught.value.reset, caught.value.reset_after) == (
        60.0,
        None,
        None,
    )
    budget.observe(RateLimit.from_headers(_headers(500, reset=NOW + 600)), NOW)
    assert budget.told
    with pytest.raises(RateLimited) as known:
        budget.acquire(NOW)
    assert known.value.retry_after == known.value.reset_after == 600.0


def test_budget_rolls_over_at_reset() -> None:
    budget = Budget()
    budget.observe(RateLimit.from_headers(_headers(0, reset=NOW + 5)), NOW)
    assert budget.available(NOW) == 0
    assert budget.available(NOW + 5) == 4500


def test_a_refusal_names_the_request_only_when_its_caller_does() -> None:
    budget = Budget(limit=1, margin=0.0)
    budget.acquire(NOW)
    with pytest.raises(RateLimited) as unnamed:
        budget.acquire(NOW)
    assert (unnamed.value.method, unnamed.value.url) == ("", "")
    with pytest.raises(RateLimited) as named:
        budget.acquire(NOW, method="POST", url="https://api.github.com/x")
    assert (named.value.method, named.value.url) == ("POST", "https://api.github.com/x")


def test_an_answer_giving_a_limit_of_0_does_not_empty_the_budget_for_good() -> None:
    """GitHub's limit is never 0; a proxy's or a fake's 0 kept the budget at 0 after
    the reset, and a handler retried its request without end."""
    budget = Budget(margin=0.0)
    budget.observe(RateLimit(limit=0, remaining=0, used=0, reset=2000.0, resource="core"), 1000.0)
    with pytest.raises(RateLimited) as refused:
        budget.acquire(1000.0)
    assert refused.value.retry_after == 1000.0
    budget.acquire(2000.0)  # the window reset: GitHub's last known limit again
    assert budget.remaining == 4999
    # Any limit above 0 is taken, the smallest too.
    budget.observe(RateLimit(limit=1, remaining=0, used=1, reset=3000.0, resource="core"), 2000.0)
    assert budget.available(3000.0) == 1


def test_out_of_order_answers_keep_the_lowest_count() -> None:
    budget = Budget(margin=0.0)
    budget.observe(RateLimit.from_headers(_headers(100)), NOW)
    budget.observe(RateLimit.from_headers(_headers(104)), NOW)
    assert budget.remaining == 100
    budget.observe(RateLimit.from_headers(_headers(5000, reset=NOW + 5000)), NOW)
    assert budget.remaining == 5000
    # A request sent before the window rolled, answered after one sent after it: its
    # count (of the window past) used to cap the new hour's, near the margin for good.
    budget.observe(RateLimit.from_headers(_headers(600)), NOW)
    assert budget.remaining == 5000
    budget.observe(RateLimit.from_headers(_headers(4990, reset=NOW + 5000)), NOW)
    assert budget.remaining == 4990
    # Past that reset the window rolls (reset unknown): a late answer of the window
    # that ended is still not this one's.
    later = NOW + 5001
    assert budget.usable(later) == 5000
    budget.observe(RateLimit.from_headers(_headers(3, reset=NOW + 5000)), later)
    assert (budget.remaining, budget.reset) == (5000, 0.0)  # not taken for a new window


def test_other_resources_do_not_touch_the_core_budget() -> None:
    budget = Budget(margin=0.0)
    headers = _headers(3) | {"x-ratelimit-resource": "search"}
    budget.observe(RateLimit.from_headers(headers), NOW)
    assert budget.remaining == 5000


def test_leases_are_pessimistic_and_give_back_what_was_not_spent() -> None:
    budget = Budget(margin=0.1)
    budget.observe(RateLimit.from_headers(_headers(100, limit=100)), NOW)  # 90 usable
    lease = budget.lease(60, NOW)
    with pytest.raises(RateLimited):
        budget.lease(31, NOW)
    other = budget.lease(30, NOW)
    with pytest.raises(RateLimited):
        budget.acquire(NOW)
    for _ in range(10):
        budget.spend(lease)
    assert budget.release(lease) == 50
    assert budget.release(lease) == 0
    with pytest.raises(LeaseExhausted, match="used up"):  # not GitHub's limit: no wait
        budget.spend(lease)
    assert not issubclass(LeaseExhausted, RateLimited)
    budget.release(other)
    assert budget.reserved == 0
    assert budget.remaining == 90
    with pytest.raises(UsageError, match="negative"):
        budget.lease(-1, NOW)


def test_a_refund_after_its_lease_closed_goes_to_the_budget_only() -> None:
    budget = Budget(margin=0.0)
    budget.observe(RateLimit.from_headers(_headers(100)), NOW)
    lease = budget.lease(5, NOW)
    budget.spend(lease)
    budget.release(lease)
    budget.refund(lease)  # a 304 answered after the lease's task ended
    assert (lease.used, budget.reserved, budget.remaining) == (1, 0, 100)


def test_a_settled_lease_counts_what_answers_showed_of_it_once() -> None:
    budget = Budget(margin=0.0)
    budget.observe(RateLimit.from_headers(_headers(100)), NOW)
    lease = budget.lease(20, NOW)
    budget.acquire(NOW)  # the installation's own request: 99 here
    budget.observe(RateLimit.from_headers(_headers(93)), NOW)  # and 6 of the lease's
    other = budget.lease(5, NOW)
    budget.settle(other, 5, NOW)  # another lease's, none shown: 88
    budget.settle(lease, 15, NOW)  # 100 - 1 - 5 - 15, not 88 - 15
    assert (budget.remaining, budget.reserved, lease.used, lease.open) == (79, 0, 15, False)
    budget.settle(lease, 15, NOW)  # closed: nothing more
    assert budget.remaining == 79
    # A lease granted in one window and settled in the next: its requests may have
    # been counted in either, so all are taken from the new one.
    late = budget.lease(10, NOW)
    budget.observe(RateLimit.from_headers(_headers(5000, reset=NOW + 5400)), NOW + 1900)
    budget.settle(late, 4, NOW + 1900)
    assert (budget.remaining, budget.reserved) == (4996, 0)


@pytest.mark.parametrize("margin", [-0.1, 0.6])
def test_margin_outside_range_is_refused(margin: float) -> None:
    with pytest.raises(ConfigError):
        Budget(margin=margin)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("lease"), st.integers(0, 40)),
        st.tuples(st.just("acquire"), st.just(1)),
        st.tuples(st.just("spend"), st.integers(0, 9)),
        st.tuples(st.just("release"), st.integers(0, 9)),
        st.tuples(st.just("observe"), st.integers(0, 200)),
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(margin=st.floats(0.0, 0.5), start=st.integers(0, 200), steps=ops)
def test_granted_leases_never_exceed_remaining_less_margin(
    margin: float, start: int, steps: list[tuple[str, int]]
) -> None:
    budget = Budget(margin=margin)
    budget.observe(RateLimit.from_headers(_headers(start)), NOW)
    leases = []
    for op, n in steps:
        try:
            if op == "lease":
                leases.append(budget.lease(n, NOW))
                outstanding = sum(lease.unused for lease in leases if lease.open)
                assert outstanding <= budget.remaining * (1 - margin) + 1e-9
            elif op == "acquire":
                budget.acquire(NOW)
            elif op == "spend" and leases:
                budget.spend(leases[n % len(leases)])
            elif op == "release" and leases:
                budget.release(leases[n % len(leases)])
            elif op == "observe":
                budget.observe(RateLimit.from_headers(_headers(n)), NOW)
        except (RateLimited, LeaseExhausted):
            pass
        assert budget.reserved == sum(lease.unused for lease in leases if lease.open)
        assert budget.reserved >= 0


def test_a_lease_that_does_not_fit_says_what_is_left_and_what_was_wanted() -> None:
    budget = Budget()
    # Before GitHub has told the limit (5,000 assumed: an Enterprise installation has
    # 15,000), a lease above 4,500 waits a minute for an answer to tell it.
    with pytest.raises(RateLimited, match="as far as known") as unknown:
        budget.lease(4501, 0.0)
    assert unknown.value.retry_after == 60.0
    budget.observe(RateLimit.from_headers(_headers(5000, reset=3600.0)), 0.0)
    budget.acquire(0.0)
    with pytest.raises(RateLimited) as caught:
        budget.lease(4500, 0.0)  # 5,000 less the 10 % margin is 4,500, one spent
    assert str(caught.value) == (
        "429 the installation's budget is spent (4999 left, 0 leased, margin 10%; wanted 4500)"
    )
    # More than a whole window gives: never, whatever the wait (a handler waited for
    # the reset, then reran every 0.05 s, uncounted, once the window rolled).
    with pytest.raises(
        UsageError,
        match=r"a lease of 4501 requests never fits: .* 5000 an hour, 4500 of them above",
    ):
        budget.lease(4501, 0.0)
    # A lease is no request: no method or URL to name.
    assert (caught.value.kind, caught.value.method, caught.value.url) == ("primary", "", "")
    with pytest.raises(UsageError) as negative:
        budget.lease(-1, 0.0)
    assert str(negative.value) == "a lease cannot be negative"


def test_a_spent_budget_whose_reset_has_passed_waits_one_second() -> None:
    spent = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "100"}
    assert retry_wait(spent, 200.0) == 1.0
    assert retry_wait({}, 0.0) == SECONDARY_MIN_WAIT  # the first wait, by default


def test_a_request_the_spent_budget_refuses_names_itself() -> None:
    budget = Budget(margin=0.0)
    budget.observe(RateLimit(limit=5000, remaining=0, used=5000, reset=900.0, resource="core"), 0.0)
    with pytest.raises(RateLimited) as caught:
        budget.acquire(0.0, method="GET", url="https://api.github.com/repos/o/r")
    refused = caught.value
    assert (refused.status, refused.method, refused.url) == (
        429,
        "GET",
        "https://api.github.com/repos/o/r",
    )
    assert str(refused) == (
        "429 the installation's budget is spent (0 left, 0 leased, margin 0%; wanted 1) "
        "(GET https://api.github.com/repos/o/r)"
    )
    assert (refused.retry_after, refused.reset) == (900.0, 900.0)


def test_headers_without_a_limit_or_without_a_count_are_no_rate_limit() -> None:
    assert RateLimit.from_headers({"x-ratelimit-remaining": "5"}) is None
    assert RateLimit.from_headers({"x-ratelimit-limit": "5000"}) is None
    # A count not written in ASCII digits is no count (`ghbot.digits`): `int` took these.
    for odd in ("+5", "\u0665", "5_0"):
        assert (
            RateLimit.from_headers({"x-ratelimit-limit": "5000", "x-ratelimit-remaining": odd})
            is None
        )


def test_a_refund_gives_a_lease_back_only_a_unit_it_spent() -> None:
    budget = Budget()
    lease = budget.lease(2, 0.0)
    budget.refund(lease)  # nothing spent under it yet
    assert (lease.used, lease.unused) == (0, 2)


def test_used_is_github_s_count_when_it_sends_one() -> None:
    headers = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4990"}
    assert RateLimit.from_headers(headers | {"x-ratelimit-used": "7"}).used == 7  # type: ignore[union-attr]
    assert RateLimit.from_headers(headers).used == 10  # type: ignore[union-attr]
    over = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "5001"}
    assert RateLimit.from_headers(over).used == 0  # type: ignore[union-attr]


def test_what_only_open_leases_hold_back_waits_seconds_not_the_reset() -> None:
    """An open lease's units may come back any moment (settled, or released unused):
    a request they keep out waits 10 s, then is tried again. It waited for the
    window's reset, up to an hour, though the lease was settled seconds later."""
    budget = Budget(margin=0.1)
    budget.observe(RateLimit.from_headers(_headers(100, limit=100, reset=NOW + 3000)), NOW)
    lease = budget.lease(90, NOW)  # all 90 usable
    with pytest.raises(RateLimited, match="waiting 10 s for open leases") as caught:
        budget.acquire(NOW, method="GET", url="/x")
    assert caught.value.retry_after == 10.0
    with pytest.raises(RateLimited) as other_lease:
        budget.lease(5, NOW)
    assert other_lease.value.retry_after == 10.0
    budget.settle(lease, 20, NOW + 5)
    budget.acquire(NOW + 10)  # what the lease did not use is back
    # Spent, not leased: the wait is the window's reset.
    for _ in range(budget.available(NOW + 10)):
        budget.acquire(NOW + 10)
    with pytest.raises(RateLimited) as spent:
        budget.acquire(NOW + 10)
    assert spent.value.retry_after == pytest.approx(2990.0)
    assert "open leases" not in str(spent.value)


def test_a_success_without_rate_limit_headers_stops_the_budget_counting_until_they_return() -> None:
    """GHES with rate limits off answers without `x-ratelimit-*` headers: the budget,
    spent by a settled lease, no longer refuses; leases of any size fit and settle
    taking nothing. It refused a minute at a time for good, since no answer ever told
    it a reset. An answer with the headers again is counted from."""
    budget = Budget(margin=0.1)
    budget.observe(RateLimit.from_headers(_headers(600, reset=NOW + 600)), NOW)
    budget.settle(budget.lease(100, NOW), 100, NOW)  # 500 left: the margin
    with pytest.raises(RateLimited):
        budget.acquire(NOW)
    budget.observe(None, NOW, status=200)
    assert not budget.metered and "unmetered" in repr(budget)
    for _ in range(1000):
        budget.acquire(NOW)
    whole = budget.lease(10_000, NOW)  # more than any window: no window to fit
    budget.spend(whole)
    budget.refund(whole)  # its answer, without the headers: back to the lease only
    budget.settle(whole, 10_000, NOW)
    open_lease = budget.lease(40, NOW)
    assert (budget.reserved, whole.used, whole.open) == (40, 10_000, False)
    budget.observe(RateLimit.from_headers(_headers(4000, reset=NOW + 1200)), NOW)
    assert budget.metered and (budget.remaining, budget.reset) == (4000, NOW + 1200)
    assert budget.available(NOW) == 4000 - 500 - 40  # the open lease is still held
    budget.settle(open_lease, 30, NOW)  # granted unmetered: taken whole
    assert (budget.remaining, budget.reserved) == (3970, 0)


@pytest.mark.parametrize("status", [None, 304, 401, 404, 429, 500, 502, 503])
def test_an_answer_without_rate_limit_headers_that_is_no_success_says_nothing(
    status: int | None,
) -> None:
    """A proxy's 502 or 503, or an error of github.com's that lacks the headers, is no
    sign that GitHub stopped metering; nor is a `GET /rate_limit` body without the
    budget's numbers (no `status`)."""
    budget = Budget(margin=0.1)
    budget.settle(budget.lease(4500, NOW), 4500, NOW)
    budget.observe(None, NOW, status=status)
    assert budget.metered
    with pytest.raises(RateLimited):
        budget.acquire(NOW)


def test_only_ghes_saying_rate_limiting_is_off_says_it_meters_nothing() -> None:
    """GHES with rate limiting off answers `GET /rate_limit` 404 "Rate limiting is not
    enabled."; a 404 of a server without the endpoint, or another error, says nothing."""
    assert limits_off(404, "Rate limiting is not enabled.")
    assert limits_off(404, "rate limiting is not enabled")
    assert not limits_off(404, "Not Found")
    assert not limits_off(403, "Rate limiting is not enabled.")
    budget = Budget()
    budget.unmeter()
    assert not budget.metered
    budget.acquire(NOW)
    assert budget.remaining == 5000


def test_rate_limit_from_a_rate_limit_answers_body() -> None:
    """`GET /rate_limit` tells every resource's numbers in its body."""
    body = {
        "resources": {
            "core": {"limit": 15000, "remaining": 14000, "used": 1000, "reset": NOW + 60},
            "graphql": {"limit": 5000, "remaining": 5000, "reset": NOW + 3600},
        }
    }
    assert RateLimit.from_body(body, "core") == RateLimit(15000, 14000, 1000, NOW + 60, "core")
    assert RateLimit.from_body(body, "graphql") == RateLimit(5000, 5000, 0, NOW + 3600, "graphql")
    assert RateLimit.from_body(body, "search") is None
    assert RateLimit.from_body({"message": "Rate limiting is not enabled."}, "core") is None
    assert RateLimit.from_body({"resources": {"core": {"limit": "x"}}}, "core") is None


@pytest.mark.parametrize(
    ("message", "headers", "kind"),
    [
        ("You have exceeded a secondary rate limit.", {"x-ratelimit-remaining": "9"}, "secondary"),
        ("was submitted too quickly", {"retry-after": "30"}, "secondary"),
        ("You have exceeded a limit", {"x-ratelimit-remaining": "0"}, "primary"),
        ("API rate limit already exceeded for ID 1.", {"x-ratelimit-remaining": "4"}, "primary"),
        ("You have exceeded a limit", {"x-ratelimit-remaining": "4000"}, "secondary"),
    ],
)
def test_a_graphql_rate_limit_is_classified_by_its_headers_and_message(
    message: str, headers: dict[str, str], kind: str
) -> None:
    assert classify_graphql(headers, message) == kind
