"""What the generated REST surface runs on: `Op` (one operation), `Namespace`, `RestBase`.

`Op` turns a method's keyword arguments into a path, a query and a body, and GitHub's
answer into the method's return type; pure functions, no I/O. `Namespace._send` does
the one exchange through `GitHub.request`, so tokens, budgets, pacing, the breaker,
retries and ETags apply as to any other request.
https://docs.github.com/en/rest
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, overload
from urllib.parse import quote

import msgspec

from ghbot.client.response import items_of
from ghbot.config import DEFAULT_API_URL
from ghbot.config import UPLOADS_URL as UPLOADS
from ghbot.errors import GitHubError, UsageError

if TYPE_CHECKING:
    from ghbot.client.github_client import GitHub
    from ghbot.client.response import Response

__all__ = ["MISSING", "Model", "Namespace", "Op", "Paged", "RestBase"]

P = ParamSpec("P")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

#: The default of a field the description requires: None when GitHub leaves it out
#: (GHES, answers older than the description), typed `Any` so it fits any field.
MISSING: Any = None


#: Fields of REST answers that hold a secret (an installation token, a new App's key and
#: secrets): their `repr` shows them as `redact` does.
SECRET_FIELDS = frozenset({"token", "pem", "client_secret", "webhook_secret"})


class Model(msgspec.Struct, kw_only=True):
    """The base of every REST response model: lenient, unknown fields ignored.

    A field the description requires is typed `T` but reads None when an answer lacks
    it (see `MISSING`); other fields are `T | None`. Rules in `scripts/gen_rest.py`.
    Its `repr` cuts `SECRET_FIELDS` to their ends (`InstallationToken.token`).
    """

    def __repr__(self) -> str:
        from ghbot.auth import redact

        shown = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name in SECRET_FIELDS and isinstance(value, str):
                shown.append(f"{name}={redact(value)!r}")
            else:
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


class Paged(Protocol[T_co]):
    """An answer that wraps a page's items (`check_runs`, `workflow_runs`, …)."""

    def page_items(self) -> Sequence[T_co]:
        """The items of this page."""
        ...


