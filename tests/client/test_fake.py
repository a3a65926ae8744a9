"""The fake GitHub itself: GitHub's JWT messages, tokens, endpoints, faults, threads."""

from __future__ import annotations

import functools
import json
import urllib.request
from collections.abc import Callable

import aiohttp
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from ghbot.auth import AppAuth
from ghbot.breaker import CircuitBreaker, State
from ghbot.client import ClientOptions, GitHub, GitHubApp
from ghbot.errors import (
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    UsageError,
    ValidationFailed,
)
from ghbot.testing import FakeClock, FakeGitHub
from ghbot.testing.documented import documented
from ghbot.testing.identity import MSG_BAD_JWT, MSG_EXP, MSG_EXP_TOO_FAR, MSG_IAT
from ghbot.testing.writes import is_write

from .conftest import REPO


def _jwt(key: rsa.RSAPrivateKey, now: float, **claims: int | str) -> str:
    payload = {"iat": int(now) - 60, "exp": int(now) + 540, "iss": "1", **claims}
    return pyjwt.encode(payload, key, algorithm="RS256")


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": -10}, MSG_EXP),
        ({"exp": 3600}, MSG_EXP_TOO_FAR),
        ({"iat": 10, "exp": 610}, MSG_EXP_TOO_FAR),  # 10 minutes after iat, but ahead of now
        ({"iat": 600, "exp": 900}, MSG_IAT),
        ({"iss": "2"}, MSG_BAD_JWT),
    ],
)
async def test_jwts_are_refused_with_githubs_messages(
    fake: FakeGitHub,
    clock: FakeClock,
    rsa_key: rsa.RSAPrivateKey,
    token_client: Callable[..., GitHub],
    claims: dict[str, int | str],
    message: str,
) -> None:
    now = clock()
    shifted = {k: int(now) + v if isinstance(v, int) else v for k, v in claims.items()}
    gh = GitHub(token=_jwt(rsa_key, now, **shifted), options=token_client().options)
    with pytest.raises(Unauthorized) as caught:
        await gh.request("GET", "/app")
    assert caught.value.message == message


