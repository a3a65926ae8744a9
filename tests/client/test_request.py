"""Requests: headers, bodies, answers, error mapping, secrets kept out, cheap clients."""

from __future__ import annotations

import asyncio
import logging
import tracemalloc
from collections.abc import Callable

import aiohttp
import pytest

from ghbot.auth import AppAuth
from ghbot.client import ClientOptions, GitHub, GitHubApp, close_pool, current_pool
from ghbot.client.pool import Pool
from ghbot.config import Settings
from ghbot.errors import (
    BadRequest,
    ConnectionFailed,
    Forbidden,
    GitHubError,
    Gone,
    NotFound,
    ServerError,
    Unauthorized,
    UsageError,
    ValidationFailed,
)
from ghbot.testing import FakeGitHub

from .conftest import REPO


async def test_sends_github_headers_and_installation_token(
    fake: FakeGitHub, installation: GitHub
) -> None:
    answer = await installation.request("GET", f"/repos/{REPO}/issues/1")
    assert answer.status == 200
    assert answer.data["title"] == "Found a bug"
    assert answer.request_id and answer.rate_limit is not None
    sent = fake.requests_to(f"/repos/{REPO}/issues/1")[0].headers
    assert sent["Accept"] == "application/vnd.github+json"
    assert sent["X-GitHub-Api-Version"] == "2022-11-28"
    assert sent["User-Agent"].startswith("ghbot/")
    assert sent["Authorization"].startswith("token ghs_")


async def test_app_client_sends_its_jwt_as_bearer(fake: FakeGitHub, app: GitHubApp) -> None:
    answer = await app.gh.request("GET", "/app")
    assert answer.data["id"] == 1
    assert fake.requests_to("/app")[0].headers["Authorization"].startswith("Bearer ey")


async def test_unauthenticated_client_sends_no_authorization(
    fake: FakeGitHub, options: ClientOptions
) -> None:
    gh = GitHub(options=options)
    assert (await gh.request("GET", "/")).status == 200
    assert "Authorization" not in fake.requests_to("/")[0].headers
    with pytest.raises(Unauthorized, match="Requires authentication"):
        await gh.request("GET", f"/repos/{REPO}")


async def test_json_body_is_sent_and_answer_decoded(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    answer = await gh.request(
        "POST", f"/repos/{REPO}/issues", json={"title": "New", "labels": ["bug"]}
    )
    assert answer.status == 201
    assert answer.data["number"] == 2
    assert answer.headers["Location"].endswith(f"/repos/{REPO}/issues/2")
    sent = fake.requests_to(f"/repos/{REPO}/issues", "POST")[0]
    assert sent.json == {"title": "New", "labels": ["bug"]}
    assert sent.headers["Content-Type"].startswith("application/json")
    assert fake.issue(REPO, 2)["labels"][0]["name"] == "bug"


async def test_params_are_encoded_into_the_query(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    await gh.request("GET", f"/repos/{REPO}/issues", params={"state": "all", "per_page": 5})
    assert fake.requests_to(f"/repos/{REPO}/issues")[0].query == "state=all&per_page=5"
    # None leaves a parameter out; a URL with a query of its own keeps it.
    await gh.request("GET", f"/repos/{REPO}/issues?state=open", params={"per_page": 2, "x": None})
    assert fake.requests_to(f"/repos/{REPO}/issues")[1].query == "state=open&per_page=2"
    await gh.request("GET", f"/repos/{REPO}/issues", params={"pinned": True, "locked": False})
    assert fake.requests_to(f"/repos/{REPO}/issues")[2].query == "pinned=true&locked=false"


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, BadRequest), (404, NotFound), (410, Gone), (403, Forbidden), (418, GitHubError)],
)
async def test_error_statuses_map_and_are_never_retried(
    fake: FakeGitHub, token_client: Callable[..., GitHub], status: int, error: type[Exception]
) -> None:
    fake.faults.add("/issues/1$", "status", status=status, message="nope")
    with pytest.raises(error) as caught:
        await token_client().request("GET", f"/repos/{REPO}/issues/1")
    assert isinstance(caught.value, GitHubError)
    assert caught.value.status == status and caught.value.message == "nope"
    assert caught.value.method == "GET" and caught.value.url.endswith("/issues/1")
    assert caught.value.request_id and caught.value.request_id.startswith("FAKE:")
    assert len(fake.requests_to(f"/repos/{REPO}/issues/1")) == 1


async def test_not_found_carries_method_url_and_request_id(
    token_client: Callable[..., GitHub],
) -> None:
    with pytest.raises(NotFound) as caught:
        await token_client().request("GET", f"/repos/{REPO}/issues/999")
    text = str(caught.value)
    assert "404 Not Found (GET http://127.0.0.1:" in text and "[request FAKE:" in text


