"""Pagination by `Link: rel="next"`, lists wrapped in objects, and the app's deliveries."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ghbot.client import GitHub, GitHubApp, items_of, parse_links
from ghbot.errors import UsageError
from ghbot.testing import FakeGitHub

from .conftest import REPO


async def test_paginate_follows_next_links_verbatim(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    for n in range(2, 7):
        fake.add_issue(REPO, f"Issue {n}")
    gh = token_client()
    pages: list[str] = []
    numbers = [
        issue["number"]
        async for issue in gh.paginate(f"/repos/{REPO}/issues", params={"per_page": 2})
    ]
    assert numbers == [6, 5, 4, 3, 2, 1]
    sent = fake.requests_to(f"/repos/{REPO}/issues")
    assert [r.query for r in sent] == ["per_page=2", "per_page=2&page=2", "per_page=2&page=3"]
    first = await gh.request("GET", f"/repos/{REPO}/issues", params={"per_page": 2})
    pages.append(first.links["next"])
    assert sent[1].url == pages[0], "the next URL is used exactly as GitHub sent it"
    assert set(first.links) == {"next", "last"}


async def test_paginate_finds_items_wrapped_in_an_object(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    repos = gh.paginate("/installation/repositories", params={"per_page": 1})
    names = [r["full_name"] async for r in repos]
    assert names == ["octo-org/hello-world", "octo-org/other"]
    fake.add_issue(REPO, "Another bug")
    titles = [i["title"] async for i in gh.paginate("/search/issues", params={"q": "bug"})]
    assert sorted(titles) == ["Another bug", "Found a bug"]


async def test_app_lists_installations(app: GitHubApp) -> None:
    assert [i["id"] async for i in app.installations(per_page=1)] == [1, 2]
    assert (await app.get_installation(2))["account"]["login"] == "acme"


async def test_hook_deliveries_use_cursor_pagination(fake: FakeGitHub, app: GitHubApp) -> None:
    guids = [fake.add_delivery("issues", {"action": "opened"})["guid"] for _ in range(5)]
    fake.add_delivery("issues", {"action": "closed"}, status_code=500, guid=guids[0])
    seen = [d async for d in app.hook_deliveries(per_page=2)]
    assert [d["guid"] for d in seen] == [guids[0], *guids[::-1]]
    assert seen[0]["status"] == "Invalid HTTP Response: 500" and seen[1]["status"] == "OK"
    cursors = [r.query for r in fake.requests_to("/app/hook/deliveries")]
    assert cursors[0] == "per_page=2" and all("cursor=" in q for q in cursors[1:])
    with pytest.raises(UsageError, match="per_page"):
        app.hook_deliveries(per_page=101)


def test_items_of_reads_every_page_shape() -> None:
    assert items_of([1, 2]) == [1, 2]
    assert items_of(None) == []
    assert items_of({"total_count": 2, "incomplete_results": False, "items": [1, 2]}) == [1, 2]
    assert items_of({"total_count": 1, "repositories": [3]}) == [3]
    assert items_of({"total_count": 1, "workflow_runs": [4]}) == [4]
    assert items_of({"total_count": 1, "things": [5]}) == [5]
    assert items_of({"a": [1], "b": [2]}, key="b") == [2]
    with pytest.raises(UsageError, match="pass key="):
        items_of({"a": [1], "b": [2]})


def test_parse_links_keeps_urls_verbatim() -> None:
    # GitHub's example from "Using pagination in the REST API".
    header = (
        '<https://api.github.com/repositories/1300192/issues?page=2>; rel="prev", '
        '<https://api.github.com/repositories/1300192/issues?page=4>; rel="next", '
        '<https://api.github.com/repositories/1300192/issues?page=515>; rel="last", '
        '<https://api.github.com/repositories/1300192/issues?page=1>; rel="first"'
    )
    links = parse_links(header)
    assert links["next"] == "https://api.github.com/repositories/1300192/issues?page=4"
    assert set(links) == {"prev", "next", "last", "first"}
    assert parse_links(None) == {} and parse_links("") == {}
