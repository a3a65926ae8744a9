"""App and installation authentication: token exchange, caching, 401 recovery, clocks."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from ghbot.auth import AppAuth, InstallationToken
from ghbot.client import ClientOptions, GitHub, GitHubApp, InstallationTokens, tokens
from ghbot.client.pool import Pool
from ghbot.client.tokens import KEPT_FOR
from ghbot.errors import (
    ConfigError,
    Forbidden,
    GitHubError,
    InstallationUnavailable,
    NotFound,
    Unauthorized,
    UsageError,
    ValidationFailed,
)
from ghbot.logs import LogLimiter
from ghbot.testing import FakeClock, FakeGitHub
from tests.metering import metered

from .conftest import REPO, in_flight

TOKENS = "/app/installations/1/access_tokens"


async def test_token_exchange_verifies_the_jwt_and_returns_an_hour_token(
    fake: FakeGitHub, clock: FakeClock, app: GitHubApp
) -> None:
    token = await app.create_installation_token(1)
    assert token.token.startswith("ghs_") and token.installation_id == 1
    # GitHub's new format (2026): the app's ID and a JWT-like text, about 510 characters.
    assert token.token.startswith("ghs_1_eyJ") and token.token.count(".") == 2
    assert 480 <= len(token.token) <= 560
    assert token.expires_at == pytest.approx(clock() + 3600, abs=2)
    assert token.permissions["issues"] == "write"
    assert token.token not in repr(token)  # only the ends are shown
    assert token.token[8:-4] not in repr(token) and token.token[-40:-4] not in repr(token)
    assert fake.requests_to(TOKENS)[0].headers["Authorization"].startswith("Bearer ")


async def test_an_access_token_answer_without_a_token_is_githubs_error(
    fake: FakeGitHub, app: GitHubApp
) -> None:
    fake.faults.add("/access_tokens$", "status", status=201, message="ghs_not_a_token")
    with pytest.raises(GitHubError, match="lacks 'token'") as caught:
        await app.create_installation_token(1)
    assert caught.value.status == 201 and caught.value.request_id is not None
    assert caught.value.data is None, "the answer may hold a token: not kept"
    assert (await app.create_installation_token(1)).token.startswith("ghs_")


async def test_narrowed_tokens_reach_only_what_they_name(
    fake: FakeGitHub, app: GitHubApp, options: ClientOptions
) -> None:
    token = await app.create_installation_token(
        1, repositories=["hello-world"], permissions={"issues": "read"}
    )
    assert fake.requests_to(TOKENS)[0].json == {
        "repositories": ["hello-world"],
        "permissions": {"issues": "read"},
    }
    gh = GitHub(token=token.token, options=options)
    assert (await gh.request("GET", f"/repos/{REPO}")).status == 200
    with pytest.raises(NotFound):
        await gh.request("GET", "/repos/octo-org/other")
    repo_id = fake.store.repo("octo-org", "other").id  # type: ignore[union-attr]
    by_id = await app.create_installation_token(1, repository_ids=[repo_id])
    assert by_id.repository_selection == "selected"


async def test_narrowing_beyond_the_installation_is_refused(app: GitHubApp) -> None:
    with pytest.raises(ValidationFailed, match="not accessible"):
        await app.create_installation_token(1, repositories=["widgets"])
    with pytest.raises(ValidationFailed, match="permissions"):
        await app.create_installation_token(1, permissions={"administration": "write"})
    with pytest.raises(NotFound):
        await app.create_installation_token(404)


async def test_one_exchange_for_many_concurrent_requests(
    fake: FakeGitHub, installation: GitHub
) -> None:
    answers = await asyncio.gather(
        *(installation.request("GET", f"/repos/{REPO}/issues/1") for _ in range(20))
    )
    assert {a.status for a in answers} == {200}
    assert len(fake.requests_to(TOKENS)) == 1


async def test_tokens_are_refreshed_five_minutes_before_expiry(
    fake: FakeGitHub, clock: FakeClock, installation: GitHub
) -> None:
    await installation.request("GET", f"/repos/{REPO}")
    clock.advance(54 * 60)
    await installation.request("GET", f"/repos/{REPO}/issues")
    assert len(fake.requests_to(TOKENS)) == 1
    clock.advance(2 * 60)  # 56 minutes: inside the 5-minute margin
    await installation.request("GET", f"/repos/{REPO}/issues/1")
    assert len(fake.requests_to(TOKENS)) == 2


async def test_a_token_expiring_sooner_than_the_ttl_is_refreshed_within_the_margin(
    clock: FakeClock,
) -> None:
    """The margin counts from the token's own `expires_at`, not only from the cache's
    ttl: a token given a shorter life is refreshed 5 minutes before it ends."""
    minted: list[int] = []

    async def mint(installation_id: int) -> InstallationToken:
        minted.append(installation_id)
        return InstallationToken(f"ghs_{len(minted)}", clock() + 600, minted_at=clock())

    cache = InstallationTokens(mint, clock=clock)  # ttl 3,300 s, margin 300 s
    assert (await cache.get(1)).token == "ghs_1"
    clock.advance(299)
    assert (await cache.get(1)).token == "ghs_1"
    clock.advance(2)  # 301 s old: 299 s left of its 600, inside the margin
    assert (await cache.get(1)).token == "ghs_2"


async def test_token_cache_ttl_caps_the_life_of_a_cached_token(
    fake: FakeGitHub, clock: FakeClock, auth: AppAuth, options: ClientOptions
) -> None:
    app = GitHubApp(auth, options=options, token_ttl=600)
    gh = app.installation(1)
    await gh.request("GET", f"/repos/{REPO}")
    clock.advance(601)
    await gh.request("GET", f"/repos/{REPO}/issues")
    assert len(fake.requests_to(TOKENS)) == 2


async def test_a_401_gets_one_fresh_token_and_one_retry(
    fake: FakeGitHub, clock: FakeClock, installation: GitHub
) -> None:
    await installation.request("GET", f"/repos/{REPO}")
    clock.advance(60)  # no longer fresh: a 401 now means the token is bad
    fake.faults.add("/issues/1$", "unauthorized")
    assert (await installation.request("GET", f"/repos/{REPO}/issues/1")).status == 200
    assert len(fake.requests_to(TOKENS)) == 2
    sent = fake.requests_to(f"/repos/{REPO}/issues/1")
    assert sent[0].headers["Authorization"] != sent[1].headers["Authorization"]
    assert clock.sleeps == []


async def test_a_persistent_401_raises_after_the_refresh(
    fake: FakeGitHub, clock: FakeClock, installation: GitHub
) -> None:
    await installation.request("GET", f"/repos/{REPO}")
    clock.advance(60)
    fake.faults.add("/issues/1$", "unauthorized", count=None)
    with pytest.raises(Unauthorized, match="Bad credentials"):
        await installation.request("GET", f"/repos/{REPO}/issues/1")
    assert len(fake.requests_to(TOKENS)) == 2, "one refresh, not one per retry"
    # The new token is fresh, so its 401s are retried a few times with a short backoff.
    assert clock.sleeps == [0.5, 1.0, 2.0]


async def test_a_fresh_window_longer_than_the_clients_hands_back_the_refused_token_once(
    fake: FakeGitHub, clock: FakeClock, app: GitHubApp, options: ClientOptions
) -> None:
    """`InstallationTokens`' docstring: the client forces a token 20 s old (past its own
    5 s), a cache with a 30 s window hands back the same token, and its 401 is final."""
    tokens = InstallationTokens(app.create_installation_token, fresh_window=30, clock=clock)
    gh = GitHub(tokens=tokens, installation_id=1, options=options)
    await gh.request("GET", f"/repos/{REPO}")
    clock.advance(20)
    fake.faults.add("/issues/1$", "unauthorized", count=None)
    with pytest.raises(Unauthorized):
        await gh.request("GET", f"/repos/{REPO}/issues/1")
    assert len(fake.requests_to(TOKENS)) == 1  # never minted anew
    sent = fake.requests_to(f"/repos/{REPO}/issues/1")
    first, second = (request.headers["Authorization"] for request in sent)
    assert first == second and clock.sleeps == []


async def test_a_401_on_a_token_minted_seconds_ago_is_retried_without_a_new_token(
    fake: FakeGitHub, clock: FakeClock, installation: GitHub
) -> None:
    fake.faults.add("/issues/1$", "unauthorized", count=2)
    assert (await installation.request("GET", f"/repos/{REPO}/issues/1")).status == 200
    assert clock.sleeps == [0.5, 1.0]
    assert len(fake.requests_to(TOKENS)) == 1


@pytest.mark.parametrize("later", [1, 10])
async def test_a_late_401_for_a_token_already_replaced_is_retried_at_once_with_the_new_one(
    fake: FakeGitHub, clock: FakeClock, app: GitHubApp, installation: GitHub, later: float
) -> None:
    """A request sent with a token that another request's 401 has replaced since:
    its own 401 was judged by the new token, so it waited out a propagation backoff
    (the new one `later` = 1 s old) or forced a third exchange, throwing the good new
    token away (10 s old). Now it is judged by the token it was refused with."""
    await installation.request("GET", f"/repos/{REPO}")
    clock.advance(60)
    issue = f"/repos/{REPO}/issues/1"
    fake.faults.add("/issues/1$", "unauthorized", delay=0.2)
    late = await in_flight(fake, installation.request("GET", issue), issue)
    replaced = await app.tokens.get(1, force=True)  # another request's 401 refreshed it
    clock.advance(later)
    m = metered()
    assert (await late).status == 200
    assert len(fake.requests_to(TOKENS)) == 2 and clock.sleeps == []
    refused, sent = (r.headers["Authorization"] for r in fake.requests_to(issue))
    assert refused != sent == f"token {replaced.token}"
    assert m.delta("ghbot_auth_failures_total") == {frozenset({("type", "bad_credentials")}): 1}


async def test_a_plain_token_is_not_retried_on_401(
    fake: FakeGitHub, options: ClientOptions
) -> None:
    with pytest.raises(Unauthorized):
        await GitHub(token="ghs_revoked", options=options).request("GET", f"/repos/{REPO}")
    assert len(fake.requests) == 1


async def test_a_jwt_refused_for_clock_skew_is_corrected_from_the_date_header(
    fake: FakeGitHub, clock: FakeClock, pem_pkcs8: bytes, options: ClientOptions
) -> None:
    skewed = AppAuth(1, pem_pkcs8, clock=lambda: clock() + 1200)  # 20 minutes fast
    app = GitHubApp(skewed, options=options)
    answer = await app.gh.request("GET", "/app")
    assert answer.status == 200
    assert skewed.offset == pytest.approx(-1200, abs=2)
    refused, accepted = fake.requests_to("/app")
    assert refused.headers["Authorization"] != accepted.headers["Authorization"]


async def test_requests_sent_with_the_same_skewed_jwt_are_each_retried(
    fake: FakeGitHub, clock: FakeClock, pem_pkcs8: bytes, options: ClientOptions
) -> None:
    """Five requests sent at once carry the same JWT, signed 20 minutes fast. The first
    401 corrected the offset; the other four then saw it unchanged, and each raised
    `Unauthorized` instead of being sent again with the corrected JWT."""
    skewed = AppAuth(1, pem_pkcs8, clock=lambda: clock() + 1200)
    app = GitHubApp(skewed, options=options)
    answers = await asyncio.gather(*(app.gh.request("GET", "/app") for _ in range(5)))
    assert {a.status for a in answers} == {200}
    assert skewed.offset == pytest.approx(-1200, abs=2)
    sent = [r.headers["Authorization"] for r in fake.requests_to("/app")]
    assert len(sent) == 10 and len(set(sent)) == 2  # the skewed JWT, then one corrected


async def test_a_jwt_that_expired_while_its_request_waited_is_signed_again(
    fake: FakeGitHub, clock: FakeClock, auth: AppAuth, options: ClientOptions
) -> None:
    """One connection: the app's request waits for it, JWT in hand, while another
    holds it for 11 minutes. GitHub refuses the JWT for its `exp`; its `Date` agrees
    with our clock, so no offset changed, and the 401 was final."""
    clock.now = float(int(clock()))  # a whole second, as `Date` tells it: no offset at all
    pool = Pool(max_concurrency=1)
    one = options.replace(pool=pool)
    other = GitHub(token=fake.create_token(1), options=one)
    app = GitHubApp(auth, options=one)
    fake.faults.add(f"/repos/{REPO}$", "slow", delay=0.2)
    try:
        held = await in_flight(fake, other.request("GET", f"/repos/{REPO}"), f"/repos/{REPO}")
        waiting = asyncio.ensure_future(app.gh.request("GET", "/app"))
        for _ in range(50):  # it signs its JWT, then waits for the connection
            await asyncio.sleep(0)
        clock.advance(11 * 60)  # the JWT (10 minutes at most) expires meanwhile
        assert (await held).status == 200
        assert (await waiting).status == 200
    finally:
        await pool.close()
    assert auth.offset == 0
    expired, signed_again = (r.headers["Authorization"] for r in fake.requests_to("/app"))
    assert expired != signed_again


async def test_a_jwt_refused_for_other_reasons_is_not_retried(
    fake: FakeGitHub, options: ClientOptions, pem_pkcs8: bytes
) -> None:
    stranger = AppAuth(99, pem_pkcs8)
    with pytest.raises(Unauthorized, match="could not be decoded"):
        await GitHubApp(stranger, options=options).gh.request("GET", "/app")
    assert len(fake.requests_to("/app")) == 1


class CountingSource:
    """A `TokenSource` as the Ray app-auth actor would be: the client only calls `get`;
    the same token until one is forced."""

    def __init__(self, fake: FakeGitHub, clock: FakeClock) -> None:
        self.fake, self.clock = fake, clock
        self.calls: list[tuple[int, bool]] = []
        self.tokens: dict[int, InstallationToken] = {}

    async def get(self, installation_id: int, *, force: bool = False) -> InstallationToken:
        self.calls.append((installation_id, force))
        if force or installation_id not in self.tokens:
            token = self.fake.create_token(installation_id)
            self.tokens[installation_id] = InstallationToken(
                token, self.clock() + 3600, minted_at=self.clock() - 60
            )
        return self.tokens[installation_id]


async def test_any_token_source_can_back_an_installation_client(
    fake: FakeGitHub, clock: FakeClock, options: ClientOptions
) -> None:
    source = CountingSource(fake, clock)
    gh = GitHub(tokens=source, installation_id=2, options=options)
    fake.faults.add("/widgets$", "unauthorized")
    assert (await gh.request("GET", "/repos/acme/widgets")).status == 200
    assert (2, True) in source.calls
    assert gh.credentials.kind == "installation"


async def test_token_cache_failures_reach_every_waiter_and_are_not_cached(
    clock: FakeClock,
) -> None:
    calls = 0

    async def mint(installation_id: int) -> InstallationToken:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise NotFound(404, "Not Found")
        return InstallationToken("ghs_ok", clock() + 3600, minted_at=clock())

    cache = InstallationTokens(mint, clock=clock)
    results = await asyncio.gather(*(cache.get(7) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, NotFound) for r in results) and calls == 1
    assert (await cache.get(7)).token == "ghs_ok" and calls == 2


async def test_a_cancelled_waiter_does_not_cancel_the_exchange(clock: FakeClock) -> None:
    started = asyncio.Event()

    async def mint(installation_id: int) -> InstallationToken:
        started.set()
        await asyncio.sleep(0.02)
        return InstallationToken("ghs_ok", clock() + 3600, minted_at=clock())

    cache = InstallationTokens(mint, clock=clock)
    first = asyncio.ensure_future(cache.get(1))
    await started.wait()
    second = asyncio.ensure_future(cache.get(1))
    first.cancel()
    assert (await second).token == "ghs_ok"
    assert cache.cached(1) is not None


async def test_force_returns_a_fresh_token_instead_of_minting_again(clock: FakeClock) -> None:
    minted: list[int] = []

    async def mint(installation_id: int) -> InstallationToken:
        minted.append(installation_id)
        return InstallationToken(f"ghs_{len(minted)}", clock() + 3600, minted_at=clock())

    cache = InstallationTokens(mint, clock=clock)
    first = await cache.get(1)
    assert await cache.get(1, force=True) is first  # 0 s old: propagation, not a bad token
    clock.advance(10)
    assert (await cache.get(1, force=True)).token == "ghs_2"
    cache.invalidate(1)
    assert cache.cached(1) is None


async def test_callers_during_a_forced_refresh_wait_for_the_new_token_not_the_refused_one(
    clock: FakeClock,
) -> None:
    """While the exchange forced by a 401 ran, the refused token stayed cached, and
    every other caller was handed it (a wasted 401 each)."""
    release = asyncio.Event()
    minted: list[int] = []

    async def mint(installation_id: int) -> InstallationToken:
        if minted:
            await release.wait()
        minted.append(installation_id)
        return InstallationToken(f"ghs_{len(minted)}", clock() + 3600, minted_at=clock())

    cache = InstallationTokens(mint, clock=clock)
    assert (await cache.get(1)).token == "ghs_1"
    clock.advance(60)
    forced = asyncio.ensure_future(cache.get(1, force=True))
    await asyncio.sleep(0)  # the exchange has started
    other = asyncio.ensure_future(cache.get(1))
    await asyncio.sleep(0)
    assert not other.done() and cache.cached(1) is None
    release.set()
    assert (await forced).token == (await other).token == "ghs_2"
    assert cache.minted == 2


async def test_a_failed_refresh_before_expiry_keeps_the_cached_token_until_it_expires(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside the 5 minutes before expiry every `get` awaits a refresh: when the exchange
    failed (the app-auth actor being replaced, a 5xx), every request failed with it,
    although the cached token had minutes left."""
    failing = False
    tries: list[int] = []

    async def mint(installation_id: int) -> InstallationToken:
        tries.append(installation_id)
        if failing:
            raise ConnectionError("the app-auth actor is not there")
        return InstallationToken("ghs_" + "x" * 36, clock() + 3600, minted_at=clock())

    # Its own limiter: lines other tests logged in this process hold none of these back.
    monkeypatch.setattr(tokens, "_KEPT_LOGGED", LogLimiter(burst=5, per=60.0))
    cache = InstallationTokens(mint, clock=clock)
    first = await cache.get(1)
    await cache.get(2)
    failing = True
    clock.advance(3600 - 200)  # inside the margin: it is refreshed, and that fails
    with caplog.at_level(logging.WARNING, logger="ghbot.client.tokens"):
        assert await cache.get(1) is first
        for _ in range(20):  # not asked again, nor logged, by every request meanwhile
            assert await cache.get(1) is first
        assert tries == [1, 2, 1]
        clock.advance(KEPT_FOR)
        assert await cache.get(1) is first  # the exchange is tried again, and fails again
        assert tries == [1, 2, 1, 1]
    assert caplog.text.count("installation 1: no new token yet (ConnectionError)") == 2
    assert first.token not in caplog.text and first.token[4:-4] not in caplog.text
    with pytest.raises(ConnectionError):
        await cache.get(2, force=True)  # a token GitHub refused is not handed back
    clock.advance(190)  # 5 s left: too little to send a request with it
    with pytest.raises(ConnectionError):
        await cache.get(1)