async def test_validation_failed_keeps_githubs_errors_list(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await token_client().request("POST", f"/repos/{REPO}/issues", json={"body": "x"})
    assert caught.value.status == 422
    assert caught.value.message == "Validation Failed"
    assert caught.value.errors == [{"resource": "Issue", "code": "missing_field", "field": "title"}]
    assert len(fake.requests_to(f"/repos/{REPO}/issues", "POST")) == 1


async def test_forbidden_is_not_a_rate_limit(app: GitHubApp) -> None:
    with pytest.raises(Forbidden, match="Resource not accessible by integration"):
        await app.gh.request("GET", f"/repos/{REPO}")


async def test_no_token_or_jwt_in_errors_reprs_or_logs(
    fake: FakeGitHub,
    options: ClientOptions,
    app: GitHubApp,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = fake.create_token(1)
    gh = GitHub(token=token, options=options)
    jwt = app.auth.jwt()
    errors: list[BaseException] = []
    fake.faults.add("/issues/1$", "unauthorized")
    fake.faults.add("/issues/1/comments$", "server_error", count=None)
    for path in ("/issues/1", "/issues/999", "/issues/1/comments"):
        with pytest.raises(GitHubError) as caught:
            await gh.request("GET", f"/repos/{REPO}{path}")
        errors.append(caught.value)
    with pytest.raises(ValidationFailed) as invalid:
        await gh.request("POST", f"/repos/{REPO}/issues", json={})
    errors.append(invalid.value)
    with pytest.raises(Unauthorized) as refused:
        await GitHub(token=token, options=options).request("GET", "/app")
    errors.append(refused.value)
    closed = GitHub(token=token, options=options.replace(base_url="http://127.0.0.1:9"))
    with pytest.raises(ConnectionFailed) as unreachable:
        await closed.request("GET", "/")
    errors.append(unreachable.value)
    assert [type(e) for e in errors[:3]] == [Unauthorized, NotFound, ServerError]
    seen = " ".join(f"{e} {e!r} {e.args} {getattr(e, 'headers', '')}" for e in errors)
    seen += f" {gh!r} {app!r} {app.gh!r} {app.tokens!r} {caplog.text}"
    assert token not in seen and token[4:] not in seen
    assert jwt not in seen


def test_clients_are_cheap() -> None:
    options = ClientOptions(base_url="https://api.github.com")

    class Source:
        async def get(self, installation_id: int, *, force: bool = False) -> object:
            raise AssertionError

    source = Source()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    clients = [GitHub(tokens=source, installation_id=i, options=options) for i in range(1000)]  # type: ignore[arg-type]
    for gh in clients:
        gh.budgets.core  # noqa: B018 - a budget is made on first use; count it
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    per_client = sum(s.size_diff for s in after.compare_to(before, "filename")) / len(clients)
    assert per_client < 2048, f"{per_client:.0f} bytes per client"


async def test_clients_share_one_pool_per_loop(
    options: ClientOptions, token_client: Callable[..., GitHub]
) -> None:
    first, second = token_client(1), token_client(2)
    await first.request("GET", f"/repos/{REPO}")
    await second.request("GET", "/repos/acme/widgets")
    pool = current_pool()
    assert pool is current_pool()
    assert len(pool.session.connector._conns) == 1  # type: ignore[union-attr]


def test_pool_closes_when_the_loop_ends(public_pem: bytes) -> None:
    async def main() -> object:
        async with FakeGitHub(public_key_pem=public_pem) as fake:
            async with GitHub(options=ClientOptions(base_url=fake.url)) as gh:
                await gh.request("GET", "/")
            return current_pool().session

    session = asyncio.run(main())
    assert session.closed  # type: ignore[attr-defined]


async def test_a_pool_remakes_its_own_session_and_leaves_a_given_one_open() -> None:
    with pytest.raises(UsageError, match="at least 1"):
        Pool(max_concurrency=0)
    pool = Pool()
    first = pool.session
    await first.close()
    assert pool.session is not first and not pool.session.closed  # its own: made again
    await pool.close()
    async with aiohttp.ClientSession() as given:
        borrowed = Pool(session=given)
        assert borrowed.session is given
        await borrowed.close()
        assert not given.closed  # the caller's to close
        assert borrowed.session is given, "not a session of its own that nothing closes"


async def test_close_pool_closes_the_loops_pool_and_the_next_request_gets_a_new_one() -> None:
    pool = current_pool()
    session = pool.session
    await close_pool()
    assert session.closed
    assert current_pool() is not pool


async def test_from_settings_reads_url_timeout_retries_and_margin(fake: FakeGitHub) -> None:
    env = {
        "GITHUB_API_URL": f"{fake.url}/api/v3",
        "MAX_RETRIES": "1",
        "REQUEST_TIMEOUT": "7",
        "RATE_LIMIT_MARGIN": "0.2",
    }
    settings = Settings.from_env(env, require_app=False, require_webhooks=False)
    gh = GitHub.from_settings(settings, token=fake.create_token(1))
    assert gh.base_url == f"{fake.url}/api/v3"
    assert (gh.options.timeout, gh.options.retry.max_retries) == (7.0, 1)
    assert gh.budgets.core.margin == 0.2
    assert ClientOptions.from_settings(settings, timeout=3.0).timeout == 3.0  # changes win
    answer = await gh.request("GET", f"/repos/{REPO}")
    assert answer.data["full_name"] == REPO
    assert fake.requests[-1].url.startswith(f"{fake.url}/api/v3/repos/")


async def test_app_from_settings(fake: FakeGitHub, pem_pkcs8: bytes) -> None:
    env = {
        "GITHUB_APP_ID": "1",
        "GITHUB_PRIVATE_KEY": pem_pkcs8.decode(),
        "GITHUB_API_URL": fake.url,
    }
    app = GitHubApp.from_settings(Settings.from_env(env, require_webhooks=False))
    assert isinstance(app.auth, AppAuth)
    assert (await app.get_installation(2))["account"]["login"] == "acme"
