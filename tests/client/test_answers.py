"""Answers as GitHub (or a host it redirects to) may send them and the fake GitHub does
not, each scripted: text and error pages, odd conditional answers, redirects away and
back, rate-limit headers of other resources, GraphQL error lists, `Link` headers with
spaces; and the client's own checks around them."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import pytest

from ghbot.auth import AppAuth
from ghbot.client import ClientOptions, GitHub, items_of, parse_links
from ghbot.client.call import api_origins
from ghbot.client.response import error_for, graphql_error
from ghbot.errors import (
    GitHubError,
    GraphQLError,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    UsageError,
)
from ghbot.testing.identity import Quota
from tests.tracing import recorder
from tests.watching import watching

from .conftest import Scripted, scripted_server


@pytest.fixture
async def server() -> AsyncIterator[Scripted]:
    async with scripted_server() as scripted:
        yield scripted


@pytest.fixture
def gh(server: Scripted, options: ClientOptions) -> GitHub:
    return GitHub(token="ghs_answers", base_url=server.url, options=options)


def limit_headers(
    resource: str, remaining: int, limit: int = 5000, reset: float = 4102444800.0
) -> dict[str, str]:
    """GitHub's `x-ratelimit-*` headers, as the fake GitHub writes them."""
    quota = Quota(limit, reset)
    quota.remaining = remaining
    return quota.headers(resource)


async def test_a_text_answer_is_decoded_as_utf8(server: Scripted, gh: GitHub) -> None:
    """`Accept: application/vnd.github.raw` gives a file's bytes, not JSON."""
    server.answers.append((200, {"Content-Type": "text/plain"}, "héllo ✓\n".encode()))
    answer = await gh.request("GET", "/repos/o/r/contents/README")
    assert answer.data == "héllo ✓\n"


async def test_an_error_page_that_is_not_json_gives_its_text_cut_short(
    server: Scripted, gh: GitHub
) -> None:
    page = "<html>" + "x" * 500 + "</html>"
    server.answers += [(502, {"Content-Type": "application/json"}, page.encode())] * 4
    with pytest.raises(ServerError) as caught:
        await gh.request("GET", "/repos/o/r")
    assert caught.value.status == 502
    assert caught.value.message == page[:200]
    assert caught.value.data == page


async def test_an_error_without_a_message_says_its_status(server: Scripted, gh: GitHub) -> None:
    server.answers += [
        (404, {"Content-Type": "application/json"}, b'{"message": ""}'),
        (404, {"Content-Type": "text/plain"}, b"  \n "),
    ]
    for _ in range(2):
        with pytest.raises(NotFound) as caught:
            await gh.request("GET", "/repos/o/gone")
        assert caught.value.message == "HTTP 404"


async def test_a_304_keeps_the_cached_bodys_headers(server: Scripted, gh: GitHub) -> None:
    """A 304 describes no body: its `Content-Type` and `Content-Length` do not replace
    the cached answer's, its other headers do."""
    json_type = {"Content-Type": "application/json; charset=utf-8"}
    server.answers += [
        (200, {**json_type, "ETag": '"v1"', "X-Seen": "first"}, b'{"id": 1}'),
        (304, {"Content-Type": "text/plain", "ETag": '"v1"', "X-Seen": "second"}, b""),
    ]
    first = await gh.request("GET", "/repos/o/r")
    again = await gh.request("GET", "/repos/o/r")
    assert server.seen[1]["If-None-Match"] == '"v1"'
    assert again.cached and again.data == {"id": 1}
    assert again.headers["Content-Type"] == json_type["Content-Type"]
    assert again.headers["Content-Length"] == first.headers["Content-Length"] == "9"
    assert again.headers["X-Seen"] == "second"


async def test_only_a_200_is_cached(server: Scripted, gh: GitHub) -> None:
    """GitHub's statistics answer 202 while it computes them: that empty answer is not
    kept, so the next request is not conditional."""
    server.answers += [
        (202, {"Content-Type": "application/json", "ETag": '"computing"'}, b"{}"),
        (200, {"Content-Type": "application/json", "ETag": '"done"'}, b"[1]"),
    ]
    assert (await gh.request("GET", "/repos/o/r/stats/contributors")).status == 202
    assert (await gh.request("GET", "/repos/o/r/stats/contributors")).data == [1]
    assert "If-None-Match" not in server.seen[1]


