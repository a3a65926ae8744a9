"""Redirects are followed explicitly: 301/302 for reads, 307/308 repeating the write."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ghbot.client import GitHub
from ghbot.errors import GitHubError
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
        fake.faults.add("/download$", "redirect", status=302, location=f"{other.url}/blob?sig=x")
        answer = await gh.request("GET", "/download")
    assert answer.data == {"from": "elsewhere"}
    assert "Authorization" not in other.seen[0]
    assert fake.requests[-1].headers["Authorization"].startswith("token ")


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
