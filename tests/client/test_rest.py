"""The typed REST surface (`GitHub.rest`) against the fake GitHub.

The fake answers as GitHub does for what it implements (issues, comments, labels,
pulls, check runs, statuses, installation repositories); each call here goes through
the same `request()` as untyped calls, so tokens, retries, pacing and ETags apply.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ghbot.client import ClientOptions, GitHub
from ghbot.errors import GitHubError, NotFound, UsageError, ValidationFailed
from ghbot.rest.models import CheckRun, Issue, IssueComment, Label, SimpleUser, Status
from ghbot.testing import FakeClock, FakeGitHub

from .conftest import REPO

OWNER, NAME = REPO.split("/")


async def test_create_comment_returns_an_issue_comment(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    comment = await gh.rest.issues.create_comment(
        owner=OWNER, repo=NAME, issue_number=1, body="Thanks!"
    )
    assert isinstance(comment, IssueComment)
    assert comment.body == "Thanks!" and comment.id > 0
    assert comment.html_url.endswith(f"#issuecomment-{comment.id}")
    assert isinstance(comment.user, SimpleUser)
    sent = fake.requests_to(f"/repos/{REPO}/issues/1/comments")[-1]
    assert sent.method == "POST" and sent.json == {"body": "Thanks!"}
    assert fake.comments(REPO, 1)[-1]["body"] == "Thanks!"


async def test_get_update_and_label_an_issue(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    issue = await gh.rest.issues.get(owner=OWNER, repo=NAME, issue_number=1)
    assert isinstance(issue, Issue)
    assert (issue.number, issue.title, issue.state) == (1, "Found a bug", "open")
    labels = await gh.rest.issues.add_labels(
        owner=OWNER, repo=NAME, issue_number=1, labels=["bug", "triage"]
    )
    assert all(isinstance(label, Label) for label in labels)
    assert sorted(label.name for label in labels) == ["bug", "triage"]
    closed = await gh.rest.issues.update(owner=OWNER, repo=NAME, issue_number=1, state="closed")
    assert closed.state == "closed"
    assert isinstance(closed, Issue), "an issue with `suggestions` is still an Issue"
    sent = fake.requests_to(f"/repos/{REPO}/issues/1")[-1]
    assert sent.json == {"state": "closed"}, "arguments left out are not sent"
    await gh.rest.issues.update(owner=OWNER, repo=NAME, issue_number=1, milestone=None)
    sent = fake.requests_to(f"/repos/{REPO}/issues/1")[-1]
    assert sent.json == {"milestone": None}, "None is sent as null: the milestone removed"
    await gh.rest.issues.list_comments(owner=OWNER, repo=NAME, issue_number=1, per_page=5)
    (listed,) = fake.requests_to(f"/repos/{REPO}/issues/1/comments", "GET")
    assert listed.url.endswith("/comments?per_page=5"), "query parameters left at None: not sent"
    await gh.rest.issues.add_labels(owner=OWNER, repo=NAME, issue_number=1, labels=["good 1st"])
    left = await gh.rest.issues.remove_label(
        owner=OWNER, repo=NAME, issue_number=1, name="good 1st"
    )
    assert sorted(label.name for label in left) == ["bug", "triage"]
    (sent,) = fake.requests_to(f"/repos/{REPO}/issues/1/labels/good 1st", "DELETE")
    assert sent.url.endswith("/labels/good%201st"), "a path value is percent-encoded"


async def test_paginate_yields_typed_items_following_links(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    for n in range(2, 6):
        fake.add_issue(REPO, f"Issue {n}")
    gh = token_client()
    issues = gh.rest.paginate(
        gh.rest.issues.list_for_repo, owner=OWNER, repo=NAME, per_page=2, state="open"
    )
    numbers = [issue.number async for issue in issues]
    assert numbers == [5, 4, 3, 2, 1]
    sent = fake.requests_to(f"/repos/{REPO}/issues")
    assert [r.query for r in sent] == [
        "state=open&per_page=2",
        "state=open&per_page=2&page=2",
        "state=open&per_page=2&page=3",
    ]


async def test_a_page_that_does_not_fit_names_that_page_and_its_request_id(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    for n in range(2, 6):
        fake.add_issue(REPO, f"Issue {n}")["title"] = 7 if n == 2 else f"Issue {n}"
    gh = token_client()
    issues = gh.rest.paginate(gh.rest.issues.list_for_repo, owner=OWNER, repo=NAME, per_page=2)
    seen = []
    with pytest.raises(GitHubError, match="does not fit Issue") as caught:
        async for issue in issues:
            seen.append(issue.number)
    assert seen == [5, 4, 3]
    assert [r.query for r in fake.requests_to(f"/repos/{REPO}/issues")][-1] == "per_page=2&page=2"
    assert caught.value.url.endswith("/issues?per_page=2&page=2"), "the page, not the template"
    assert caught.value.request_id is not None and caught.value.request_id.startswith("FAKE:")


async def test_paginate_reads_items_wrapped_in_an_object(
    token_client: Callable[..., GitHub],
) -> None:
    gh = token_client()
    pages = gh.rest.paginate(gh.rest.apps.list_repos_accessible_to_installation, per_page=1)
    names = [repo.full_name async for repo in pages]
    assert names == ["octo-org/hello-world", "octo-org/other"]


async def test_paginate_refuses_what_does_not_page(token_client: Callable[..., GitHub]) -> None:
    gh = token_client()
    # mypy refuses all three (a `get` returns no list; `colour` is no parameter).
    get = gh.rest.issues.get
    with pytest.raises(UsageError, match="does not page"):
        gh.rest.paginate(get, owner=OWNER, repo=NAME, issue_number=1)  # type: ignore[call-overload]
    compare = gh.rest.repos.compare_commits  # takes `per_page`, but answers one object
    with pytest.raises(UsageError, match="does not page"):
        gh.rest.paginate(compare, owner=OWNER, repo=NAME, base="a", head="b", per_page=10)  # type: ignore[call-overload]
    listing = gh.rest.issues.list_for_repo
    with pytest.raises(UsageError, match="takes no"):
        gh.rest.paginate(listing, owner=OWNER, repo=NAME, colour="red")  # type: ignore[call-overload]
    with pytest.raises(UsageError, match="not a method"):
        gh.rest.paginate(print)  # type: ignore[call-overload]


async def test_check_runs_and_statuses(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    run = await gh.rest.checks.create(
        owner=OWNER,
        repo=NAME,
        name="lint",
        head_sha="a" * 40,
        external_id="job-7",
        status="in_progress",
    )
    assert isinstance(run, CheckRun)
    assert (run.name, run.head_sha, run.external_id, run.status) == (
        "lint",
        "a" * 40,
        "job-7",
        "in_progress",
    )
    done = await gh.rest.checks.update(
        owner=OWNER,
        repo=NAME,
        check_run_id=run.id,
        conclusion="success",
        output={"title": "ok", "summary": "-"},
    )
    assert (done.status, done.conclusion) == ("completed", "success")
    status = await gh.rest.repos.create_commit_status(
        owner=OWNER, repo=NAME, sha="b" * 40, state="success", context="ci"
    )
    assert isinstance(status, Status) and status.state == "success"


async def test_a_422_raises_validation_failed_with_errors(
    token_client: Callable[..., GitHub],
) -> None:
    gh = token_client()
    with pytest.raises(ValidationFailed) as caught:
        await gh.rest.repos.create_commit_status(
            owner=OWNER,
            repo=NAME,
            sha="b" * 40,
            state="fine",  # type: ignore[arg-type]
        )
    assert caught.value.status == 422
    (error,) = caught.value.errors
    assert isinstance(error, dict) and error["field"] == "state"
    with pytest.raises(NotFound):
        await gh.rest.issues.get(owner=OWNER, repo=NAME, issue_number=999)


async def test_typed_gets_use_the_etag_cache(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    gh = token_client()
    first = await gh.rest.issues.get(owner=OWNER, repo=NAME, issue_number=1)
    again = await gh.rest.issues.get(owner=OWNER, repo=NAME, issue_number=1)
    assert again == first
    sent = fake.requests_to(f"/repos/{REPO}/issues/1")
    assert "If-None-Match" in sent[-1].headers
    assert gh.options.etags is not None and gh.options.etags.hits == 1


def test_rest_is_a_view_over_its_client() -> None:
    gh = GitHub(token="t")
    assert gh.rest.issues._github is gh
    leased = gh.with_lease(gh.budgets.core.lease(1, 0.0))
    assert leased.rest.issues._github is leased


async def test_paginate_search_reads_items_beside_other_lists(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    # The description's answer has two lists (`items`, `lexical_fallback_reason`): the
    # generator picked `items`, the list of objects.
    fake.add_issue(REPO, "Another bug")
    gh = token_client()
    found = gh.rest.paginate(gh.rest.search.issues_and_pull_requests, q="bug", per_page=1)
    titles = sorted([item.title async for item in found])
    assert titles == ["Another bug", "Found a bug"]
    assert len(fake.requests_to("/search/issues")) == 2


async def test_typed_calls_ride_the_clients_retries_limits_and_pacing(
    fake: FakeGitHub,
    clock: FakeClock,
    options: ClientOptions,
    token_client: Callable[..., GitHub],
) -> None:
    fake.faults.add("/issues/1$", "server_error", count=1)
    fake.faults.add("/issues/1/comments$", "secondary", retry_after=3, method="POST")
    gh = token_client(options=options.replace(pace_writes=1.0))
    issue = await gh.rest.issues.get(owner=OWNER, repo=NAME, issue_number=1)
    assert issue.number == 1 and len(fake.requests_to(f"/repos/{REPO}/issues/1")) == 2
    first = await gh.rest.issues.create_comment(owner=OWNER, repo=NAME, issue_number=1, body="a")
    second = await gh.rest.issues.create_comment(owner=OWNER, repo=NAME, issue_number=1, body="b")
    assert (first.body, second.body) == ("a", "b")
    assert len(fake.requests_to(f"/repos/{REPO}/issues/1/comments", "POST")) == 3
    backoff, *waits = clock.sleeps
    assert backoff < 1.0 and sum(waits[:2]) == 3.0, "the limit's 3 s were waited out"
    assert waits[2:] == [1.0], "the second write was paced a second after the first"


async def test_an_upload_from_a_ghes_base_goes_to_its_api_uploads(options: ClientOptions) -> None:
    """docs/rest.md: uploads go to `https://HOST/api/uploads` from a GHES
    `https://HOST/api/v3`; answered here with GitHub's recorded upload exchange."""
    import json
    from pathlib import Path

    from aiohttp import web

    recorded = json.loads(
        (Path(__file__).parents[1] / "fixtures" / "api" / "release-assets.json").read_text()
    )
    [upload] = [e for e in recorded if e["method"] == "post"]
    seen: list[tuple[str, str, str, bytes]] = []

    async def anything(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append((request.method, request.path_qs, request.content_type, body))
        return web.json_response(upload["response"], status=201)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        gh = GitHub(token="ghs_t", base_url=f"http://127.0.0.1:{port}/api/v3", options=options)
        asset = await gh.rest.repos.upload_release_asset(
            owner="o", repo="r", release_id=1000, name="test-upload.txt",
            data=b"Hello, world!\n", content_type="text/plain",
        )  # fmt: skip
    finally:
        await runner.cleanup()
    assert seen == [
        (
            "POST",
            "/api/uploads/repos/o/r/releases/1000/assets?name=test-upload.txt",
            "text/plain",
            b"Hello, world!\n",
        )
    ]
    assert asset.name == upload["response"]["name"] and asset.state == "uploaded"


async def test_a_body_property_named_like_a_path_parameter_is_sent_under_githubs_name(
    fake: FakeGitHub, token_client: Callable[..., GitHub]
) -> None:
    """docs/rest.md: `name_` in `actions.update_repo_variable` is the body's `name`,
    beside the path's `name` (the fake has no variables: a stub answers)."""
    gh = token_client()
    fake.stub("PATCH", "/repos/{owner}/{repo}/actions/variables/{name}", status=204)
    await gh.rest.actions.update_repo_variable(
        owner=OWNER, repo=NAME, name="OLD_NAME", name_="NEW_NAME", value="v"
    )
    (sent,) = fake.requests_to(f"/repos/{REPO}/actions/variables/OLD_NAME", "PATCH")
    assert sent.json == {"name": "NEW_NAME", "value": "v"}