def test_graphql_errors_are_read_whatever_their_order_and_shape() -> None:
    where: dict[str, Any] = {"url": "https://api.github.com/graphql", "request_id": "r"}
    where["wait"] = 9.0
    limited = {"errors": ["odd", {"type": "OTHER"}, {"type": "RATE_LIMITED"}]}
    error = graphql_error(limited, **where)
    assert isinstance(error, RateLimited) and error.retry_after == 9.0
    first = {"errors": [{"type": "RATE_LIMITED", "message": "You have exceeded a limit"}]}
    assert graphql_error(first, **where).message == "You have exceeded a limit"
    other = graphql_error({"errors": ["odd", {"type": "NOT_FOUND"}]}, **where)
    assert isinstance(other, GraphQLError) and other.errors == [{"type": "NOT_FOUND"}]


_WHERE: dict[str, Any] = {"method": "GET", "url": "u", "now": 0.0}


def test_an_error_message_is_githubs_or_the_status() -> None:
    assert error_for(500, {"message": "boom"}, {}, **_WHERE).message == "boom"
    assert error_for(500, {"message": ""}, {}, **_WHERE).message == "HTTP 500"
    assert isinstance(error_for(500, None, {}, **_WHERE), ServerError)


def test_link_headers_may_have_spaces_around_the_semicolon() -> None:
    header = '<https://x/2> ; rel="next", <https://x/9>;rel=last'
    assert parse_links(header) == {"next": "https://x/2", "last": "https://x/9"}


def test_items_under_a_named_key_that_holds_no_list_are_none() -> None:
    assert items_of({"total_count": 0}, key="items") == []
    assert items_of({"items": None}, key="items") == []


def test_a_rate_limit_with_an_unreadable_reset_is_still_a_rate_limit() -> None:
    # Not written in ASCII digits (`ghbot.digits`): `float` took all but the first.
    for unreadable in ("soon", "+1700000000", "1_700_000_000", "nan", "\u0661\u0667"):
        headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": unreadable}
        error = error_for(403, {"message": "API rate limit exceeded"}, headers, **_WHERE)
        assert isinstance(error, RateLimited) and error.reset is None, unreadable


async def test_a_redirect_without_a_location_is_an_error(server: Scripted, gh: GitHub) -> None:
    server.answers.append((302, {}, b""))
    with pytest.raises(GitHubError, match="redirect without a Location") as caught:
        await gh.request("GET", "/repos/o/r")
    assert caught.value.status == 302 and len(server.seen) == 1


async def test_user_information_in_a_url_stays_out_of_errors(
    server: Scripted, gh: GitHub, options: ClientOptions
) -> None:
    """A URL may carry a user and password: a client without credentials sends them
    (aiohttp does, as Basic auth); one with credentials refuses the URL."""
    server.answers.append((404, {"Content-Type": "application/json"}, b'{"message": "no"}'))
    secret_url = server.url.replace("http://", "http://someone:hunter2@") + "/repos/o/r"
    with pytest.raises(NotFound) as caught:
        await GitHub(options=options).request("GET", secret_url)
    assert server.seen[0]["Authorization"].startswith("Basic ")
    assert "hunter2" not in str(caught.value) and "hunter2" not in caught.value.url
    assert caught.value.url.endswith("/repos/o/r")
    # With credentials of its own, a client refuses such a URL before sending it.
    with pytest.raises(UsageError, match="carries a user") as refused:
        await gh.request("GET", secret_url)
    assert "hunter2" not in str(refused.value) and len(server.seen) == 1


async def test_a_jwt_is_corrected_for_clock_skew_once_per_request(
    server: Scripted, auth: AppAuth, options: ClientOptions
) -> None:
    """Each answer's `Date` moves GitHub's clock again; the request is sent again once."""
    skew = b"{\"message\": \"'Expiration time' claim ('exp') is too far in the future\"}"
    for minutes in (10, 20, 30):
        date = formatdate(time.time() + 60 * minutes, usegmt=True)
        server.answers.append((401, {"Content-Type": "application/json", "Date": date}, skew))
    with pytest.raises(Unauthorized, match="too far in the future"):
        await GitHub(auth=auth, base_url=server.url, options=options).request("GET", "/app")
    assert len(server.seen) == 2


