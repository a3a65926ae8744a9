"""One logical request as it moves through redirects and retries, and URL rules for it.

https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#follow-redirects
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urljoin

from multidict import CIMultiDict
from yarl import URL

from ghbot.client.etag import CachedAnswer
from ghbot.config import DEFAULT_API_URL, UPLOADS_URL, graphql_url
from ghbot.errors import GitHubError

__all__ = [
    "Call",
    "api_origins",
    "build_url",
    "is_mutation",
    "meters_nothing",
    "origin",
    "resource_of",
]

#: Redirects the client knows how to follow.
REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: The methods that may change something at GitHub.
WRITES = frozenset({"POST", "PATCH", "PUT", "DELETE"})

#: A GraphQL string (block or not), kept as an empty one, or a comment, dropped.
_STRING_OR_COMMENT = re.compile(r'"""[\s\S]*?"""|"(?:[^"\\\n]|\\.)*"|#[^\n\r]*')
_MUTATION = re.compile(r"(?:^|\})\s*mutation\b")


def is_mutation(query: str) -> bool:
    """Tell whether a GraphQL document holds a mutation: an operation `mutation` at its
    top level, first or after another definition (a fragment), strings and comments
    aside."""
    bare = _STRING_OR_COMMENT.sub(lambda m: "" if m[0][0] == "#" else '""', query)
    return _MUTATION.search(bare) is not None


class Call:
    """What is sent: method, URL, body, headers, the budget resource and cache key.

    `resource` is None when the request spends no budget (`/rate_limit`, or a host
    that is not the client's API: asked for by its absolute URL, or led to by a
    redirect).
    `cache_key` is set for GETs that may use the ETag cache; `cached` is the cached
    answer whose ETag the request sends, kept for its 304 even if the cache evicts it.
    """

    __slots__ = (
        "away",
        "body",
        "cache_key",
        "cached",
        "headers",
        "method",
        "resource",
        "sent_at",
        "text",
        "url",
        "writes",
    )

    def __init__(
        self,
        method: str,
        url: URL,
        body: bytes | None,
        headers: CIMultiDict[str],
        resource: str | None,
    ) -> None:
        self.method = method
        self.url = url
        #: The URL as text, made once (messages, the cache key, the response).
        self.text = str(url)
        self.body = body
        self.headers = headers
        self.resource = resource
        self.cache_key: tuple[str, str, str] | None = None
        self.cached: CachedAnswer | None = None
        #: Whether it goes to a host that is not GitHub's API (asked for, or a redirect
        #: left the first origin): credentials never go there.
        self.away = False
        #: Whether it may change something at GitHub (a mutating method; for GraphQL,
        #: a mutation): paced, and told to `ghbot.client.watch.call_watcher`.
        self.writes = method in WRITES
        #: When its last attempt went to GitHub (the client's clock).
        self.sent_at = 0.0

    def shown(self) -> str:
        """The URL for messages and logs, without any user information in it; once
        `away`, without its query either: a redirect's target (a storage host's
        pre-signed URL) carries its credential there."""
        return shown_url(self.text, away=self.away)

    def at_home(self) -> bool:
        """Tell whether the request still goes to the origin it started at."""
        return not self.away

    def may_follow(self, status: int) -> bool:
        """Tell whether a redirect may be followed: 307/308 always, the others on GET/HEAD.

        A 301/302 to a POST or PATCH is not turned into a GET behind the caller's back.
        """
        if status in (307, 308):
            return True
        return status in REDIRECTS and self.method in ("GET", "HEAD")

    def follow(self, status: int, location: str) -> None:
        """Point the request at the redirect's target, resolved against the current URL.

        307/308 keep the method and the body (a PATCH to a renamed repository); the
        others are followed for GET and HEAD only (`may_follow`), which keep their
        method. Leaving the first origin drops the credentials, the budget and the ETag
        cache: that host is not GitHub's API for this client. Raises `GitHubError`
        without a Location.
        """
        if not location:
            raise GitHubError(
                status, "redirect without a Location", method=self.method, url=self.shown()
            )
        home = origin(self.url)
        self.text = urljoin(self.text, location)
        self.url = URL(self.text, encoded=True)
        if status not in (307, 308):
            self.body = None
            self.headers.pop("Content-Type", None)
        if origin(self.url) != home:
            self.leave()

    def leave(self) -> None:
        """Send this request, from now on, as to a host that is not GitHub's API:
        without credentials, budget or ETag cache (`away` stays true)."""
        self.away = True
        self.resource = None
        self.cache_key = None
        self.cached = None
        self.headers.pop("If-None-Match", None)


def build_url(base_url: str, url: str, params: Mapping[str, Any] | None) -> URL:
    """Resolve a path against `base_url`; an absolute URL is kept verbatim (Link, Location)."""
    absolute = url.startswith(("https://", "http://"))
    if not absolute:
        url = f"{base_url}{url if url.startswith('/') else '/' + url}"
    if params:
        query = urlencode({k: _param(v) for k, v in params.items() if v is not None})
        url = f"{url}{'&' if '?' in url else '?'}{query}"
    return URL(url, encoded=absolute)


def resource_of(path: str, base_url: str = DEFAULT_API_URL) -> str | None:
    """Name the rate-limit resource a URL's `path` spends at the API at `base_url`, or
    None for `/rate_limit` (free).

    Matched from the API's own path (`/api/v3` on GHES) on: `/search/code` is
    `code_search`, another `/search/...` `search`, GraphQL's endpoint `graphql`, the
    rest `core`. A repository or file named `search` or `graphql` is `core`.
    """
    prefix, graphql = _api_paths(base_url)
    if path == graphql:
        return "graphql"
    if prefix:
        if not path.startswith(f"{prefix}/"):
            return "core"
        path = path[len(prefix) :]
    if path == "/rate_limit":
        return None
    if path.startswith("/search/"):
        return "code_search" if path == "/search/code" else "search"
    return "core"


def meters_nothing(status: int, headers: Mapping[str, str], path: str, base_url: str) -> bool:
    """Tell whether an answer says its server meters no rate limit (GitHub Enterprise
    Server with rate limits off): a success without a single `x-ratelimit-*` header,
    to a request of the API's own at `base_url` (not a raw file or an upload on the
    same host), from a server other than github.com's, which meters every API answer.
    """
    if not 200 <= status < 300 or base_url.rstrip("/") == DEFAULT_API_URL:
        return False
    if any(name.lower().startswith("x-ratelimit-") for name in headers):
        return False
    prefix, graphql = _api_paths(base_url)
    return not prefix or path == graphql or path.startswith(f"{prefix}/")


@functools.cache
def _api_paths(base_url: str) -> tuple[str, str]:
    """The path `base_url` puts before REST paths ("" or "/api/v3"), and GraphQL's."""
    return URL(base_url).path.rstrip("/"), URL(graphql_url(base_url.rstrip("/"))).path


