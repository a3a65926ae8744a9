"""The fake GitHub's routing: path templates, handler context, replies and pagination.

Handlers are plain functions (or coroutines) from a `Ctx` to a `Reply`; the server turns
replies into HTTP answers with GitHub's headers (rate limits, ETags, request ids).
https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from ghbot.digits import whole_number

if TYPE_CHECKING:
    from ghbot.testing.state import Caller

__all__ = ["PAGING", "Ctx", "Query", "Reply", "Route", "Router", "error", "paged"]

Auth = Literal["token", "jwt", "any"]
#: The query parameters a route honours, each with the values it honours (None: any).
Query = Mapping[str, tuple[str, ...] | None]
DOCS = "https://docs.github.com/rest"
#: The query parameters `paged` reads: every route honours them.
PAGING = frozenset({"per_page", "page"})


class Reply:
    """What a handler answers: JSON-able `data`, a status, extra headers."""

    __slots__ = ("data", "headers", "status")

    def __init__(
        self, data: Any = None, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        self.data = data
        self.status = status
        self.headers = dict(headers) if headers else None


def error(status: int, message: str, **extra: Any) -> Reply:
    """Answer an error the way GitHub does: `message` and `documentation_url`."""
    return Reply({"message": message, "documentation_url": DOCS, **extra}, status)


class Ctx:
    """One request as a handler sees it: path parameters, query, JSON body, caller."""

    __slots__ = ("caller", "json", "params", "request")

    def __init__(
        self, request: web.Request, params: dict[str, str], json: Any, caller: Caller
    ) -> None:
        self.request = request
        self.params = params
        self.json = json
        self.caller = caller

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query

    def body(self) -> dict[str, Any]:
        """The JSON body as an object (empty when there was none)."""
        return self.json if isinstance(self.json, dict) else {}

    def int_param(self, name: str) -> int | None:
        """A path parameter as an int, or None when it is not one."""
        return whole_number(self.params[name])


Handler = Callable[[Ctx], Reply | Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    #: What it was added with: `/repos/{owner}/{repo}/contents/{path*}`.
    template: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: Auth
    #: Whether the request spends the caller's primary rate limit.
    counted: bool
    #: The query parameters it honours besides `PAGING`; None when it does not say (a
    #: stub, a test's own handler), and so is not held to them.
    query: Query | None = None

    def unhonoured(self, query: Mapping[str, str]) -> list[tuple[str, str]]:
        """Return the parameters of `query` (name and value) it does not honour."""
        if self.query is None:
            return []
        return [
            (name, value)
            for name, value in query.items()
            if name not in PAGING and not _honours(self.query.get(name, ()), value)
        ]


class Router:
    """Match `METHOD /path` against templates like `/repos/{owner}/{repo}/issues`."""

    __slots__ = ("_routes",)

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], list[Route]] = {}

    def add(
        self,
        method: str,
        template: str,
        handler: Handler,
        *,
        auth: Auth = "token",
        counted: bool = True,
        first: bool = False,
        query: Query | None = None,
    ) -> None:
        """Route `method template` to `handler`, after the routes added before it
        (`first`: before them).

        `{name}` matches one path segment (ASCII digits only for a `number` or a
        `..._number`, which GitHub's paths always write so: `/issues/comments` is not
        issue "comments"; not for an `..._id`, which is a word for some, a gist's or an
        advisory's), `{name*}` one or more (a file's path); the rest of `template`
        matches as written. `query` names the query parameters the
        handler honours (besides `per_page` and `page`) and their values (None: any);
        the fake answers 501 for another that GitHub describes for the operation.
        Without it, no parameter is refused.
        """
        # Escaped but for the parameters' braces and stars: `...` is three dots.
        literal = re.escape(template)
        literal = literal.replace(r"\{", "{").replace(r"\}", "}").replace(r"\*", "*")
        regex = re.sub(r"\{(\w+)\*\}", r"(?P<\1>.+)", literal)
        regex = re.sub(r"\{(\w+)\}", _segment, regex)
        pattern = re.compile(f"^{regex}/?$")
        route = Route(method, template, pattern, handler, auth, counted, query)
        routes = self._routes.setdefault((method, _head(template)), [])
        if first:
            routes.insert(0, route)
        else:
            routes.append(route)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """Return the route for `method path` and its parameters, or None. HEAD takes
        GET's route, as GitHub answers it (aiohttp sends no body for HEAD)."""
        routed = "GET" if method == "HEAD" else method
        for route in self._routes.get((routed, _head(path)), ()):
            found = route.pattern.match(path)
            if found is not None:
                return route, found.groupdict()
        return None


def _segment(parameter: re.Match[str]) -> str:
    """The pattern of one path parameter: digits for a number, else a segment."""
    name = parameter[1]
    numeric = name == "number" or name.endswith("_number")
    return f"(?P<{name}>[0-9]+)" if numeric else f"(?P<{name}>[^/]+)"


def _honours(values: tuple[str, ...] | None, value: str) -> bool:
    return values is None or value in values


def _head(path: str) -> str:
    return path.split("/", 2)[1] if path.count("/") else path


def paged(ctx: Ctx, items: list[Any], *, wrap: str | None = None, **extra: Any) -> Reply:
    """Answer one page of `items` (`per_page` ≤ 100, default 30; `page` from 1) with `Link`.

    With `wrap`, the page is an object `{"total_count": n, wrap: [...], **extra}`.
    """
    query = ctx.request.query
    per_page = max(1, min(_int(query.get("per_page"), 30), 100))
    page = max(1, _int(query.get("page"), 1))
    last = max(1, -(-len(items) // per_page))
    chunk = items[(page - 1) * per_page : page * per_page]
    url = ctx.request.url
    rels = []
    if page < last:
        rels += [("next", page + 1), ("last", last)]
    if page > 1:
        rels += [("prev", page - 1), ("first", 1)]
    links = ", ".join(f'<{url.update_query(page=str(n))}>; rel="{rel}"' for rel, n in rels)
    data: Any = chunk if wrap is None else {"total_count": len(items), **extra, wrap: chunk}
    return Reply(data, headers={"Link": links} if links else None)


def _int(value: str | None, default: int) -> int:
    number = None if value is None else whole_number(value)
    return default if number is None else number