async def test_a_callers_own_if_none_match_is_sent_as_given(server: Scripted, gh: GitHub) -> None:
    ok = {"Content-Type": "application/json", "ETag": '"cached"'}
    server.answers += [(200, ok, b"{}"), (304, {"ETag": '"mine"'}, b"")]
    await gh.request("GET", "/repos/o/r")
    answer = await gh.request("GET", "/repos/o/r", headers={"If-None-Match": '"mine"'})
    assert server.seen[1]["If-None-Match"] == '"mine"'
    assert answer.status == 304 and not answer.cached  # the caller's to read


async def test_only_a_get_is_conditional_and_each_accept_is_cached_apart(
    server: Scripted, gh: GitHub
) -> None:
    json_answer = (200, {"Content-Type": "application/json", "ETag": '"j"'}, b'{"a": 1}')
    raw_answer = (200, {"Content-Type": "text/plain", "ETag": '"r"'}, b"raw")
    server.answers += [json_answer, (200, {"Content-Type": "application/json"}, b"{}")]
    server.answers += [raw_answer, raw_answer]
    await gh.request("GET", "/repos/o/r/contents/f")
    await gh.request("POST", "/repos/o/r/contents/f", json={})
    raw = {"Accept": "application/vnd.github.raw"}
    await gh.request("GET", "/repos/o/r/contents/f", headers=raw)
    await gh.request("GET", "/repos/o/r/contents/f", headers=raw)
    assert [h.get("If-None-Match") for h in server.seen] == [None, None, None, '"r"']


async def test_a_span_leaves_out_a_remaining_count_that_is_not_a_number(
    server: Scripted, gh: GitHub
) -> None:
    spans = recorder()
    headers = {"Content-Type": "application/json", "x-ratelimit-remaining": "lots"}
    server.answers.append((200, headers, b"{}"))
    assert (await gh.request("GET", "/repos/o/r")).status == 200
    [span] = [s for s in spans.get_finished_spans() if s.name == "GitHub GET"]
    assert "github.rate_limit.remaining" not in (span.attributes or {})


async def test_a_method_in_lower_case_is_sent_and_named_in_upper_case(
    server: Scripted, gh: GitHub
) -> None:
    server.answers.append((201, {"Content-Type": "application/json"}, b"{}"))
    answer = await gh.request("post", "/repos/o/r/issues", json={"title": "t"})
    assert answer.method == "POST"


async def test_a_graphql_rate_limit_waits_for_the_graphql_budgets_reset(
    server: Scripted, gh: GitHub, options: ClientOptions
) -> None:
    reset = int(options.clock()) + 120
    headers = {"Content-Type": "application/json", **limit_headers("graphql", 0, reset=reset)}
    body = b'{"errors": [{"type": "RATE_LIMITED", "message": "API rate limit exceeded"}]}'
    server.answers.append((200, headers, body))
    with pytest.raises(RateLimited) as caught:
        await gh.graphql("query { viewer { login } }")
    assert caught.value.retry_after == pytest.approx(120, abs=2)


async def test_a_runners_watcher_hears_of_writes_github_did_and_not_of_refused_ones(
    server: Scripted, gh: GitHub, options: ClientOptions
) -> None:
    """GitHub answers a GraphQL rate limit with a 200: that mutation did nothing, so
    the watcher is not told it was written (a handler's attempt would be spent); a
    mutation answered and a REST write answered 201 are; a query is not."""
    headers = {"Content-Type": "application/json", **limit_headers("graphql", 0)}
    limited = b'{"errors": [{"type": "RATE_LIMITED", "message": "API rate limit exceeded"}]}'
    done = b'{"data": {"addComment": {"clientMutationId": null}}}'
    server.answers.extend(
        [
            (200, headers, limited),
            (200, {"Content-Type": "application/json"}, done),
            (200, {"Content-Type": "application/json"}, b'{"data": {"viewer": {}}}'),
            (201, {"Content-Type": "application/json"}, b"{}"),
        ]
    )
    mutation = "mutation { addComment(input: {}) { clientMutationId } }"
    with watching() as heard:
        with pytest.raises(RateLimited):
            await gh.graphql(mutation)
        assert heard.writes == 0
        again = GitHub(token="ghs_answers", base_url=server.url, options=options)
        await again.graphql(mutation)  # (a new client: the first's GraphQL budget is 0)
        assert heard.writes == 1
        await again.graphql("query { viewer { login } }")
        await again.request("POST", "/repos/o/r/issues", json={"title": "t"})
        assert heard.writes == 2


async def test_a_graphql_answer_that_is_not_an_object_has_no_data(
    server: Scripted, gh: GitHub
) -> None:
    server.answers.append((200, {"Content-Type": "application/json"}, b"null"))
    assert await gh.graphql("query { viewer { login } }") is None


