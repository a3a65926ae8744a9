"""Redirects are followed explicitly: 301/302 for reads, 307/308 repeating the write."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ghbot.breaker import CircuitBreaker, State
from ghbot.client import GitHub, GitHubApp
from ghbot.errors import (
    ClientError,
    ConnectionFailed,
    GitHubError,
    RateLimited,
    ServerError,
    Unauthorized,
)
from ghbot.testing import FakeGitHub

from .conftest import REPO, scripted_server

NEW = "octo-org/renamed"


async def test_a_renamed_repository_answers_301_and_the_read_follows(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    fake.rename_repository(REPO, NEW)
    answer = await gh.request("GET", f"/repos/{REPO}/issues/1")
    assert answer.status == 200 and answer.data["title"] == "Found a bug"
    assert [r.path for r in fake.requests][-2:] == [
        f"/repos/{REPO}/issues/1",
        f"/repos/{NEW}/issues/1",
    ]
    assert fake.requests[-1].headers["Authorization"].startswith("token ")


async def test_a_307_repeats_the_patch_with_its_body(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    fake.rename_repository(REPO, NEW)
    answer = await gh.request("PATCH", f"/repos/{REPO}/issues/1", json={"title": "Renamed"})
    assert answer.data["title"] == "Renamed"
    moved, repeated = list(fake.requests)[-2:]
    assert (moved.method, repeated.method) == ("PATCH", "PATCH")
    assert repeated.path == f"/repos/{NEW}/issues/1" and repeated.json == {"title": "Renamed"}


@pytest.mark.parametrize("status", [307, 308])
async def test_a_307_or_308_repeats_the_post_with_its_body(
    fake: FakeGitHub, token_client: Callable[..., GitHub], status: int
) -> None:
    comments = f"/repos/{REPO}/issues/1/comments"
    fake.faults.add("/moved/comments$", "redirect", status=status, location=comments)
    answer = await token_client().request("POST", "/moved/comments", json={"body": "hi"})
    assert answer.status == 201
    moved, repeated = list(fake.requests)[-2:]
    assert (moved.method, repeated.method) == ("POST", "POST")
    assert repeated.path == comments and repeated.json == {"body": "hi"}
    assert [c["body"] for c in fake.comments(REPO, 1)] == ["hi"]


async def test_a_302_to_a_head_is_followed(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    fake.faults.add("/moved$", "redirect", status=302, location=f"/repos/{REPO}/issues/1")
    answer = await token_client().request("HEAD", "/moved")
    assert answer.status == 200 and answer.data is None  # still HEAD: no body
    assert [(r.method, r.path) for r in fake.requests][-2:] == [
        ("HEAD", "/moved"),
        ("HEAD", f"/repos/{REPO}/issues/1"),
    ]


async def test_a_302_to_a_post_is_not_followed(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    fake.faults.add("/comments$", "redirect", status=302, location="/elsewhere")
    with pytest.raises(GitHubError) as caught:
        await token_client().request(
            "POST", f"/repos/{REPO}/issues/1/comments", json={"body": "hi"}
        )
    assert caught.value.status == 302
    assert len(fake.requests) == 1


async def test_redirect_hops_are_capped(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    fake.faults.add("/loop$", "redirect", count=None, status=301, location="/loop")
    with pytest.raises(GitHubError) as caught:
        await token_client().request("GET", "/loop")
    assert caught.value.status == 301
    assert len(fake.requests) == 6  # the request and five hops


async def test_credentials_never_follow_a_redirect_to_another_host(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    async with scripted_server() as other:
        other.answers.append((200, {"Content-Type": "application/json"}, b'{"from": "elsewhere"}'))
        fake.faults.add(
            "/download$", "redirect", status=302, location=f"{other.url}/blob?sig=s3cr3t"
        )
        answer = await gh.request("GET", "/download")
    assert answer.data == {"from": "elsewhere"}
    assert "Authorization" not in other.seen[0]
    assert fake.requests[-1].headers["Authorization"].startswith("token ")
    # The answer keeps where it came from; its repr, for logs, not the signature.
    assert answer.url == f"{other.url}/blob?sig=s3cr3t"
    assert "s3cr3t" not in repr(answer) and answer.shown() == f"{other.url}/blob"


async def test_a_credential_in_a_query_at_home_is_not_shown(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    """GitHub Enterprise Server hands out raw-file URLs on its own host with a `token`
    in the query: an error or an answer shows the parameter, not its value."""
    gh = token_client()
    with pytest.raises(GitHubError) as missing:
        await gh.request("GET", "/raw/octo-org/none/main/a.txt?token=s3cr3t&lines=2")
    assert "s3cr3t" not in str(missing.value) and "s3cr3t" not in repr(missing.value)
    assert missing.value.url.endswith("/raw/octo-org/none/main/a.txt?token=redacted&lines=2")
    answer = await gh.request("GET", f"/repos/{REPO}?access_token=s3cr3t")
    assert "s3cr3t" not in repr(answer) and "access_token=redacted" in answer.shown()


async def test_another_hosts_clock_is_not_taken_for_githubs(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    """A redirect to storage elsewhere answers with its own `Date`, an hour off here:
    GitHub's clock, which the rate-limit budgets compare resets with, is learned from
    GitHub's answers only."""
    gh = token_client()
    await gh.request("GET", f"/repos/{REPO}")
    offset = gh.budgets.clock.offset
    skewed = {"Content-Type": "application/json", "Date": "Sat, 05 Dec 2099 10:00:00 GMT"}
    async with scripted_server() as other:
        other.answers.append((200, skewed, b"{}"))
        fake.faults.add("/download$", "redirect", status=302, location=f"{other.url}/blob")
        await gh.request("GET", "/download")
    assert gh.budgets.clock.offset == offset


