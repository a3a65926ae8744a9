"""GraphQL: queries with variables, errors, rate limits, and the GHES endpoint."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ghbot.client import GitHub
from ghbot.client.call import is_mutation
from ghbot.client.response import graphql_error
from ghbot.errors import GraphQLError, RateLimited
from ghbot.testing import FakeGitHub
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


async def test_viewer_login(token_client: Callable[..., GitHub]) -> None:
    data = await token_client().graphql("query { viewer { login } }")
    assert data == {"viewer": {"login": "ghbot-fake[bot]"}}


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