async def test_a_jwt_signed_by_another_key_is_refused(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    gh = GitHub(token=_jwt(stranger, clock()), options=token_client().options)
    with pytest.raises(Unauthorized, match="could not be decoded"):
        await gh.request("GET", "/app/installations")


async def test_installation_tokens_expire_after_an_hour(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    await gh.request("GET", f"/repos/{REPO}")
    clock.advance(3601)
    with pytest.raises(Unauthorized, match="Bad credentials"):
        await gh.request("GET", f"/repos/{REPO}/issues")


async def test_tokens_see_only_their_installation(token_client: Callable[..., GitHub]) -> None:
    with pytest.raises(NotFound):
        await token_client(2).request("GET", f"/repos/{REPO}")


async def test_pages_carry_link_headers(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    for n in range(4):
        fake.add_comment(REPO, 1, f"comment {n}")
    gh = token_client()
    page = await gh.request("GET", f"/repos/{REPO}/issues/1/comments", params={"per_page": 3})
    assert [c["body"] for c in page.data] == ["comment 0", "comment 1", "comment 2"]
    assert page.links["next"].endswith("per_page=3&page=2")
    last = await gh.request("GET", page.links["last"])
    assert [c["body"] for c in last.data] == ["comment 3"]
    assert set(last.links) == {"prev", "first"}
    # A page or size that is not written in ASCII digits is not read as one: the default.
    for odd in ("+2", " 2", "٢", "1_0"):
        page = await gh.request(
            "GET", f"/repos/{REPO}/issues/1/comments", params={"per_page": odd, "page": odd}
        )
        assert [c["body"] for c in page.data] == [f"comment {n}" for n in range(4)], odd


async def test_issues_comments_and_labels(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    base = f"/repos/{REPO}/issues/1"
    comment = (await gh.request("POST", f"{base}/comments", json={"body": "Thanks!"})).data
    fetched = await gh.request("GET", f"/repos/{REPO}/issues/comments/{comment['id']}")
    assert fetched.data["body"] == "Thanks!" and fetched.data["user"]["type"] == "Bot"
    await gh.request(
        "PATCH", f"/repos/{REPO}/issues/comments/{comment['id']}", json={"body": "Edited"}
    )
    assert fake.comments(REPO, 1)[0]["body"] == "Edited"
    labels = await gh.request("POST", f"{base}/labels", json={"labels": ["bug", "triage"]})
    assert [label["name"] for label in labels.data] == ["bug", "triage"]
    await gh.request("DELETE", f"{base}/labels/bug")
    assert [label["name"] for label in (await gh.request("GET", f"{base}/labels")).data] == [
        "triage"
    ]
    with pytest.raises(NotFound, match="Label does not exist"):
        await gh.request("DELETE", f"{base}/labels/bug")
    closed = await gh.request("PATCH", base, json={"state": "closed", "state_reason": "completed"})
    assert closed.data["state"] == "closed" and closed.data["closed_at"]
    open_issues = await gh.request("GET", f"/repos/{REPO}/issues")
    assert open_issues.data == []
    assert (await gh.request("GET", f"/repos/{REPO}")).data["open_issues_count"] == 0


async def test_pull_requests_checks_and_statuses(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    pull = fake.add_pull_request(REPO, "Add a feature", head_sha="b" * 40)
    gh = token_client()
    listed = await gh.request("GET", f"/repos/{REPO}/pulls")
    assert [p["number"] for p in listed.data] == [pull["number"]] == [2]
    got = await gh.request("GET", f"/repos/{REPO}/pulls/2")
    assert got.data["head"]["sha"] == "b" * 40
    run = await gh.request(
        "POST", f"/repos/{REPO}/check-runs", json={"name": "lint", "head_sha": "b" * 40}
    )
    assert run.status == 201 and run.data["status"] == "queued"
    done = await gh.request(
        "PATCH", f"/repos/{REPO}/check-runs/{run.data['id']}", json={"conclusion": "success"}
    )
    assert done.data["status"] == "completed" and done.data["completed_at"]
    with pytest.raises(ValidationFailed):
        await gh.request("POST", f"/repos/{REPO}/check-runs", json={"name": "lint"})
    status = await gh.request(
        "POST", f"/repos/{REPO}/statuses/{'b' * 40}", json={"state": "success", "context": "ci"}
    )
    assert status.status == 201 and status.data["state"] == "success"
    with pytest.raises(ValidationFailed) as invalid:
        await gh.request("POST", f"/repos/{REPO}/statuses/{'b' * 40}", json={"state": "great"})
    (error,) = invalid.value.errors
    assert isinstance(error, dict) and error["field"] == "state"
    statuses = await gh.request("GET", f"/repos/{REPO}/commits/{'b' * 40}/statuses")
    assert [s["context"] for s in statuses.data] == ["ci"]


async def test_statuses_of_a_branch_are_those_of_its_head_commit(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    """The typed client keeps a ref's slashes (`feature/x`): the fake takes the ref
    whole and reads a branch, bare or as `heads/NAME`, as its head commit."""
    fake.add_pull_request(REPO, "Add a feature", head="feature/x", head_sha="c" * 40)
    gh = token_client()
    owner, name = REPO.split("/")
    for sha, context in (("c" * 40, "ci"), ("d" * 40, "other"), ("c" * 40, "lint")):
        await gh.rest.repos.create_commit_status(
            owner=owner, repo=name, sha=sha, state="success", context=context
        )
    for ref in ("feature/x", "heads/feature/x", "c" * 40):
        statuses = await gh.rest.repos.list_commit_statuses_for_ref(owner=owner, repo=name, ref=ref)
        assert [s.context for s in statuses] == ["lint", "ci"], ref
    none = await gh.rest.repos.list_commit_statuses_for_ref(owner=owner, repo=name, ref="main")
    assert none == []


async def test_every_request_is_recorded(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    await token_client().request("POST", f"/repos/{REPO}/issues", json={"title": "x"})
    recorded = fake.requests[-1]
    assert (recorded.method, recorded.path, recorded.json) == (
        "POST",
        f"/repos/{REPO}/issues",
        {"title": "x"},
    )
    assert recorded.headers["Authorization"].startswith("token ghs_")


async def test_faults_hit_count_times_then_stop(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    fault = fake.faults.add("/hello-world$", "status", count=2, status=404)
    gh = token_client()
    for _ in range(2):
        with pytest.raises(NotFound):
            await gh.request("GET", f"/repos/{REPO}")
    assert (await gh.request("GET", f"/repos/{REPO}")).status == 200
    assert fault.hits == 2 and not fake.faults
    with pytest.raises(UsageError, match="unknown fault kind"):
        fake.faults.add(".", "explode")
    for count in (0, -1):  # it used to hit one request all the same
        with pytest.raises(UsageError, match="count is None"):
            fake.faults.add(".", "server_error", count=count)
    assert not fake.faults


async def test_a_secondary_limit_s_retry_after_is_whole_seconds_rounded_up(
    fake: FakeGitHub,
) -> None:
    fake.faults.add("/hello-world$", "secondary", retry_after=0.5)
    answer = await _in_thread(
        functools.partial(_status_and_retry_after, f"{fake.url}/repos/{REPO}", fake.create_token(1))
    )
    assert answer == (403, "1")  # GitHub's are whole seconds: "0" would be no wait


async def test_refusals_carry_the_callers_rate_limit_headers_as_githubs_do(
    fake: FakeGitHub,
) -> None:
    """A 404 for a route GitHub does not have counts, and says so; a secondary limit's
    403 says where the caller stands without counting; a 401 for credentials GitHub
    refuses carries none; a caller out of budget is refused as such on any path."""
    token = fake.create_token(1)
    fake.faults.add("/hello-world$", "secondary", retry_after=5, count=1)
    answers = [
        await _limits_of(f"{fake.url}{path}", token)
        for path in (f"/repos/{REPO}", "/nowhere", f"/repos/{REPO}")
    ]
    limit = str(fake.quotas.get("installation:1", "core").limit)
    assert [(status, remaining) for status, remaining, _ in answers] == [
        (403, limit),  # refused: nothing counted
        (404, str(int(limit) - 1)),
        (200, str(int(limit) - 2)),
    ]
    assert all(resource == "core" for _, _, resource in answers)
    assert await _limits_of(f"{fake.url}/repos/{REPO}", "not-a-token") == (401, None, None)
    fake.quotas.get("installation:1", "core").remaining = 0
    assert await _limits_of(f"{fake.url}/nowhere", token) == (403, "0", "core")


async def test_with_rate_limits_off_the_fake_answers_as_ghes_does(
    fake: FakeGitHub, options: ClientOptions
) -> None:
    """`rate_limiting=False`: no `x-ratelimit-*` header on any answer (a refusal's
    neither), no refusal for a spent quota, and `GET /rate_limit` 404 with GHES's
    message."""
    token = fake.create_token(1)
    fake.rate_limiting = False
    fake.quotas.get("installation:1", "core").remaining = 0
    assert await _limits_of(f"{fake.url}/repos/{REPO}", token) == (200, None, None)
    assert await _limits_of(f"{fake.url}/nowhere", token) == (404, None, None)
    fake.faults.add("/hello-world$", "secondary", retry_after=5, count=1)
    assert await _limits_of(f"{fake.url}/repos/{REPO}", token) == (403, None, None)
    with pytest.raises(NotFound, match="Rate limiting is not enabled"):
        await GitHub(token=token, options=options).request("GET", "/rate_limit")
    fake.rate_limiting = True
    assert await _limits_of(f"{fake.url}/repos/{REPO}", token) == (403, "0", "core")
    # What is asked while limits are off is not counted once they are on again.
    fake.quotas.get("installation:1", "core").remaining = 5
    fake.rate_limiting = False
    for path in (f"/repos/{REPO}", "/nowhere"):
        await _limits_of(f"{fake.url}{path}", token)
    fake.rate_limiting = True
    assert await _limits_of(f"{fake.url}/repos/{REPO}", token) == (200, "4", "core")


async def test_code_search_is_its_own_resource_as_on_github(
    fake: FakeGitHub, options: ClientOptions
) -> None:
    """GitHub names code search's budget `code_search`, apart from `search`; the fake
    called it `search`, so a client's code-search budget never learned its limit."""
    token = fake.create_token(1)
    fake.stub("GET", "/search/code", {"total_count": 0, "incomplete_results": False, "items": []})
    _, _, resource = await _limits_of(f"{fake.url}/search/code?q=x", token)
    assert resource == "code_search"
    gh = GitHub(token=token, options=options)
    await gh.request("GET", "/search/code", params={"q": "x"})
    assert gh.budgets.get("code_search").limit == 10
    assert gh.budgets.get("code_search").remaining == 8
    await gh.request("GET", "/search/issues", params={"q": "x"})
    assert gh.budgets.get("search").remaining == 29


async def _limits_of(url: str, token: str) -> tuple[int, str | None, str | None]:
    import asyncio

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _status_and_limits, url, token)


def _status_and_limits(url: str, token: str) -> tuple[int, str | None, str | None]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request) as answer:  # noqa: S310
            headers, status = answer.headers, answer.status
    except urllib.error.HTTPError as error:
        with error:
            headers, status = error.headers, error.code
    return status, headers.get("x-ratelimit-remaining"), headers.get("x-ratelimit-resource")


def _status_and_retry_after(url: str, token: str) -> tuple[int, str | None]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request) as answer:  # noqa: S310
            return answer.status, answer.headers.get("retry-after")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers.get("retry-after")


async def test_a_token_made_directly_lasts_the_fake_s_token_lifetime(public_pem: bytes) -> None:
    """`create_token` (what `ghbot fake-github --print-tokens` prints) lasts as long as
    a token exchanged through the API: `token_lifetime`, unless told otherwise."""
    clock = FakeClock()
    fake = FakeGitHub(public_key_pem=public_pem, clock=clock, token_lifetime=60)
    fake.add_installation(1, "octo-org", ["hello-world"])
    made, told = fake.create_token(1), fake.create_token(1, lifetime=600)
    grants = fake.identities.grants
    assert (grants[made].expires_at, grants[told].expires_at) == (clock.now + 60, clock.now + 600)


async def test_unknown_routes_and_bad_json(fake: FakeGitHub) -> None:
    token = fake.create_token(1)
    for path, data, status in (("/nowhere", None, 404), (f"/repos/{REPO}/issues", b"{", 400)):
        request = urllib.request.Request(  # noqa: S310 - a local URL
            f"{fake.url}{path}",
            data=data,
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            await _in_thread(functools.partial(urllib.request.urlopen, request))
        assert caught.value.code == status
        caught.value.close()


async def _in_thread(call: Callable[[], object]) -> object:
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(None, call)


def test_a_fake_runs_in_a_thread_for_code_that_is_not_async(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    with FakeGitHub.start_in_thread(public_key_pem=public_pem) as handle:
        handle.fake.add_installation(5, "octo-org", ["hello-world"])
        jwt = AppAuth(1, pem_pkcs8).jwt()
        request = urllib.request.Request(  # noqa: S310 - a local URL
            f"{handle.url}/app/installations/5/access_tokens",
            method="POST",
            headers={"Authorization": f"Bearer {jwt}"},
        )
        with urllib.request.urlopen(request) as answer:  # noqa: S310
            token = json.load(answer)["token"]
        repo = urllib.request.Request(  # noqa: S310
            f"{handle.url}/repos/{REPO}", headers={"Authorization": f"token {token}"}
        )
        with urllib.request.urlopen(repo) as answer:  # noqa: S310
            assert json.load(answer)["full_name"] == REPO
            assert answer.headers["x-ratelimit-remaining"] == "4999"
    assert not handle._thread.is_alive()


@pytest.mark.parametrize("status", [403, 429])  # GitHub answers a primary limit with both
async def test_primary_limit_fault_answers_like_github(
    fake: FakeGitHub, token_client: Callable[..., GitHub], status: int
) -> None:
    fake.faults.add("/hello-world$", "primary", status=status)
    with pytest.raises(RateLimited) as caught:
        await token_client().request("GET", f"/repos/{REPO}")
    error = caught.value
    assert error.kind == "primary" and error.status == status
    assert error.message == "API rate limit exceeded for installation ID 1."
    assert error.headers["x-ratelimit-remaining"] == "0"
    # GitHub's limit stays the caller's (it said 0, which no GitHub answer does).
    assert error.headers["x-ratelimit-limit"] == "5000"
    assert error.headers["x-ratelimit-used"] == "5000"


async def test_ghes_paths_are_served(fake: FakeGitHub, token_client: Callable[..., GitHub]) -> None:
    gh = token_client(base_url=f"{fake.url}/api/v3")
    assert (await gh.request("GET", f"/repos/{REPO}")).data["full_name"] == REPO
    assert fake.requests[-1].path == f"/repos/{REPO}"


async def test_writes_too_close_together_draw_a_secondary_limit_and_a_penalty(
    fake: FakeGitHub, clock: FakeClock, options: ClientOptions, app: GitHubApp
) -> None:
    fake.write_interval = 1.0
    # A fresh client per request: what is seen is the fake's answer, not the client's
    # own pause; no in-line waiting, so a refusal raises.
    strict = options.replace(max_rate_limit_wait=0.0)

    async def write(installation_id: int = 1, repo: str = REPO) -> None:
        gh = GitHub(token=fake.create_token(installation_id), options=strict)
        await gh.request("POST", f"/repos/{repo}/issues/1/comments", json={"body": "x"})

    await write()
    with pytest.raises(RateLimited) as caught:
        await write()
    assert (caught.value.kind, caught.value.retry_after) == ("secondary", 60.0)
    assert caught.value.headers.get("x-ratelimit-resource") == "core"  # as GitHub's 403s
    fake.add_issue("acme/widgets", "Widget bug")
    await write(2, "acme/widgets")  # another installation's writes are spaced on their own
    reader = GitHub(token=fake.create_token(1), options=strict)
    assert (await reader.request("GET", f"/repos/{REPO}/issues/1/comments")).status == 200
    for _ in range(2):  # the app's token exchanges are not content writes
        await app.create_installation_token(1)
    clock.advance(30)
    with pytest.raises(RateLimited) as caught:  # the penalty lasts retry-after
        await write()
    assert caught.value.retry_after == 30.0
    clock.advance(31)
    await write()
    assert fake.secondary_limits == 2
    fake.write_interval = None
    await write()
    await write()
    assert fake.secondary_limits == 2
    assert len(fake.comments(REPO, 1)) == 4


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("POST", "/repos/o/r/issues", None, True),
        ("DELETE", "/repos/o/r/issues/1/labels/bug", None, True),
        ("GET", "/repos/o/r/issues", None, False),
        ("POST", "/graphql", {"query": " mutation { addStar }"}, True),
        ("POST", "/graphql", {"query": "query { viewer { login } }"}, False),
    ],
)
def test_content_writes_are_mutating_methods_and_graphql_mutations(
    method: str, path: str, body: object, expected: bool
) -> None:
    assert is_write(method, path, body) is expected


async def test_an_operation_the_fake_lacks_is_answered_501_naming_it_and_a_stub_answers_it(
    fake: FakeGitHub, options: ClientOptions
) -> None:
    """GitHub has `POST .../reactions`; the fake does not implement it. Its 404 looked
    like GitHub's own (no such issue), so a test of a bot reacting to issues failed
    with a misleading `NotFound`. A path GitHub does not describe is still a 404."""
    breaker = CircuitBreaker(min_calls=1, open_for=30)
    gh = GitHub(token=fake.create_token(1), options=options, breaker=breaker)
    reactions = f"/repos/{REPO}/issues/1/reactions"
    with pytest.raises(ServerError) as lacking:
        await gh.request("POST", reactions, json={"content": "+1"})
    template = "/repos/{owner}/{repo}/issues/{issue_number}/reactions"
    assert lacking.value.status == 501
    assert len(fake.requests_to(reactions, "POST")) == 1  # a lasting answer: not retried
    assert breaker.state(options.clock()) is State.CLOSED  # and no sign of GitHub failing
    assert lacking.value.message == (
        f"FakeGitHub does not implement POST {template}: answer it in the test with "
        f"fake.stub('POST', '{template}', data)"
    )
    with pytest.raises(NotFound):
        await gh.request("GET", f"/repos/{REPO}/no-such-thing")
    fake.stub("POST", template, {"id": 1, "content": "+1"}, status=201)
    answer = await gh.request("POST", reactions, json={"content": "+1"})
    assert (answer.status, answer.data) == (201, {"id": 1, "content": "+1"})
    assert fake.requests[-1].json == {"content": "+1"}
    # A stub goes before the fake's own route, and still needs credentials.
    fake.stub("GET", "/repos/{owner}/{repo}/issues/{issue_number}", {"title": "scripted"})
    assert (await gh.request("GET", f"/repos/{REPO}/issues/1")).data == {"title": "scripted"}
    with pytest.raises(Unauthorized):
        await GitHub(token="ghs_wrong", options=options).request("GET", f"/repos/{REPO}/issues/1")


async def test_a_stubbed_request_spends_the_callers_rate_limit(
    fake: FakeGitHub, options: ClientOptions
) -> None:
    """docs/testing.md: a stubbed request "spends its rate limit", as GitHub's answer would."""
    fake.stub("GET", "/repos/{owner}/{repo}/issues/{issue_number}/reactions", [])
    gh = GitHub(token=fake.create_token(1), options=options)
    before = fake.rate_limit(1)
    answer = await gh.request("GET", f"/repos/{REPO}/issues/1/reactions")
    assert answer.data == [] and answer.headers["x-ratelimit-remaining"] == str(before - 1)
    assert fake.rate_limit(1) == before - 1


async def test_a_stub_for_any_caller_answers_one_without_credentials(fake: FakeGitHub) -> None:
    """docs/testing.md: `auth="any"` takes any caller, "one without credentials too";
    the default takes an installation's token and refuses one without."""
    fake.stub("GET", "/meta", {"verifiable_password_authentication": False}, auth="any")
    fake.stub("GET", "/octocat", "an octocat")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fake.url}/meta") as meta:
            assert meta.status == 200 and "Authorization" not in meta.request_info.headers
            assert await meta.json() == {"verifiable_password_authentication": False}
        async with session.get(f"{fake.url}/octocat") as octocat:
            assert octocat.status == 401


def test_an_unimplemented_operation_is_named_by_its_most_literal_template() -> None:
    assert (
        documented("GET", "/repos/o/r/issues/comments") == "/repos/{owner}/{repo}/issues/comments"
    )
    assert documented("GET", "/repos/o/r/issues/7") == "/repos/{owner}/{repo}/issues/{issue_number}"
    # A file's path holds slashes.
    assert (
        documented("PUT", "/repos/o/r/contents/src/a/b.py")
        == "/repos/{owner}/{repo}/contents/{path}"
    )
    # A branch's ref holds slashes mid-path too; the most literal operation is named.
    status = documented("GET", "/repos/o/r/commits/feature/x/status")
    assert status == "/repos/{owner}/{repo}/commits/{ref}/status"
    assert documented("GET", "/repos/o/r/no-such-thing") is None


async def test_a_stub_of_an_app_operation_takes_the_apps_jwt(
    fake: FakeGitHub, app: GitHubApp, options: ClientOptions
) -> None:
    """The 501's advice works as given: with the JWT's `auth` for an app operation,
    `{path*}` for a file's path."""
    with pytest.raises(ServerError) as lacking:
        await app.gh.request("GET", "/app/hook/config")
    assert lacking.value.message.endswith("fake.stub('GET', '/app/hook/config', data, auth='jwt')")
    gh = GitHub(token=fake.create_token(1), options=options)
    with pytest.raises(ServerError) as file:
        await gh.request("PUT", f"/repos/{REPO}/contents/src/a/b.py", json={"content": ""})
    advice = "fake.stub('PUT', '/repos/{owner}/{repo}/contents/{path*}', data)"
    assert file.value.message.endswith(advice)
    fake.stub("PUT", "/repos/{owner}/{repo}/contents/{path*}", {"content": {}}, status=201)
    assert (await gh.request("PUT", f"/repos/{REPO}/contents/src/a/b.py")).status == 201
    fake.stub("GET", "/app/hook/config", {"url": "https://example.com/hook"}, auth="jwt")
    answer = await app.gh.request("GET", "/app/hook/config")
    assert answer.data == {"url": "https://example.com/hook"}


async def test_what_the_fake_recorded_shows_no_credential_in_its_repr(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    """A test's failed assertion prints the fake's records: the token each carries
    (if only one the fake made) is not in them."""
    token = fake.create_token(1)
    await GitHub(token=token, options=token_client().options).request("GET", f"/repos/{REPO}")
    [sent] = fake.requests_to(f"/repos/{REPO}")
    assert token not in repr(sent) and "'Authorization': '[redacted]'" in repr(sent)
    assert sent.headers["Authorization"] == f"token {token}"  # kept, for assertions
    caller = fake.identities.caller(f"token {token}", fake.store.installations)
    assert not isinstance(caller, str) and token not in repr(caller)


async def test_a_pull_request_is_its_issue_closed_labelled_or_retitled_through_the_issue(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    """A pull request's title, state and labels were copies of its issue's made when it
    was added: closing it with `PATCH /issues/N` (as GitHub allows) left `pulls.get`
    and GraphQL's `pullRequest` open, and a label removed stayed on the pull request."""
    number = fake.add_pull_request(REPO, "Add a feature")["number"]
    gh = token_client()
    issue = f"/repos/{REPO}/issues/{number}"
    await gh.request("PATCH", issue, json={"state": "closed", "title": "Drop it"})
    await gh.request("PATCH", issue, json={"labels": ["wontfix", "stale"]})
    await gh.request("DELETE", f"{issue}/labels/stale")
    query = """query($n: Int!) { repository(owner: "octo-org", name: "hello-world") {
        pullRequest(number: $n) { title state } } }"""
    data = await gh.graphql(query, n=number)
    assert data["repository"]["pullRequest"] == {"title": "Drop it", "state": "CLOSED"}
    pull = (await gh.request("GET", f"/repos/{REPO}/pulls/{number}")).data
    assert (pull["state"], pull["title"]) == ("closed", "Drop it") and pull["closed_at"]
    assert [label["name"] for label in pull["labels"]] == ["wontfix"]
    assert (await gh.request("GET", f"/repos/{REPO}/pulls")).data == []
    closed = await gh.request("GET", f"/repos/{REPO}/pulls", params={"state": "closed"})
    assert [p["number"] for p in closed.data] == [number]


async def test_a_path_whose_number_is_a_word_is_not_that_numbers_route(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    """`GET /repos/o/r/issues/comments` (a repository's issue comments) took the route
    of `issues/{number}` and was answered 404 (no issue "comments"): GitHub has the
    operation, the fake does not, so it is a 501 naming it, filters or none."""
    gh = token_client()
    template = "/repos/{owner}/{repo}/issues/comments"
    for params in ({}, {"since": "2024-01-01T00:00:00Z"}):
        with pytest.raises(ServerError) as caught:
            await gh.request("GET", f"/repos/{REPO}/issues/comments", params=params)
        assert caught.value.status == 501
        assert caught.value.message.startswith(f"FakeGitHub does not implement GET {template}:")
    assert (await gh.request("GET", f"/repos/{REPO}/issues/1")).status == 200


async def test_a_filter_the_fake_lacks_is_answered_501_never_as_if_unasked(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    """The fake read only some of a list's filters and ignored the rest: `?labels=a`
    listed every issue, `?since=` and `?creator=` too, `contents?ref=` gave the default
    branch's file, `?head=` every pull request. Now each is honoured or answered 501
    naming it; paging, and a parameter GitHub does not describe, still work."""
    fake.add_issue(REPO, "Labelled", labels=["a"])
    fake.add_file(REPO, ".github/bot.yml", "x: 1")
    gh = token_client()
    issues = f"/repos/{REPO}/issues"
    labelled = await gh.request("GET", issues, params={"labels": "A", "per_page": 5})
    assert [i["title"] for i in labelled.data] == ["Labelled"]
    assert (await gh.request("GET", issues, params={"labels": "a,b"})).data == []
    unasked = await gh.request("GET", issues, params={"client_secret": "x", "direction": "asc"})
    assert [i["title"] for i in unasked.data] == ["Found a bug", "Labelled"]
    template = "/repos/{owner}/{repo}/issues"
    lacking = [
        (issues, {"since": "2024-01-01T00:00:00Z"}, template),
        (issues, {"creator": "octocat"}, template),
        (issues, {"sort": "updated"}, template),
        (f"/repos/{REPO}/contents/.github/bot.yml", {"ref": "feature"}, None),
        (f"/repos/{REPO}/issues/1/comments", {"since": "2024-01-01T00:00:00Z"}, None),
    ]
    for path, params, named in lacking:
        with pytest.raises(ServerError) as caught:
            await gh.request("GET", path, params=params)
        [(name, value)] = params.items()
        assert caught.value.status == 501
        assert f"does not implement the query parameter {name}={value} of GET" in str(
            caught.value.message
        )
        if named is not None:
            assert caught.value.message.endswith(f"fake.stub('GET', '{named}', data)")
    spent = fake.rate_limit(1)
    with pytest.raises(ServerError):
        await gh.request("GET", issues, params={"milestone": "1"})
    assert fake.rate_limit(1) == spent - 1  # answered, so counted, as GitHub's answers are


async def test_closing_or_reopening_an_issue_gives_its_state_reason(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    """The fake left `state_reason` null when an issue was closed or reopened; GitHub
    gives `completed` (closed without a reason), `reopened`, or the one asked."""
    number = fake.add_issue(REPO, "Flaky")["number"]
    gh = token_client()
    path = f"/repos/{REPO}/issues/{number}"

    async def patched(**body: str) -> object:
        return (await gh.request("PATCH", path, json=body)).data["state_reason"]

    assert await patched(state="closed") == "completed"
    assert await patched(state="open") == "reopened"
    assert await patched(state="closed", state_reason="not_planned") == "not_planned"


async def test_pull_requests_are_listed_by_head_base_and_direction(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    first = fake.add_pull_request(REPO, "One", head="fix", base="main")["number"]
    second = fake.add_pull_request(REPO, "Two", head="feature", base="release")["number"]
    gh = token_client()
    pulls = f"/repos/{REPO}/pulls"

    async def listed(**params: str) -> list[int]:
        return [p["number"] for p in (await gh.request("GET", pulls, params=params)).data]

    assert await listed() == [second, first]
    assert await listed(direction="asc") == [first, second]
    assert await listed(head="octo-org:fix") == [first]
    assert await listed(head="someone-else:fix") == []
    assert await listed(base="release") == [second]


async def test_a_head_without_its_owner_is_ignored_as_github_ignores_it(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    """The fake answered `head=fix` (no `owner:`) with no pull requests; GitHub
    ignores such a head and lists every one (github/docs#16647), so a bot's missing
    owner passed its test. The owner is compared as GitHub compares logins."""
    first = fake.add_pull_request(REPO, "One", head="fix")["number"]
    second = fake.add_pull_request(REPO, "Two", head="feature")["number"]
    gh = token_client()

    async def listed(**params: str) -> list[int]:
        answer = await gh.request("GET", f"/repos/{REPO}/pulls", params=params)
        return [p["number"] for p in answer.data]

    assert await listed(head="fix") == [second, first]
    assert await listed(head="OCTO-ORG:fix") == [first]
    assert await listed(head="octo-org:FIX") == []
    with pytest.raises(ServerError, match="sort=popularity"):
        await listed(sort="popularity")


async def test_issue_search_honours_its_qualifiers_or_answers_501_naming_the_term(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    """The fake's search read `repo:` and `is:open` and dropped every other qualifier:
    `label:stale` found every issue."""
    fake.add_issue(REPO, "Stale bug", labels=["stale"])
    fake.add_pull_request(REPO, "Stale fix")
    gh = token_client()

    async def found(q: str) -> list[str]:
        answer = await gh.request("GET", "/search/issues", params={"q": q})
        return [i["title"] for i in answer.data["items"]]

    assert await found(f"repo:{REPO} label:stale") == ["Stale bug"]
    assert await found(f"repo:{REPO} -label:stale") == ["Found a bug", "Stale fix"]
    assert await found("stale is:pr") == await found("stale type:pr") == ["Stale fix"]
    assert await found("stale is:issue is:open") == ["Stale bug"]
    assert await found("author:ghbot-fake[bot] in:title fix") == ["Stale fix"]
    assert await found("author:octocat") == []
    for term in ("updated:<2024-01-01", "no:label", "-bug", "label:a,b", "OR", "is:merged"):
        with pytest.raises(ServerError) as caught:
            await found(f"repo:{REPO} {term}")
        assert caught.value.status == 501
        assert f"the search term {term!r} of GET /search/issues" in str(caught.value.message)
    with pytest.raises(ServerError, match="the query parameter sort=updated"):
        await gh.request("GET", "/search/issues", params={"q": "bug", "sort": "updated"})


async def test_issue_search_reads_a_quoted_label_whole(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    """The fake split `q` at spaces: `label:"good first issue"` was answered 501
    naming the fragment `'label:"good'`."""
    fake.add_issue(REPO, "Easy one", labels=["good first issue"])
    gh = token_client()

    async def found(q: str) -> list[str]:
        answer = await gh.request("GET", "/search/issues", params={"q": q})
        return [i["title"] for i in answer.data["items"]]

    assert await found(f'repo:{REPO} label:"good first issue"') == ["Easy one"]
    assert await found(f'repo:{REPO} -label:"Good First Issue"') == ["Found a bug"]
    with pytest.raises(ServerError) as caught:
        await found(f'repo:{REPO} "a phrase"')
    assert "the search term '\"a phrase\"'" in str(caught.value.message)