async def test_another_hosts_failures_and_limits_do_not_hold_the_installation(
    fake: FakeGitHub, token_client: Callable[..., GitHub], clock: Callable[[], float]
) -> None:
    """Storage a redirect leads to answers 429 and 503: errors of the request, not
    GitHub's rate limit or failures. The installation is not paused, its breaker stays
    closed, and no message shows the pre-signed URL's signature."""
    breaker = CircuitBreaker(min_calls=2, open_for=30)
    gh = token_client(breaker=breaker)
    signed = "blob?X-Amz-Signature=s3cr3t&sig=s3cr3t"
    async with scripted_server() as other:
        fake.faults.add(
            "/download$", "redirect", None, status=302, location=f"{other.url}/{signed}"
        )
        other.answers.append((429, {"Retry-After": "600"}, b"slow down"))
        with pytest.raises(ClientError) as limited:
            await gh.request("GET", "/download")
        other.answers += [(503, {}, b"busy")] * 4  # the request and its 3 retries
        with pytest.raises(ServerError) as failed:
            await gh.request("GET", "/download")
    assert not isinstance(limited.value, RateLimited) and limited.value.status == 429
    assert not gh.paused and breaker.state(clock()) is State.CLOSED
    for error in (limited.value, failed.value):
        assert "s3cr3t" not in str(error) and "s3cr3t" not in repr(error)
        assert error.url == f"{other.url}/blob"
    assert (await gh.request("GET", f"/repos/{REPO}")).status == 200


async def test_a_callers_headers_replace_the_clients_whatever_their_case(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    """`accept` replaces the default `Accept` (not sent beside it), and an
    `authorization` a caller gives is dropped at a redirect to another host."""
    gh = token_client()
    given = {"accept": "application/vnd.github.raw+json", "x-github-api-version": "2026-03-10"}
    async with scripted_server() as other:
        other.answers.append((200, {"Content-Type": "text/plain"}, b"raw"))
        await gh.request("GET", f"{other.url}/file", headers=given)
        other.answers.append((200, {"Content-Type": "text/plain"}, b"raw"))
        fake.faults.add("/download$", "redirect", status=302, location=f"{other.url}/blob")
        await gh.request("GET", "/download", headers={"authorization": "token mine"})
    sent = other.raw[0]
    assert [v for k, v in sent if k.lower() == "accept"] == ["application/vnd.github.raw+json"]
    assert [v for k, v in sent if k.lower() == "x-github-api-version"] == ["2026-03-10"]
    assert not [k for k, _ in other.raw[1] if k.lower() == "authorization"]


async def test_another_hosts_401_renews_no_token_and_its_broken_answer_is_not_shown(
    fake: FakeGitHub, app: GitHubApp, clock: Callable[[], float]
) -> None:
    """A 401 from storage says nothing of the installation's token: no exchange. And a
    host that answers no HTTP at all fails the request with the error's type only
    (aiohttp's text holds the URL, its signature too), uncounted by the breaker."""
    breaker = CircuitBreaker(min_calls=1, open_for=30)
    gh = app.installation(1, breaker=breaker)
    exchanges = "/app/installations/1/access_tokens"
    async with scripted_server() as other:
        fake.faults.add("/download$", "redirect", None, status=302, location=f"{other.url}/blob")
        other.answers.append((401, {}, b"expired signature"))
        with pytest.raises(Unauthorized):
            await gh.request("GET", "/download")
    assert len(fake.requests_to(exchanges, "POST")) == 1  # the first token, no other
    garbage = await asyncio.start_server(_no_http, "127.0.0.1", 0)
    port = garbage.sockets[0].getsockname()[1]
    async with garbage:
        location = f"http://127.0.0.1:{port}/blob?X-Amz-Signature=s3cr3t"
        fake.faults.add("/file$", "redirect", None, status=302, location=location)
        with pytest.raises(ConnectionFailed) as failed:
            await gh.request("GET", "/file")
    assert "s3cr3t" not in str(failed.value) and "s3cr3t" not in repr(failed.value)
    assert breaker.state(clock()) is State.CLOSED


async def _no_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer anything with bytes that are not HTTP."""
    await reader.read(1024)
    writer.write(b"this is not HTTP\r\n\r\n")
    await writer.drain()
    writer.close()
