"""GraphQL: queries with variables, errors, rate limits, and the GHES endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ghbot.client import ClientOptions, GitHub
from ghbot.client.call import is_mutation
from ghbot.client.response import graphql_error
from ghbot.errors import GraphQLError, RateLimited
from ghbot.testing import FakeClock, FakeGitHub
from ghbot.testing.router import Ctx, Reply
from ghbot.testing.server import MSG_SECONDARY
from ghbot.testing.writes import is_write

from .conftest import REPO

ISSUE_TITLE = """
query IssueTitle($owner: String!, $name: String!, $number: Int!) {
  repository(owner: $owner, name: $name) {
    nameWithOwner
    issue(number: $number) { title state }
  }
}
"""


VIEWER = {"viewer": {"login": "ghbot-fake[bot]"}}


async def test_viewer_login(token_client: Callable[..., GitHub]) -> None:
    data = await token_client().graphql("query { viewer { login } }")
    assert data == VIEWER


async def test_query_with_variables(fake: FakeGitHub, token_client: Callable[..., GitHub]) -> None:
    gh = token_client()
    data = await gh.graphql(ISSUE_TITLE, owner="octo-org", name="hello-world", number=1)
    assert data["repository"] == {
        "nameWithOwner": REPO,
        "issue": {"title": "Found a bug", "state": "OPEN"},
    }
    sent = fake.requests_to("/graphql")[0]
    assert sent.json["variables"] == {"owner": "octo-org", "name": "hello-world", "number": 1}
    assert gh.budgets.get("graphql").remaining == 4999


async def test_errors_raise_graphql_error(token_client: Callable[..., GitHub]) -> None:
    with pytest.raises(GraphQLError) as caught:
        await token_client().graphql(ISSUE_TITLE, owner="octo-org", name="missing", number=1)
    error = caught.value
    assert error.errors[0]["type"] == "NOT_FOUND"
    assert "Could not resolve to a Repository" in error.message
    assert error.data["data"] == {"repository": None}
    assert error.method == "POST" and error.url.endswith("/graphql")


async def test_ghes_graphql_lives_beside_api_v3(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client(base_url=f"{fake.url}/api/v3")
    assert await gh.graphql("{ viewer { login } }") == {"viewer": {"login": "ghbot-fake[bot]"}}
    assert fake.requests[-1].url == f"{fake.url}/api/graphql"


def test_rate_limited_graphql_errors_raise_rate_limited() -> None:
    data = {"errors": [{"type": "RATE_LIMITED", "message": "API rate limit exceeded"}]}
    error = graphql_error(data, url="https://api.github.com/graphql", request_id="r", wait=42.0)
    assert isinstance(error, RateLimited)
    assert (error.kind, error.retry_after, error.request_id) == ("primary", 42.0, "r")
    # The reset not known (no answer told it): a minute, not an immediate rerun.
    unknown = graphql_error(data, url="https://api.github.com/graphql", request_id="r", wait=0.0)
    assert isinstance(unknown, RateLimited) and unknown.retry_after == 60.0


async def test_a_rate_limit_of_either_type_github_answers_is_rate_limited(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    """GitHub has answered `RATE_LIMIT` (code `graphql_rate_limit`) besides the
    `RATE_LIMITED` its docs show, with a 200 and requests left in the headers: it was a
    plain `GraphQLError`, each attempt of the handler spent on it and dead-lettered."""
    gh = token_client()
    limited = {"type": "RATE_LIMIT", "code": "graphql_rate_limit", "message": "API rate limit"}
    fake.stub("POST", "/graphql", {"errors": [limited]})
    with pytest.raises(RateLimited) as caught:
        await gh.graphql("{ viewer { login } }")
    assert (caught.value.status, caught.value.kind) == (200, "primary")
    assert caught.value.retry_after > 0  # never 0: a handler would rerun at once


def _limited_first(fake: FakeGitHub, times: int, message: str, **headers: str) -> None:
    """Answer the next `times` GraphQL requests 200 with a rate-limit error of
    `message` and `headers` (with the caller's requests left), then as usual."""
    found = fake.router.match("POST", "/graphql")
    assert found is not None
    route, left = found[0], [times]

    def answer(ctx: Ctx) -> Any:
        if left[0] <= 0:
            return route.handler(ctx)
        left[0] -= 1
        return Reply({"errors": [{"type": "RATE_LIMITED", "message": message}]}, headers=headers)

    fake.router.add("POST", "/graphql", answer, first=True)


async def test_a_graphql_secondary_limit_answered_200_is_waited_out_as_a_rest_one(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    """GitHub answers a GraphQL secondary limit 200, its message saying so, with
    `retry-after: 30` and requests left: the client waits the 30 s, the installation
    paused meanwhile, and asks again. It was taken for a primary limit: raised at
    once, to wait for the GraphQL window's reset (most of an hour), with no pause."""
    gh = token_client()
    _limited_first(fake, 1, MSG_SECONDARY, **{"retry-after": "30"})
    assert await gh.graphql("query { viewer { login } }") == VIEWER
    assert clock.sleeps == [30.0]
    assert len(fake.requests_to("/graphql")) == 2


async def test_graphql_secondary_limits_in_a_row_pause_and_double_as_rest_ones(
    fake: FakeGitHub, clock: FakeClock, options: ClientOptions
) -> None:
    """Without `retry-after`, GitHub's GraphQL secondary limits (200s) pause the
    installation a minute, then two: the row is counted as a 403's is. Each was a
    primary limit, and its 200 ended the row of secondary limits."""
    gh = GitHub(token=fake.create_token(1), options=options.replace(max_rate_limit_waits=0))
    _limited_first(fake, 2, MSG_SECONDARY)
    waits = []
    for _ in range(2):
        with pytest.raises(RateLimited) as caught:
            await gh.graphql("query { viewer { login } }")
        assert (caught.value.kind, caught.value.status) == ("secondary", 200)
        assert gh.paused
        waits.append(caught.value.retry_after)
        clock.advance(caught.value.retry_after)
    assert waits == [60.0, 120.0]
    assert await gh.graphql("query { viewer { login } }") == VIEWER


async def test_a_graphql_primary_limit_waits_for_its_reset_by_githubs_clock(
    fake: FakeGitHub, clock: FakeClock, token_client: Callable[..., GitHub]
) -> None:
    """A GraphQL primary limit (`x-ratelimit-remaining: 0`) waits for the window's
    reset, and pauses nothing."""
    gh = token_client()
    reset = str(int(clock()) + 1800)
    limits = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}
    _limited_first(fake, 1, "API rate limit exceeded for installation ID 1.", **limits)
    with pytest.raises(RateLimited) as caught:
        await gh.graphql("query { viewer { login } }")
    assert caught.value.kind == "primary" and not gh.paused
    assert caught.value.retry_after == pytest.approx(1801, abs=1)
    assert caught.value.reset_after == pytest.approx(1800, abs=1)


@pytest.mark.parametrize(
    ("document", "mutation"),
    [
        ("mutation { addComment(input: {}) { clientMutationId } }", True),
        ("  # why\nmutation Add($id: ID!) { addComment(input: {subjectId: $id}) { x } }", True),
        ("fragment F on Issue { id }\nmutation { closeIssue(input: {}) { issue { ...F } } }", True),
        ("query { viewer { login } }", False),
        ('{ repository(owner: "o", name: "r") { mutationTestingEnabled } }', False),
        ('{ repository(owner: "o", name: "r") { owner { login } mutationTestingEnabled } }', False),
        ("# mutation { later }\nquery { viewer { login } }", False),
    ],
)
def test_a_mutation_is_found_after_comments_and_fragments(document: str, mutation: bool) -> None:
    # A mutation is a write: paced, and never cut short by a draining shard once sent.
    assert is_mutation(document) is mutation
    assert is_write("POST", "/graphql", {"query": document}) is mutation  # the fake agrees