async def test_force_uses_the_caches_fresh_window(clock: FakeClock) -> None:
    async def mint(installation_id: int) -> InstallationToken:
        return InstallationToken(f"ghs_{clock()}", clock() + 3600, minted_at=clock())

    cache = InstallationTokens(mint, clock=clock, fresh_window=30.0)
    first = await cache.get(1)
    clock.advance(20)  # older than the default 5 s, inside this cache's 30 s
    assert await cache.get(1, force=True) is first
    assert cache.minted == 1


async def test_a_token_is_not_used_once_its_ttl_is_over(clock: FakeClock) -> None:
    async def mint(installation_id: int) -> InstallationToken:
        return InstallationToken(f"ghs_{clock()}", clock() + 3600, minted_at=clock())

    cache = InstallationTokens(mint, clock=clock, ttl=600.0, margin=0.0)
    first = await cache.get(1)
    clock.advance(600)  # exactly the ttl
    assert await cache.get(1) is not first
    assert cache.minted == 2


async def test_the_token_cache_keeps_the_most_recently_minted_up_to_maxsize(
    clock: FakeClock,
) -> None:
    async def mint(installation_id: int) -> InstallationToken:
        return InstallationToken(f"ghs_{clock()}", clock() + 3600, minted_at=clock())

    cache = InstallationTokens(mint, clock=clock, maxsize=2)
    await cache.get(1)
    await cache.get(2)
    clock.advance(10)
    await cache.get(1, force=True)  # minted again: now the most recent
    await cache.get(3)  # one too many: the least recent, 2, goes
    assert [cache.cached(i) is not None for i in (1, 2, 3)] == [True, False, True]
    await cache.get(1)  # a hit: the most recent again
    await cache.get(4)  # 3 goes, not 1
    assert [cache.cached(i) is not None for i in (1, 3, 4)] == [True, False, True]


