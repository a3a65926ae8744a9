"""The client's metrics, driven through the fake GitHub: JWTs, tokens, requests, limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ghbot.auth import AppAuth
from ghbot.client import ClientOptions, GitHub, GitHubApp, InstallationTokens
from ghbot.errors import (
    ConfigError,
    ConnectionFailed,
    InstallationUnavailable,
    NotFound,
    RateLimited,
    Unauthorized,
)
from ghbot.retry import RetryPolicy
from ghbot.testing import FakeClock, FakeGitHub
from tests.metering import assert_bounded, metered

from .conftest import REPO

ISSUE = f"/repos/{REPO}/issues/1"


async def test_a_first_request_signs_a_jwt_exchanges_a_token_and_counts_requests(
    fake: FakeGitHub, app: GitHubApp
) -> None:
    m = metered()
    gh = app.installation(1)
    await gh.request("GET", f"/repos/{REPO}")
    await gh.request("GET", f"/repos/{REPO}")
    with pytest.raises(NotFound):
        await gh.request("GET", "/repos/octo-org/missing")

    assert m.count("ghbot_jwt_generated_total") == 1
    assert m.delta("ghbot_token_requests_total") == {frozenset({("outcome", "ok")}): 1}
    assert m.count("ghbot_token_cache_lookups_total", result="miss") == 1
    assert m.count("ghbot_token_cache_lookups_total", result="hit") == 2
    assert m.delta("ghbot_token_refreshes_total") == {}
    # The second GET was conditional (its ETag): a 304.
    assert m.count("ghbot_api_requests_total", method="GET", status_class="2xx") == 1
    assert m.count("ghbot_api_requests_total", method="GET", status_class="3xx") == 1
    assert m.count("ghbot_api_requests_total", method="GET", status_class="4xx") == 1
    assert m.count("ghbot_api_requests_total", method="POST", status_class="2xx") == 1
    assert m.count("ghbot_api_request_duration_seconds", method="GET") == 3
    assert 0 < m.seconds("ghbot_api_request_duration_seconds", method="GET") < 5
    assert m.delta("ghbot_api_retries_total") == {}


async def test_rate_limit_gauges_hold_the_lowest_ratio_of_the_window_per_resource(
    fake: FakeGitHub, app: GitHubApp, clock: FakeClock
) -> None:
    m = metered()
    fake.set_rate_limit(1, 1000)
    fake.set_rate_limit(2, 4000)
    await app.installation(2).request("GET", "/repos/acme/widgets")
    await app.installation(1).request("GET", f"/repos/{REPO}")
    await app.installation(2).request("GET", "/repos/acme/widgets")

    [(labels, ratio)] = m.delta("ghbot_rate_limit_remaining_ratio").items()
    assert labels == frozenset({("resource", "core")})
    # Installation 1's answer left 999 of 5,000: the lowest, whatever came after it.
    assert ratio == pytest.approx(999 / 5000)
    [reset] = m.delta("ghbot_rate_limit_reset_seconds").values()
    assert 0 < reset <= 3600


@pytest.mark.parametrize("limit", [5000, 5050])
async def test_requests_sent_until_refused_leave_the_ratio_at_the_margin_the_alert_holds_at(
    public_pem: bytes, clock: FakeClock, options: ClientOptions, limit: int
) -> None:
    """docs/operations.md, GhbotRateLimitLow: ghbot spends a window down to
    `RATE_LIMIT_MARGIN` (0.1) of the limit and no further, so the gauge the alert reads
    sits at exactly 10 % (`<= 0.10` holds there), also for a limit of 5,050."""
    async with FakeGitHub(
        app_id=1, public_key_pem=public_pem, clock=clock, rate_limit=limit
    ) as fake:
        fake.add_installation(1, "octo-org", ["hello-world"])
        gh = GitHub(
            token=fake.create_token(1), options=options.replace(base_url=fake.url, etags=None)
        )
        m = metered()
        fake.set_rate_limit(1, limit // 10 + 20)  # most of the window already spent
        sent = 0
        with pytest.raises(RateLimited):
            for _ in range(100):
                await gh.request("GET", f"/repos/{REPO}")
                sent += 1
        assert sent == 20 and fake.rate_limit(1) == limit // 10
        ratios = m.delta("ghbot_rate_limit_remaining_ratio")
        assert ratios == {frozenset({("resource", "core")}): 0.1}
        assert ratios[frozenset({("resource", "core")})] <= 0.10


async def test_a_token_refused_mid_life_is_refreshed_reactively(
    fake: FakeGitHub, clock: FakeClock, installation: GitHub
) -> None:
    await installation.request("GET", f"/repos/{REPO}")
    clock.advance(60)
    m = metered()
    fake.faults.add("/issues/1$", "unauthorized")
    assert (await installation.request("GET", ISSUE)).status == 200

    assert m.delta("ghbot_auth_failures_total") == {frozenset({("type", "bad_credentials")}): 1}
    assert m.delta("ghbot_token_refreshes_total") == {frozenset({("kind", "reactive")}): 1}
    assert m.count("ghbot_token_requests_total", outcome="ok") == 1
    assert m.delta("ghbot_api_retries_total") == {frozenset({("reason", "auth")}): 1}
    assert m.count("ghbot_api_requests_total", method="GET", status_class="4xx") == 1


async def test_a_token_near_its_expiry_is_refreshed_proactively(
    fake: FakeGitHub, clock: FakeClock, installation: GitHub
) -> None:
    await installation.request("GET", f"/repos/{REPO}")
    clock.advance(3600 - 200)  # inside the five minutes before expiry
    m = metered()
    await installation.request("GET", f"/repos/{REPO}")
    assert m.delta("ghbot_token_refreshes_total") == {frozenset({("kind", "proactive")}): 1}
    assert m.count("ghbot_token_cache_lookups_total", result="miss") == 1


async def test_a_401_on_a_fresh_token_is_propagation(
    fake: FakeGitHub, clock: FakeClock, installation: GitHub
) -> None:
    m = metered()
    fake.faults.add("/issues/1$", "unauthorized", count=1)
    assert (await installation.request("GET", ISSUE)).status == 200
    assert m.delta("ghbot_auth_failures_total") == {frozenset({("type", "propagation")}): 1}
    assert m.delta("ghbot_token_refreshes_total") == {}


async def test_a_failed_token_exchange_counts_as_an_error(fake: FakeGitHub, app: GitHubApp) -> None:
    m = metered()
    with pytest.raises(InstallationUnavailable):  # GitHub's 404: no such installation
        await app.installation(404).request("GET", f"/repos/{REPO}")
    assert m.delta("ghbot_token_requests_total") == {frozenset({("outcome", "error")}): 1}


async def test_jwt_failures_by_reason(
    fake: FakeGitHub, clock: FakeClock, pem_pkcs8: bytes, options: ClientOptions
) -> None:
    m = metered()
    skewed = AppAuth(1, pem_pkcs8, clock=lambda: clock() + 1200)
    assert (await GitHubApp(skewed, options=options).gh.request("GET", "/app")).status == 200
    with pytest.raises(Unauthorized):
        await GitHubApp(AppAuth(99, pem_pkcs8), options=options).gh.request("GET", "/app")
    with pytest.raises(ConfigError):
        AppAuth(1, "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----")
    rotated = AppAuth(1, pem_pkcs8)
    with pytest.raises(ConfigError):  # a rotated key file that is not a key: the old kept
        rotated.use_key("-----BEGIN PRIVATE KEY-----\nnot a key either\n-----END PRIVATE KEY-----")
    assert rotated.public_key_pem() == AppAuth(1, pem_pkcs8).public_key_pem()

    assert m.delta("ghbot_jwt_failures_total") == {
        frozenset({("reason", "clock_skew")}): 1,
        frozenset({("reason", "refused")}): 1,
        frozenset({("reason", "invalid_key")}): 2,
    }
    assert m.delta("ghbot_auth_failures_total") == {
        frozenset({("type", "clock_skew")}): 1,
        frozenset({("type", "bad_credentials")}): 1,
        frozenset({("type", "invalid_key")}): 2,
    }
    # The skewed app signed twice (before and after the Date header), the stranger once.
    assert m.count("ghbot_jwt_generated_total") == 3


async def test_retries_by_reason_and_network_failures(
    fake: FakeGitHub,
    clock: FakeClock,
    options: ClientOptions,
    token_client: Callable[..., GitHub],
) -> None:
    m = metered()
    fake.faults.add("/issues/1$", "server_error", count=2)
    fake.faults.add("/hello-world$", "drop", count=1)
    fake.faults.add("/comments$", "secondary", retry_after=3, count=1)
    gh = token_client()
    await gh.request("GET", ISSUE)
    await gh.request("GET", f"/repos/{REPO}")
    await gh.request("POST", f"{ISSUE}/comments", json={"body": "hi"})
    closed = GitHub(
        token="ghs_x",
        options=options.replace(base_url="http://127.0.0.1:9", retry=RetryPolicy(max_retries=0)),
    )
    with pytest.raises(ConnectionFailed):
        await closed.request("GET", "/")

    retries = m.delta("ghbot_api_retries_total")
    assert retries[frozenset({("reason", "server_error")})] == 2
    assert retries[frozenset({("reason", "secondary_rate_limit")})] == 1
    # aiohttp itself resends once on a dropped keep-alive connection, so 0 or 1 here.
    assert set(retries) <= {
        frozenset({("reason", r)}) for r in ("server_error", "secondary_rate_limit", "network")
    }
    assert m.count("ghbot_secondary_rate_limits_total") == 1
    assert m.count("ghbot_api_requests_total", method="GET", status_class="5xx") == 2
    assert m.count("ghbot_api_requests_total", method="GET", status_class="network") >= 1
    assert m.count("ghbot_api_requests_total", method="POST", status_class="4xx") == 1
    assert m.count("ghbot_api_requests_total", method="POST", status_class="2xx") == 1


async def test_a_primary_limit_beyond_the_wait_is_not_a_secondary_one(
    fake: FakeGitHub, options: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    m = metered()
    fake.faults.add("/issues/1$", "primary", count=None)
    gh = token_client(options=options.replace(max_rate_limit_wait=0.0))
    with pytest.raises(RateLimited):
        await gh.request("GET", ISSUE)
    assert m.count("ghbot_secondary_rate_limits_total") == 0
    assert m.count("ghbot_api_requests_total", method="GET", status_class="4xx") == 1


async def test_a_cache_with_an_outside_mint_counts_lookups_only(clock: FakeClock) -> None:
    from ghbot.auth import InstallationToken

    async def mint(installation_id: int) -> InstallationToken:
        return InstallationToken("ghs_" + "x" * 36, clock() + 3600, minted_at=clock())

    m = metered()
    tokens = InstallationTokens(mint, clock=clock)
    await tokens.get(7)
    await tokens.get(7)
    await tokens.get(7, force=True)  # fresh: the same token, a hit
    assert m.count("ghbot_token_cache_lookups_total", result="miss") == 1
    assert m.count("ghbot_token_cache_lookups_total", result="hit") == 2
    # Token requests are counted where the exchange with GitHub happens (GitHubApp).
    assert m.delta("ghbot_token_requests_total") == {}


async def test_a_lookup_waiting_for_an_exchange_in_flight_counts_as_a_miss(
    clock: FakeClock,
) -> None:
    """docs/operations.md, token cache hit rate: two lookups while one exchange is in
    flight are two misses, and one exchange."""
    from ghbot.auth import InstallationToken

    release = asyncio.Event()
    exchanges = 0

    async def mint(installation_id: int) -> InstallationToken:
        nonlocal exchanges
        exchanges += 1
        await release.wait()
        return InstallationToken("ghs_" + "x" * 36, clock() + 3600, minted_at=clock())

    m = metered()
    tokens = InstallationTokens(mint, clock=clock)
    lookups = asyncio.gather(tokens.get(7), tokens.get(7))
    for _ in range(5):
        await asyncio.sleep(0)  # both lookups are made before the exchange ends
    assert m.count("ghbot_token_cache_lookups_total", result="miss") == 2
    release.set()
    first, second = await lookups
    assert first is second
    assert exchanges == 1 == tokens.minted
    assert m.count("ghbot_token_cache_lookups_total", result="miss") == 2
    assert m.count("ghbot_token_cache_lookups_total", result="hit") == 0
    await tokens.get(7)
    assert m.count("ghbot_token_cache_lookups_total", result="hit") == 1


async def test_every_label_recorded_is_bounded(
    fake: FakeGitHub, app: GitHubApp, token_client: Callable[..., GitHub]
) -> None:
    metered()
    fake.faults.add("/issues/1$", "server_error", count=1)
    await app.installation(1).request("GET", ISSUE)
    await token_client(2).request("GET", "/repos/acme/widgets")
    assert_bounded()


async def test_a_token_exchanges_time_counts_its_retries(fake: FakeGitHub, app: GitHubApp) -> None:
    """`ghbot_token_request_duration_seconds`: one exchange, retries included."""
    m = metered()
    fake.faults.add("/access_tokens$", "server_error", 1)  # refused once, then sent again
    fake.faults.add("/access_tokens$", "slow", 1, delay=0.2)  # and that one answers slowly
    await app.create_installation_token(1)
    assert m.count("ghbot_token_request_duration_seconds") == 1
    assert m.seconds("ghbot_token_request_duration_seconds") >= 0.2
    assert m.count("ghbot_token_requests_total", outcome="ok") == 1
    assert m.count("ghbot_api_retries_total", reason="server_error") == 1