async def test_a_request_redirected_away_stays_away_even_when_sent_back(
    server: Scripted, gh: GitHub
) -> None:
    """Once a redirect leaves GitHub's origin, the request is no longer GitHub's: no
    credentials, no conditional header, no budget, no cache, on that host's own next
    hop and even when a hop points it home again."""
    cached = {"Content-Type": "application/json", "ETag": '"home"'}
    server.answers.append((200, cached, b'{"n": 1}'))
    await gh.request("GET", "/repos/o/r/tarball")  # its ETag is cached
    spent = gh.budgets.core.remaining
    async with scripted_server() as other:
        server.answers.append((302, {"Location": f"{other.url}/blob"}, b""))
        back = {"Location": f"{server.url}/repos/o/r/tarball", **limit_headers("core", 7)}
        other.answers += [(302, {"Location": f"{other.url}/blob-2"}, b""), (302, back, b"")]
        server.answers.append((200, {**cached, "ETag": '"back"'}, b'{"n": 2}'))
        answer = await gh.request("GET", "/repos/o/r/tarball")
    assert answer.data == {"n": 2} and not answer.cached
    assert "Authorization" in server.seen[1] and "If-None-Match" in server.seen[1]
    assert len(other.seen) == 2
    for away in (*other.seen, server.seen[2]):
        assert "Authorization" not in away and "If-None-Match" not in away
    assert gh.budgets.core.remaining == spent  # not the other host's numbers
    server.answers.append((200, {"Content-Type": "application/json"}, b"{}"))
    await gh.request("GET", "/repos/o/r/tarball")
    assert server.seen[3]["If-None-Match"] == '"home"'  # the away answer was not kept


async def test_an_absolute_url_on_another_host_gets_no_token_budget_or_cache(
    server: Scripted, gh: GitHub
) -> None:
    """A URL a bot took from a payload's text may name any host: asked for verbatim,
    it is sent as a redirect there would be, without the installation's token, and
    that host's rate-limit headers and ETag are not GitHub's. The API's own origin,
    named in full (a `Link`), keeps the token."""
    cached = {"Content-Type": "application/json", "ETag": '"there"', **limit_headers("core", 7)}
    spent = gh.budgets.core.remaining
    async with scripted_server() as other:
        other.answers += [(200, cached, b'{"n": 1}'), (200, cached, b'{"n": 2}')]
        first = await gh.request("GET", f"{other.url}/avatar?size=40")
        second = await gh.request("GET", f"{other.url}/avatar?size=40")
    assert (first.data, second.data) == ({"n": 1}, {"n": 2})
    for away in other.seen:
        assert "Authorization" not in away and "If-None-Match" not in away
    assert gh.budgets.core.remaining == spent
    server.answers.append((200, {"Content-Type": "application/json"}, b"{}"))
    await gh.request("GET", f"{server.url}/repositories/1/issues?page=2")
    assert server.seen[0]["Authorization"] == "token ghs_answers"


def test_the_api_of_github_com_takes_its_uploads_host_with_it() -> None:
    """Release assets go to uploads.github.com with the token (GHES: its own host)."""
    assert api_origins("https://api.github.com") == {
        "https://api.github.com:443",
        "https://uploads.github.com:443",
    }
    assert api_origins("https://ghe.example/api/v3") == {"https://ghe.example:443"}


async def test_a_304_answers_the_cached_body_even_when_the_cache_lost_it_in_flight(
    server: Scripted, gh: GitHub
) -> None:
    """The cache is shared and bounded: another request can evict (or replace) the
    entry while this one, sent with its ETag, waits for GitHub's 304."""
    etags = gh.options.etags
    assert etags is not None
    body = {"Content-Type": "application/json", "ETag": '"v1"'}
    server.answers.append((200, body, b'{"n": 1}'))
    await gh.request("GET", "/repos/o/r")

    def evicted_then_304() -> tuple[int, dict[str, str], bytes]:
        etags.clear()
        return 304, {"ETag": '"v1"'}, b""

    server.answers.append(evicted_then_304)
    answer = await gh.request("GET", "/repos/o/r")
    assert server.seen[1]["If-None-Match"] == '"v1"'
    assert (answer.status, answer.data, answer.cached) == (200, {"n": 1}, True)