@functools.cache
def api_origins(base_url: str) -> frozenset[str]:
    """The origins that are the API at `base_url`, where its credentials may go: its own
    and, for api.github.com, uploads.github.com (GHES takes uploads under its own host).
    Kept per base URL: a client is made per installation and a process has few bases.
    """
    if base_url == DEFAULT_API_URL:
        return frozenset({origin(URL(base_url)), origin(URL(UPLOADS_URL))})
    return frozenset({origin(URL(base_url))})


def origin(url: URL) -> str:
    """Return `scheme://host:port` of `url`."""
    return f"{url.scheme}://{url.host}:{url.port}"


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


#: Query parameters that carry a credential in URLs GitHub hands out (a raw file's or
#: an archive's `token` on GitHub Enterprise Server, a storage host's pre-signed
#: signature) or an OAuth exchange's: their values never reach a message.
SECRET_PARAMS = frozenset(
    {
        "access_token",
        "client_secret",
        "code",
        "jwt",
        "sig",
        "signature",
        "token",
        "x-amz-credential",
        "x-amz-security-token",
        "x-amz-signature",
        "x-goog-credential",
        "x-goog-signature",
    }
)


def shown_url(url: str, *, away: bool = False) -> str:
    """`url` for messages and logs: without any user information in it, and with the
    values of query parameters that carry credentials (`SECRET_PARAMS`) redacted;
    `away` (another host than GitHub's API), without its query or fragment at all."""
    if not away and "@" not in url and "?" not in url:
        return url
    parsed = URL(url, encoded=True)
    if not parsed.absolute:  # no host to strip a user from (a hand-made Response)
        return url.split("?", 1)[0]
    if away:
        return str(parsed.with_user(None).with_query(None).with_fragment(None))
    parsed = parsed.with_user(None)
    if any(name.lower() in SECRET_PARAMS for name in parsed.query):
        query = [
            (name, "redacted" if name.lower() in SECRET_PARAMS else value)
            for name, value in parsed.query.items()
        ]
        parsed = parsed.with_query(query)
    return str(parsed)