def test_a_key_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    import os

    from ghbot.auth import KeyFile
    from ghbot.testing import app_key_pair

    first, _ = app_key_pair()
    second, second_public = app_key_pair()
    path = tmp_path / "app.pem"
    path.write_bytes(first)
    watched = KeyFile(path)
    assert watched.changed() is None
    staged = tmp_path / "staged.pem"  # replaced the way secret managers do it
    staged.write_bytes(second)
    os.replace(staged, path)
    assert watched.changed() == second
    assert watched.changed() is None  # once
    path.unlink()
    assert watched.changed() is None  # missing for a moment: unchanged

    auth = AppAuth(1, first)
    old_jwt = auth.jwt()
    auth.use_key(second)
    assert auth.public_key_pem() == second_public
    assert auth.jwt() != old_jwt  # the JWT signed with the old key is dropped
    with pytest.raises(ConfigError, match="not a valid PEM private key"):
        auth.use_key(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    assert auth.public_key_pem() == second_public  # kept


def test_a_key_mounted_as_kubernetes_does_is_read_again_when_its_link_is_swapped(
    tmp_path: Path,
) -> None:
    """A Kubernetes secret volume: `app.pem` links to `..data/app.pem`, `..data` to a
    timestamped folder; a rotation writes a new folder and swaps `..data` at once. The
    path itself never changes, what it resolves to does (here at the same size and
    modification time, so only the inode tells)."""
    import os

    from ghbot.auth import KeyFile
    from ghbot.testing import app_key_pair

    first, _ = app_key_pair()
    second, _ = app_key_pair()
    second = second[: len(first)].ljust(len(first), b"\n")  # the same size as the first
    for folder, content in (("..2026_12_05_a", first), ("..2026_12_05_b", second)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "app.pem").write_bytes(content)
        os.utime(tmp_path / folder / "app.pem", ns=(1_700_000_000_000_000_000,) * 2)
    (tmp_path / "..data").symlink_to("..2026_12_05_a")
    (tmp_path / "app.pem").symlink_to("..data/app.pem")
    watched = KeyFile(tmp_path / "app.pem")
    assert watched.changed() is None
    (tmp_path / "..data_tmp").symlink_to("..2026_12_05_b")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # the swap, atomic
    assert watched.changed() == second
    assert watched.changed() is None


async def test_the_fake_takes_a_second_key_while_one_rotates() -> None:
    from ghbot.testing import FakeGitHub, app_key_pair

    old, old_public = app_key_pair()
    new, new_public = app_key_pair()
    async with FakeGitHub(app_id=7, public_key_pem=old_public) as fake:
        old_jwt, new_jwt = AppAuth(7, old).jwt(), AppAuth(7, new).jwt()
        assert fake.identities.check_jwt(old_jwt) is None
        assert fake.identities.check_jwt(new_jwt) is not None
        fake.add_key(new_public)
        assert fake.identities.check_jwt(new_jwt) is None
        fake.remove_key(old_public)
        assert fake.identities.check_jwt(old_jwt) is not None
        assert fake.identities.check_jwt(new_jwt) is None
        with pytest.raises(UsageError, match="only key"):
            fake.remove_key(new_public)
        with pytest.raises(UsageError, match="no such key"):
            fake.remove_key(old_public)


async def test_an_installation_github_no_longer_knows_is_unavailable_not_not_found(
    fake: FakeGitHub, clock: FakeClock, installation: GitHub
) -> None:
    """Uninstalled: its token is refused (401) and a new one is not given (404). What the
    caller sees says so, so that the runtime stops trying (not a handler's 404)."""
    await installation.request("GET", f"/repos/{REPO}")
    del fake.store.installations[1]  # uninstalled: GitHub forgets it and its tokens
    clock.advance(60)
    with pytest.raises(InstallationUnavailable) as raised:
        await installation.request("GET", f"/repos/{REPO}/issues/1")
    gone = raised.value
    assert (gone.status, gone.installation_id, gone.suspended) == (404, 1, False)
    assert "installation 1 is not installed" in str(gone) and TOKENS in gone.url
    assert isinstance(gone.__cause__, NotFound)


async def test_a_suspended_installation_is_unavailable(
    fake: FakeGitHub, installation: GitHub
) -> None:
    # GitHub's answer to a suspended installation's token exchange (as octokit.rb and
    # others report it).
    suspended = {"message": "This installation has been suspended"}
    fake.stub("POST", TOKENS, suspended, status=403, auth="jwt")
    with pytest.raises(InstallationUnavailable) as raised:
        await installation.request("GET", f"/repos/{REPO}")
    assert (raised.value.status, raised.value.suspended) == (403, True)
    assert "installation 1 is suspended" in str(raised.value)


async def test_a_token_refused_for_another_reason_is_raised_as_it_came(
    fake: FakeGitHub, installation: GitHub
) -> None:
    fake.stub("POST", TOKENS, {"message": "Resource not accessible"}, status=403, auth="jwt")
    with pytest.raises(Forbidden) as raised:
        await installation.request("GET", f"/repos/{REPO}")
    assert not isinstance(raised.value, InstallationUnavailable)