async def test_a_path_is_encoded_and_an_absolute_url_kept_verbatim(
    server: Scripted, gh: GitHub
) -> None:
    server.answers += [(200, {"Content-Type": "application/json"}, b"{}")] * 2
    await gh.request("GET", "/repos/o/r/contents/a b/ü.txt")
    await gh.request("GET", f"{server.url}/repositories/1/issues?page=2&q=a%20b")
    assert server.paths == [
        "/repos/o/r/contents/a%20b/%C3%BC.txt",
        "/repositories/1/issues?page=2&q=a%20b",
    ]


async def test_rate_limit_asked_of_ghes_spends_no_budget(
    server: Scripted, options: ClientOptions
) -> None:
    gh = GitHub(token="ghs_answers", base_url=f"{server.url}/api/v3", options=options)
    limits = limit_headers("core", 7)
    server.answers.append((200, {"Content-Type": "application/json", **limits}, b"{}"))
    before = gh.budgets.core.remaining
    await gh.request("GET", "/rate_limit")
    assert server.paths == ["/api/v3/rate_limit"]
    assert gh.budgets.core.remaining == before


@pytest.mark.parametrize(
    ("path", "resource"), [("/api/v3/search/code", "code_search"), ("/api/graphql", "graphql")]
)
async def test_code_search_and_graphql_spend_budgets_of_their_own(
    server: Scripted, options: ClientOptions, path: str, resource: str
) -> None:
    """Once GitHub says a resource is spent until a reset far off, the next request
    for it is refused here, whatever the other budgets hold."""
    gh = GitHub(token="ghs_answers", options=options.replace(base_url=f"{server.url}/api/v3/"))
    spent = limit_headers(resource, 0, limit=10)
    server.answers.append((200, {"Content-Type": "application/json", **spent}, b"{}"))
    await gh.request("POST", f"{server.url}{path}")
    with pytest.raises(RateLimited):
        await gh.request("POST", f"{server.url}{path}")
    assert server.paths == [path]
    server.answers.append((200, {"Content-Type": "application/json"}, b"{}"))
    await gh.request("GET", "/repos/o/r")  # the base URL's slash is not doubled
    assert server.paths[-1] == "/api/v3/repos/o/r"


async def test_a_path_naming_search_or_graphql_spends_the_core_budget(
    server: Scripted, options: ClientOptions
) -> None:
    """A repository or file named `search`, `graphql` or `rate_limit` is a plain API
    path: not refused by the search budget once spent, and not free."""
    gh = GitHub(token="ghs_answers", options=options.replace(base_url=f"{server.url}/api/v3"))
    spent = limit_headers("search", 0, limit=30)
    server.answers.append((200, {"Content-Type": "application/json", **spent}, b"{}"))
    await gh.request("GET", "/search/issues", params={"q": "x"})
    with pytest.raises(RateLimited):
        await gh.request("GET", "/search/issues", params={"q": "y"})
    paths = ["/repos/o/search/contents/src/search/x.py", "/repos/o/graphql", "/repos/o/rate_limit"]
    for left, path in zip((4000, 3999, 3998), paths, strict=True):
        core = limit_headers("core", left)
        server.answers.append((200, {"Content-Type": "application/json", **core}, b"{}"))
        await gh.request("GET", path)
        assert gh.budgets.core.remaining == left, path  # GitHub's count of core, kept
    assert server.paths[1:] == [f"/api/v3{p}" for p in paths]


def test_a_client_takes_one_kind_of_credentials(auth: AppAuth) -> None:
    with pytest.raises(UsageError, match="not token and auth"):
        GitHub(token="ghs_x", auth=auth)
    with pytest.raises(UsageError, match="go together"):
        GitHub(installation_id=1)
    # os.environ.get("GITHUB_TOKEN", ""): it was sent as `token ` (a 401), and beside
    # auth= it silently replaced the app's credentials.
    for app in (None, auth):
        with pytest.raises(UsageError, match="token= is empty"):
            GitHub(token="", auth=app)


async def test_a_refusal_is_logged_with_githubs_message_cut_short(
    server: Scripted, gh: GitHub, caplog: pytest.LogCaptureFixture
) -> None:
    long = "Bad credentials " + "x" * 500
    body = json.dumps({"message": long}).encode()
    server.answers.append((401, {"Content-Type": "application/json"}, body))
    with pytest.raises(Unauthorized):
        await gh.request("GET", "/repos/o/r")
    [line] = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert line.endswith(long[:200])