class Op:
    """One REST operation: method, path template and where each argument goes.

    `in_path`, `in_query` and `in_body` name the method's arguments; `wire` maps an
    argument to its name at GitHub when they differ (`in_` → `in`). `whole_body`: the
    body is the `data` argument itself (sent as `content_type` when not JSON).
    `returns` is the decoded answer's type; `items` the item type of a paged list
    operation, found under `key` when the answer is an object.
    """

    __slots__ = (
        "accept",
        "content_type",
        "in_body",
        "in_path",
        "in_query",
        "items",
        "key",
        "method",
        "path",
        "returns",
        "whole_body",
        "wire",
    )

    def __init__(
        self,
        method: str,
        path: str,
        *,
        in_path: tuple[str, ...] = (),
        in_query: tuple[str, ...] = (),
        in_body: tuple[str, ...] = (),
        wire: Mapping[str, str] | None = None,
        whole_body: bool = False,
        content_type: str | None = None,
        accept: str | None = None,
        key: str | None = None,
        items: Any = None,
        returns: Any = None,
    ) -> None:
        self.method, self.path = method, path
        self.in_path, self.in_query, self.in_body = in_path, in_query, in_body
        self.wire = dict(wire or {})
        self.whole_body, self.content_type, self.accept = whole_body, content_type, accept
        self.key, self.items, self.returns = key, items, returns

    def __repr__(self) -> str:
        return f"<Op {self.method} {self.path}>"

    def url(self, args: Mapping[str, Any]) -> str:
        """Fill the path template; a value is percent-encoded but for `/` (`heads/main`).

        Raises `UsageError` for a value missing or None, or with a `.` or `..` segment:
        URL resolution would take it for a step up the path (a label named
        `../../collaborators/x` would be another endpoint, with the same token).
        """
        values = {}
        for name in self.in_path:
            if name not in args:
                raise UsageError(f"{self.method} {self.path} needs {name!r}")
            value = args[name]
            text = _text(value)  # "" stays: `contents/{path}` of the root is `contents/`
            if value is None or any(part in (".", "..") for part in text.split("/")):
                raise UsageError(
                    f"{self.method} {self.path}: {name}={value!r} cannot be in a path "
                    "(None, or a '.' or '..' segment)"
                )
            values[self.wire.get(name, name)] = quote(text, safe="/")
        return self.path.format_map(values)

    def query(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """The query parameters given (None is not sent; a sequence is comma-joined)."""
        found = {}
        for name in self.in_query:
            value = args.get(name)
            if value is not None:
                found[self.wire.get(name, name)] = _query(value)
        return found

    def body(self, args: Mapping[str, Any]) -> Any:
        """The body to send, or UNSET for none: `data` itself, or the object of the given."""
        if self.whole_body:
            return args.get(self.in_body[0], msgspec.UNSET)
        given = {
            self.wire.get(n, n): args[n]
            for n in self.in_body
            if args.get(n, msgspec.UNSET) is not msgspec.UNSET
        }
        return given if given else msgspec.UNSET

    def headers(self) -> dict[str, str] | None:
        """The operation's own headers: an `Accept` for a non-JSON answer."""
        return {"Accept": self.accept} if self.accept else None

    def check(self, args: Mapping[str, Any]) -> None:
        """Raise `UsageError` for an argument the operation does not take."""
        unknown = set(args) - {*self.in_path, *self.in_query, *self.in_body}
        if unknown:
            raise UsageError(f"{self.method} {self.path} takes no {sorted(unknown)}")

    def decode(self, response: Response) -> Any:
        """Convert the answer's decoded body to `returns`.

        Raises `GitHubError` (GitHub's answer does not fit its own description) with the
        answer's status and data.
        """
        return self._convert(response, response.data, self.returns)

    def decode_item(self, response: Response, item: Any) -> Any:
        """Convert one item of a page to `items`."""
        return self._convert(response, item, self.items)

    def _convert(self, response: Response, data: Any, kind: Any) -> Any:
        if kind is None:
            return None
        if kind is Any:
            return data
        try:
            return msgspec.convert(data, kind)
        except msgspec.ValidationError as exc:
            message = f"the answer does not fit {getattr(kind, '__name__', kind)}: {exc}"
            raise GitHubError(
                response.status,
                message,
                method=self.method,
                url=response.shown(),  # as every error shows a URL
                request_id=response.request_id,
                data=data,
            ) from None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _query(value: Any) -> Any:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return ",".join(_text(v) for v in value)
    return value


class Namespace:
    """A group of operations (`rest.issues`); its methods are generated."""

    __slots__ = ("_github",)

    def __init__(self, github: GitHub) -> None:
        self._github = github

    async def _send(self, op: Op, args: Mapping[str, Any]) -> Any:
        """Send `op` with a method's arguments (its `locals()`, read, never changed).

        Returns the answer decoded to `op.returns`; raises what `GitHub.request` raises.
        """
        body = op.body(args)
        json: Any = None
        raw: Any = None
        headers = op.headers()
        if body is not msgspec.UNSET:
            if op.content_type is None:
                json = body
            else:
                raw = body
                content_type = args.get("content_type") or op.content_type
                headers = {**(headers or {}), "Content-Type": content_type}
        url = at_base(op.url(args), self._github.base_url)
        response = await self._github.request(
            op.method, url, params=op.query(args), json=json, body=raw, headers=headers
        )
        return op.decode(response)


def at_base(url: str, base_url: str) -> str:
    """Send an upload where the client's GitHub takes it.

    The description's uploads origin is github.com's; GitHub Enterprise Server takes
    uploads at `https://HOST/api/uploads`, and any other base (a fake) at itself.
    https://docs.github.com/en/rest/releases/assets#upload-a-release-asset
    """
    if not url.startswith(UPLOADS) or base_url == DEFAULT_API_URL:
        return url
    rest = url.removeprefix(UPLOADS)
    if base_url.endswith("/api/v3"):
        return base_url.removesuffix("/v3") + "/uploads" + rest
    return base_url + rest


#: Namespace classes already imported, by module name.
_LOADED: dict[str, type[Namespace]] = {}


class RestBase:
    """`GitHub.rest`: the namespaces (each module imported on first use) and `paginate`.

    A view over one client, made on each `GitHub.rest`: it holds the client, nothing else.
    """

    __slots__ = ("_github",)

    def __init__(self, github: GitHub) -> None:
        self._github = github

    def _namespace(self, module: str, cls: str) -> Any:
        made = _LOADED.get(module)
        if made is None:
            loaded = importlib.import_module(f"ghbot.rest.namespaces.{module}")
            made = _LOADED[module] = getattr(loaded, cls)
        return made(self._github)

    @overload
    def paginate(
        self, method: Callable[P, Awaitable[list[T]]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncIterator[T]: ...

    @overload
    def paginate(
        self, method: Callable[P, Awaitable[Paged[T]]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncIterator[T]: ...

    def paginate(self, method: Any, /, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """Yield the typed items of every page of a list operation, following `Link`.

        `method` is a generated method (`rest.issues.list_for_repo`), `kwargs` its
        arguments. Pages come from `GitHub.paginate`; each item is decoded to the
        operation's item type. Raises `UsageError` for an operation that does not page.
        https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api
        """
        op = operation_of(method)
        if args:
            raise UsageError("pass the operation's arguments by keyword")
        if op.items is None:
            raise UsageError(f"{op.method} {op.path} does not page")
        op.check(kwargs)
        return self._pages(method.__self__._github, op, kwargs)

    @staticmethod
    async def _pages(github: GitHub, op: Op, args: dict[str, Any]) -> AsyncIterator[Any]:
        pages = github.pages(op.url(args), params=op.query(args), headers=op.headers())
        async for page in pages:
            for item in items_of(page.data, op.key):
                yield op.decode_item(page, item)


def operation_of(method: Any) -> Op:
    """Return the `Op` of a generated method (the `_NAME` constant of its module)."""
    module = sys.modules.get(getattr(method, "__module__", "") or "")
    op = getattr(module, f"_{getattr(method, '__name__', '').upper()}", None)
    if not isinstance(op, Op) or not isinstance(getattr(method, "__self__", None), Namespace):
        raise UsageError(f"{method!r} is not a method of GitHub.rest")
    return op
