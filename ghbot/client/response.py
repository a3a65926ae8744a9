"""GitHub's answers: decode bodies, read `Link` headers, find page items, map errors.

Pure functions over a status, a header mapping and bytes; no I/O.
https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api
https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec
from multidict import CIMultiDict

from ghbot.client.call import Call, shown_url
from ghbot.client.etag import CachedAnswer, ETagCache
from ghbot.digits import whole_number
from ghbot.errors import (
    BadRequest,
    ClientError,
    Forbidden,
    GitHubError,
    Gone,
    GraphQLError,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    UsageError,
    ValidationFailed,
)
from ghbot.ratelimit import (
    SECONDARY_MIN_WAIT,
    LimitKind,
    RateLimit,
    classify,
    classify_graphql,
    retry_wait,
)

__all__ = [
    "Response",
    "answer_for",
    "decode_body",
    "error_for",
    "error_from",
    "graphql_error",
    "graphql_limited",
    "items_of",
    "parse_links",
]

_decode_json = msgspec.json.Decoder().decode
#: A 304 describes no body: these of its headers must not replace the cached ones.
_BODY_HEADERS = frozenset({"content-length", "content-type", "content-encoding"})
_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="?([^",;]+)"?')
#: Keys under which GitHub wraps the items of a page (search, installation repos, …).
_LIST_KEYS = (
    "items",
    "repositories",
    "installations",
    "check_runs",
    "check_suites",
    "workflow_runs",
    "jobs",
    "artifacts",
    "secrets",
    "variables",
    "runners",
)
_ERRORS: dict[int, type[ClientError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    410: Gone,
}


class Response:
    """One answer: `status`, `headers` (case-insensitive), `data` (the decoded body).

    `data` is the decoded JSON for JSON bodies, the text for other bodies (e.g.
    `Accept: application/vnd.github.raw`), None for an empty body. `cached` tells that
    GitHub answered 304 and `data` came from the ETag cache. `url` is where the answer
    came from, whole; `shown()` (and the repr) leaves its credentials out.
    """

    __slots__ = ("away", "cached", "data", "headers", "method", "status", "url")

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        data: Any,
        *,
        method: str,
        url: str,
        cached: bool = False,
        away: bool = False,
    ) -> None:
        self.status = status
        self.headers = headers
        self.data = data
        self.method = method
        self.url = url
        self.cached = cached
        #: Whether it came from a host that is not GitHub's API (a redirect's target).
        self.away = away

    def __repr__(self) -> str:
        cached = " cached" if self.cached else ""
        return f"<Response {self.status}{cached} {self.method} {self.shown()}>"

    def shown(self) -> str:
        """`url` for messages and logs, as `Call.shown` gives it: without user
        information or credential parameters; from another host, without its query (a
        storage host's pre-signed URL carries its credential there)."""
        return shown_url(self.url, away=self.away)

    @property
    def request_id(self) -> str | None:
        """GitHub's `x-github-request-id`, for support requests."""
        return self.headers.get("x-github-request-id")

    @property
    def links(self) -> dict[str, str]:
        """The `Link` header as `{rel: url}` (`next`, `prev`, `first`, `last`)."""
        return parse_links(self.headers.get("link"))

    @property
    def rate_limit(self) -> RateLimit | None:
        """The answer's `x-ratelimit-*` headers, or None when absent."""
        return RateLimit.from_headers(self.headers)


def decode_body(body: bytes, content_type: str) -> Any:
    """Decode a body: JSON when the content type says so, else text; None when empty.

    Raises `msgspec.DecodeError` for a JSON content type with malformed JSON.
    """
    if not body:
        return None
    if "json" in content_type:
        return _decode_json(body)
    return body.decode("utf-8", "replace")


def parse_links(value: str | None) -> dict[str, str]:
    """Parse a `Link` header into `{rel: url}`, the URLs kept verbatim."""
    if not value:
        return {}
    return {rel: url for url, rel in _LINK.findall(value)}


def items_of(data: Any, key: str | None = None) -> list[Any]:
    """Return the items of one page: the list itself, or the list an object wraps.

    Search answers wrap items in `items`, `/installation/repositories` in
    `repositories`, and so on. With no `key`, a known key is tried first, then the only
    list-valued key. Raises `UsageError` when the list cannot be told apart.
    """
    if isinstance(data, list):
        return data
    if data is None:
        return []
    if not isinstance(data, dict):
        raise UsageError(f"a page of {type(data).__name__} has no items")
    if key is not None:
        found = data.get(key)
        return found if isinstance(found, list) else []
    for known in _LIST_KEYS:
        found = data.get(known)
        if isinstance(found, list):
            return found
    lists = [value for value in data.values() if isinstance(value, list)]
    if len(lists) == 1:
        return lists[0]
    raise UsageError(f"cannot tell which of {sorted(data)} holds the items; pass key=")


def answer_for(
    call: Call, status: int, headers: Mapping[str, str], raw: bytes, etags: ETagCache | None
) -> Response:
    """Make the `Response` for a 2xx or 304, using and filling the ETag cache.

    A 304 to a request sent with a cached ETag answers the cached body (a fresh decode)
    with the 304's headers over the cached ones: the answer the request's ETag came
    from, even if the cache evicted or replaced it meanwhile. A 200 with an ETag is
    cached. Raises `ServerError` when a JSON body cannot be decoded.
    """
    key = call.cache_key
    if status == 304 and key and etags is not None:
        cached = call.cached
        if cached is not None:
            etags.hits += 1
            merged = CIMultiDict(cached.headers)
            merged.update((k, v) for k, v in headers.items() if k.lower() not in _BODY_HEADERS)
            data = decode_body(cached.body, merged.get("Content-Type", ""))
            return Response(200, merged, data, method=call.method, url=call.text, cached=True)
    try:
        data = decode_body(raw, headers.get("Content-Type", ""))
    except msgspec.DecodeError:
        rid = headers.get("x-github-request-id")
        message = "GitHub answered malformed JSON"
        raise ServerError(
            status, message, method=call.method, url=call.shown(), request_id=rid
        ) from None
    etag = headers.get("ETag") if status == 200 and key else None
    if etag and key and etags is not None:
        etags.put(key, CachedAnswer(etag, raw, headers))
    return Response(status, headers, data, method=call.method, url=call.text, away=call.away)


def error_from(
    call: Call, status: int, headers: Mapping[str, str], raw: bytes, now: float, attempt: int
) -> GitHubError:
    """Decode an error answer's body (JSON or text) and map it with `error_for`; an
    answer from another host than the API (`call.away`) is no rate limit of GitHub's.
    A 2xx is a GraphQL rate limit (`graphql_limited`), mapped by `graphql_error`."""
    try:
        data = decode_body(raw, headers.get("Content-Type", ""))
    except msgspec.DecodeError:
        data = raw.decode("utf-8", "replace")
    if status < 300 and isinstance(data, dict):
        found: dict[str, Any] = {
            "url": call.shown(),
            "request_id": headers.get("x-github-request-id"),
        }
        return graphql_error(data, headers=headers, now=now, attempt=attempt, **found)
    where = {"method": call.method, "url": call.shown()}
    return error_for(status, data, headers, now=now, attempt=attempt, limits=not call.away, **where)


def error_for(
    status: int,
    data: Any,
    headers: Mapping[str, str],
    *,
    method: str,
    url: str,
    now: float,
    attempt: int = 0,
    limits: bool = True,
) -> GitHubError:
    """Map an error answer to the `ghbot.errors` class for it.

    403 and 429 are classified by headers and message (`ratelimit.classify`):
    rate limits become `RateLimited` with GitHub's wait (`ratelimit.retry_wait`, where
    `attempt` counts earlier secondary limits), other 403s `Forbidden`; with `limits`
    false (another host's answer) neither is a rate limit. 422 becomes
    `ValidationFailed` with GitHub's `errors` list.
    """
    message = _message(data, status)
    lowered = {k.lower(): v for k, v in headers.items()}
    common: dict[str, Any] = {
        "method": method,
        "url": url,
        "request_id": lowered.get("x-github-request-id"),
        "data": data,
        "headers": lowered,
    }
    if status in (403, 429) and limits:
        kind = classify(status, lowered, message)
        if kind is not None and kind is not LimitKind.FORBIDDEN:
            reset = _float(lowered.get("x-ratelimit-reset"))
            return RateLimited(
                status,
                message,
                kind=kind.value,
                retry_after=retry_wait(lowered, now, attempt),
                reset=reset,
                reset_after=None if reset is None else max(reset - now, 0.0),
                **common,
            )
    if status == 422:
        errors = data.get("errors") if isinstance(data, dict) else None
        return ValidationFailed(status, message, errors=errors or (), **common)
    cls = _ERRORS.get(status)
    if cls is not None:
        return cls(status, message, **common)
    if 400 <= status < 500:
        return ClientError(status, message, **common)
    if status >= 500:
        return ServerError(status, message, **common)
    return GitHubError(status, message, **common)


_GRAPHQL_LIMITS = frozenset({"RATE_LIMITED", "RATE_LIMIT"})
_CODE = "graphql_rate_limit"


def graphql_limited(call: Call, status: int, raw: bytes) -> bool:
    """Tell whether a 200 to a GraphQL request lists a rate limit among its errors
    (GitHub answers GraphQL's limits 200): the client waits it out, or raises it, as it
    does a 403's."""
    if status != 200 or call.resource != "graphql" or b'"errors"' not in raw:
        return False
    try:
        data = _decode_json(raw)
    except msgspec.DecodeError:
        return False
    return isinstance(data, dict) and bool(_limits_in(data))


def graphql_error(
    data: Mapping[str, Any],
    *,
    url: str,
    request_id: str | None,
    wait: float = 0.0,
    headers: Mapping[str, str] | None = None,
    now: float = 0.0,
    attempt: int = 0,
) -> GitHubError:
    """Map a GraphQL answer's `errors` to `GraphQLError`, or `RateLimited` for a rate
    limit: type `RATE_LIMITED`, or `RATE_LIMIT` or code `graphql_rate_limit`, as GitHub
    has answered too (githubkit#271), with `x-ratelimit-remaining` not always 0.

    The answer's `headers` and the message classify it (`ratelimit.classify_graphql`):
    a secondary limit waits as a REST one does (`ratelimit.retry_wait`, `attempt`
    counting earlier ones); a primary one until `x-ratelimit-reset` (`now` is GitHub's
    time), else `wait` (the seconds until the GraphQL budget resets), else a minute,
    the least GitHub asks a rate-limited client to wait.
    https://docs.github.com/en/graphql/overview/rate-limits-and-query-limits-for-the-graphql-api
    """
    errors = [e for e in data.get("errors") or () if isinstance(e, dict)]
    where: dict[str, Any] = {"method": "POST", "url": url, "request_id": request_id}
    limited = _limits_in(data)
    if limited:
        message = str(limited[0].get("message", "API rate limit exceeded"))
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        kind = classify_graphql(lowered, message)
        reset = _float(lowered.get("x-ratelimit-reset"))
        reset_after = None if reset is None else max(reset - now, 0.0)
        if kind is LimitKind.SECONDARY:
            retry_after = retry_wait(lowered, now, attempt)
        elif reset_after is not None:
            retry_after = reset_after + 1.0  # the reset is rounded down
        else:
            retry_after = wait if wait > 0 else SECONDARY_MIN_WAIT
        return RateLimited(
            200,
            message,
            kind=kind.value,
            retry_after=retry_after,
            reset=reset,
            reset_after=reset_after,
            data=dict(data),
            headers=lowered,
            **where,
        )
    return GraphQLError(errors, data=dict(data), **where)


def _limits_in(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rate-limit errors of a GraphQL answer's `errors`."""
    errors = [e for e in data.get("errors") or () if isinstance(e, dict)]
    return [e for e in errors if e.get("type") in _GRAPHQL_LIMITS or e.get("code") == _CODE]


def _message(data: Any, status: int) -> str:
    if isinstance(data, dict):
        message = data.get("message")
        if isinstance(message, str) and message:
            return message
    if isinstance(data, str) and data.strip():
        return data.strip()[:200]
    return f"HTTP {status}"


def _float(value: str | None) -> float | None:
    number = None if value is None else whole_number(value.strip())
    return None if number is None else float(number)
