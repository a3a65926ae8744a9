"""`FakeGitHub`: a real aiohttp server on 127.0.0.1 with GitHub's behaviour and state.

```python
async with FakeGitHub(app_id=1, public_key_pem=auth.public_key_pem()) as fake:
    fake.add_installation(1, "octo-org", ["hello-world"])
    app = GitHubApp(auth, options=ClientOptions(base_url=fake.url))
```

Every request is recorded (`requests`), answered with `x-ratelimit-*` headers from a
per-installation quota, an ETag on GET (a matching `If-None-Match` gets a 304 that is
not counted), and `Link` pagination. `faults` injects 5xx bursts, rate limits, 401s,
slow answers, dropped connections and redirects; more than `max_concurrent` requests
in flight get GitHub's secondary-limit 403, and so, with `write_interval` set, does an
installation's write that arrives too soon after its previous one (`writes`);
`secondary_limits` counts those answers. GHES paths (`/api/v3/…`, `/api/graphql`)
work too. An operation of GitHub's REST description the fake does not implement is
answered 501, naming it (anything else unknown 404, as GitHub does), and so is a query
parameter GitHub describes that the fake's route does not honour (a filter, which it
would otherwise answer as if unasked); `stub` answers it.
https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import msgspec
from aiohttp import web

from ghbot.errors import UsageError
from ghbot.testing.deliveries import Deliveries
from ghbot.testing.documented import described, documented, not_implemented
from ghbot.testing.faults import Fault, Faults
from ghbot.testing.identity import TOKEN_LIFETIME, Identities, Quota, Quotas
from ghbot.testing.router import DOCS, Auth, Ctx, Reply, Route, Router, error
from ghbot.testing.routes_app import AppRoutes
from ghbot.testing.routes_manifest import ManifestRoutes
from ghbot.testing.routes_repo import RepoRoutes
from ghbot.testing.routes_search import SearchRoutes
from ghbot.testing.setup import Setup
from ghbot.testing.state import Caller, Store
from ghbot.testing.writes import WriteSpacing, is_write

if TYPE_CHECKING:
    from ghbot.testing.thread import FakeGitHubThread

__all__ = ["FakeGitHub", "RecordedRequest"]

MSG_SECONDARY = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
    "again. If you reach out to GitHub Support for help, please include the request ID."
)
_encode = msgspec.json.encode
_decode = msgspec.json.Decoder().decode
_JSON = "application/json; charset=utf-8"


@dataclass(slots=True)
class RecordedRequest:
    """One request as the fake received it (headers include Authorization)."""

    method: str
    #: The path as github.com spells it (a GHES `/api/v3` prefix removed); see `url`.
    path: str
    query: str
    headers: dict[str, str]
    json: Any
    body: bytes
    #: The full URL as sent.
    url: str

    def __repr__(self) -> str:
        # An assertion's output shows it: its Authorization header's credential masked.
        shown = {
            k: "[redacted]" if k.lower() == "authorization" else v for k, v in self.headers.items()
        }
        return (
            f"RecordedRequest(method={self.method!r}, path={self.path!r}, "
            f"query={self.query!r}, headers={shown!r}, json={self.json!r})"
        )


class FakeGitHub(Setup):
    """GitHub's REST API (the parts bots use), GraphQL for a few queries, and an app.

    `public_key_pem` verifies the app's JWTs (without one, signatures are not checked:
    for local development only). `rate_limit` is each installation's hourly core
    limit; `rate_limiting=False` (or set later) answers as GitHub Enterprise Server
    with rate limits off: no `x-ratelimit-*` header on any answer, no refusal for a
    spent quota, nothing counted, and `GET /rate_limit` 404 `Rate limiting is not
    enabled.`. `clock` drives token expiry, JWT checks and rate-limit windows.
    `webhook_url`/`webhook_secret` are where redeliveries and `send_delivery` go.
    `write_interval` (seconds; None: no rule) is GitHub's spacing of one installation's
    writes: one arriving sooner after the previous gets a secondary-limit 403 with
    `retry-after: write_retry_after` (see `ghbot.testing.writes`). `secondary_limits`
    counts every secondary-limit answer given: that rule's, `max_concurrent`'s and
    `secondary` faults'. `token_lifetime` is how long installation tokens last
    (GitHub's: 3600 s); shorter makes tokens expire within a test or a benchmark.
    `requests` holds the last `max_recorded` requests; `recorded` counts them all, and
    `requests_since(count)` gives those after the first `count` (a cursor that holds
    when older ones are let go).
    """

    def __init__(
        self,
        *,
        app_id: int = 1,
        public_key_pem: bytes | str | None = None,
        client_id: str | None = None,
        app_slug: str = "ghbot-fake",
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: int = 5000,
        search_rate_limit: int = 30,
        max_concurrent: int | None = 100,
        clock: Callable[[], float] = time.time,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        max_recorded: int = 100_000,
        write_interval: float | None = None,
        write_retry_after: int = 60,
        token_lifetime: float = TOKEN_LIFETIME,
        rate_limiting: bool = True,
    ) -> None:
        pem = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
        self.app_id = app_id
        self.host, self.port = host, port
        self.clock = clock
        self.max_concurrent = max_concurrent
        self.store = Store(clock, app_slug)
        self.identities = Identities(
            app_id=app_id,
            client_id=client_id,
            public_key_pem=pem,
            clock=clock,
            token_lifetime=token_lifetime,
        )
        # Code search has its own resource and a smaller limit (GitHub: 10 a minute,
        # search 30; the fake counts every resource by the hour).
        limits = {"default": rate_limit, "search": search_rate_limit, "code_search": 10}
        self.quotas = Quotas(limits, clock, enabled=rate_limiting)
        self.faults = Faults()
        self.writes = WriteSpacing(write_interval, write_retry_after)
        self.secondary_limits = 0
        self.deliveries = Deliveries(
            clock, app_id=app_id, webhook_url=webhook_url, webhook_secret=webhook_secret
        )
        self.requests: deque[RecordedRequest] = deque(maxlen=max_recorded)
        #: How many requests were ever recorded: `requests` holds the last `max_recorded`.
        self.recorded = 0
        self.router = Router()
        RepoRoutes(self.store).register(self.router)
        SearchRoutes(self.store).register(self.router)
        AppRoutes(self.store, self.identities, self.quotas, app_id).register(self.router)
        #: App manifests received through the manifest flow (`ghbot register`).
        self.manifest_flow = ManifestRoutes(self.store, self.identities, app_id)
        self.manifest_flow.register(self.router)
        self.deliveries.register(self.router)
        self.inflight = 0
        self.max_inflight = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._request_ids = itertools.count(1)

    @property
    def rate_limiting(self) -> bool:
        """Whether rate limits are on (False: as GHES with rate limiting off)."""
        return self.quotas.enabled

    @rate_limiting.setter
    def rate_limiting(self, enabled: bool) -> None:
        self.quotas.enabled = enabled

    @property
    def write_interval(self) -> float | None:
        """Seconds GitHub wants between one installation's writes (None: not enforced)."""
        return self.writes.interval

    @write_interval.setter
    def write_interval(self, interval: float | None) -> None:
        self.writes.interval = interval
        self.writes.reset()

    def stub(
        self,
        method: str,
        template: str,
        data: Any = None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        auth: Auth = "token",
    ) -> None:
        """Answer `method template` with `data` (as JSON), `status` and `headers`,
        before any route the fake has: for an operation it does not implement (it
        answers those 501, naming them), or to script GitHub's answer.

        `{name}` in `template` matches one path segment (`/repos/{owner}/{repo}/
        issues/{issue_number}/reactions`; digits only for a `number` or a `..._number`),
        `{name*}` one or more, slashes included
        (`/repos/{owner}/{repo}/contents/{path*}`). A stubbed request still needs the
        app's credentials, spends the caller's rate limit and is recorded in
        `requests`: an installation's token by default, the app's JWT for
        `auth="jwt"` (`/app/...` operations); `"any"` takes any caller, one without
        credentials too. For an answer that depends on the request, add a handler to
        `router` (`Router.add(..., first=True)`).
        """
        answer = (data, status, dict(headers) if headers else None)
        self.router.add(
            method.upper(), template, lambda _ctx: Reply(*answer), auth=auth, first=True
        )

    def add_key(self, public_key_pem: bytes) -> None:
        """Accept JWTs signed with a second key too, as GitHub does while one rotates."""
        self.identities.more_keys.append(public_key_pem)
        self.identities.forget_jwts()

    def remove_key(self, public_key_pem: bytes) -> None:
        """Stop accepting JWTs signed with this key (the app's key deleted on GitHub).

        Raises `UsageError` for a key the fake does not hold, or its only one.
        """
        ids = self.identities
        if ids.public_key == public_key_pem:
            if not ids.more_keys:
                raise UsageError("the app's only key cannot be removed")
            ids.public_key = ids.more_keys.pop(0)
        elif public_key_pem in ids.more_keys:
            ids.more_keys.remove(public_key_pem)
        else:
            raise UsageError("the fake holds no such key")
        ids.forget_jwts()

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> FakeGitHub:
        """Listen on `host:port` (0: a free port); `url` is then the API's base URL."""
        app = web.Application(client_max_size=32 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])
        self.url = f"http://{self.host}:{self.port}"
        self.store.base = self.url
        return self

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        await self.deliveries.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeGitHub:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @classmethod
    def start_in_thread(cls, **kwargs: Any) -> FakeGitHubThread:
        """Run a fake on its own loop in a daemon thread (for code that is not async)."""
        from ghbot.testing.thread import FakeGitHubThread

        return FakeGitHubThread.start(lambda: cls(**kwargs))

    # --- one request ------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # When the request reached GitHub: what its write spacing is measured between.
        arrived = self.clock()
        path = _api_path(request.path)
        body = await request.read() if request.body_exists else b""
        parsed: Any = None
        malformed = False
        if body and "json" in request.content_type:
            try:
                parsed = _decode(body)
            except msgspec.DecodeError:
                malformed = True
        elif body and request.content_type == "application/x-www-form-urlencoded":
            parsed = dict(parse_qsl(body.decode(errors="replace")))  # the manifest form
        self.requests.append(
            RecordedRequest(
                request.method,
                path,
                request.query_string,
                dict(request.headers),
                parsed,
                body,
                self.url + request.raw_path,
            )
        )
        self.recorded += 1
        if malformed:
            return self._json(400, {"message": "Problems parsing JSON", "documentation_url": DOCS})
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return await self._serve(request, path, parsed, arrived)
        finally:
            self.inflight -= 1

    async def _serve(
        self, request: web.Request, path: str, parsed: Any, arrived: float
    ) -> web.StreamResponse:
        retry_after = self._write_spacing(request, path, parsed, arrived)
        if retry_after is not None:
            return self._secondary(request, path, {"retry-after": str(retry_after)})
        if self.max_concurrent is not None and self.inflight > self.max_concurrent:
            return self._secondary(request, path, {})
        if self.faults:
            fault = self.faults.match(request.method, path)
            if fault is not None:
                answer = await self._fault(request, path, fault)
                if answer is not None:
                    return answer
        caller = self._caller(request)
        found = self.router.match(request.method, path)
        if found is None:
            # Counted, with the caller's rate-limit headers, as GitHub's 404s are; a
            # caller out of budget is refused before any route is looked for.
            headers = {"Content-Type": _JSON}
            if isinstance(caller, Caller):
                resource = _resource(path)
                quota = self.quotas.get(caller.key, resource)
                if self.quotas.enabled:  # with rate limits off, nothing is counted
                    if quota.remaining <= 0:
                        return self._primary(caller, quota, resource)
                    quota.remaining -= 1
                    headers.update(quota.headers(resource))
            template = documented(request.method, path)
            if template is not None:  # GitHub has it; the fake does not: say so
                jwt = isinstance(caller, Caller) and caller.kind == "app"
                message = not_implemented(request.method, template, jwt=jwt)
                return self._response(501, _encode({"message": message}), headers)
            data = {"message": "Not Found", "documentation_url": DOCS}
            return self._response(404, _encode(data), headers)
        route, params = found
        if isinstance(caller, str):
            return self._json(401, {"message": caller, "documentation_url": DOCS})
        refusal = _refuse(route, caller)
        if refusal is not None:
            return self._json(refusal.status, refusal.data)
        resource = _resource(path)
        quota = self.quotas.get(caller.key, resource)
        if route.counted and quota.remaining <= 0 and self.quotas.enabled:
            return self._primary(caller, quota, resource)
        reply = _unhonoured(route, request, path) or route.handler(
            Ctx(request, params, parsed, caller)
        )
        if not isinstance(reply, Reply):
            reply = await reply
        return self._reply(request, reply, caller, quota if route.counted else None, resource)

    def _write_spacing(
        self, request: web.Request, path: str, parsed: Any, arrived: float
    ) -> int | None:
        """Return the retry-after for an installation's write that came too soon, or None."""
        if self.writes.interval is None or not is_write(request.method, path, parsed):
            return None
        caller = self._caller(request)
        # The rule is about an installation's content writes: the app's own requests
        # (token exchanges) and refused credentials are left to the usual answers.
        if isinstance(caller, str) or caller.kind != "installation":
            return None
        return self.writes.refuse(caller.key, arrived)

    def _limits(self, caller: Caller | str, path: str) -> dict[str, str]:
        """The caller's `x-ratelimit-*` headers, as GitHub sends them on its refusals
        too (none for credentials it refuses: its 401s carry none)."""
        if isinstance(caller, str):
            return {}
        resource = _resource(path)
        return self.quotas.get(caller.key, resource).headers(resource)

    def _caller(self, request: web.Request) -> Caller | str:
        return self.identities.caller(
            request.headers.get("Authorization"), self.store.installations
        )

    def _secondary(self, request: web.Request, path: str, headers: dict[str, str]) -> web.Response:
        """Answer GitHub's secondary-limit 403 (with `headers`) and count it."""
        self.secondary_limits += 1
        data = {"message": MSG_SECONDARY, "documentation_url": DOCS}
        limits = self._limits(self._caller(request), path)
        return self._response(403, _encode(data), {"Content-Type": _JSON, **limits, **headers})

    def _reply(
        self,
        request: web.Request,
        reply: Reply,
        caller: Caller,
        quota: Quota | None,
        resource: str,
    ) -> web.Response:
        body = _encode(reply.data) if reply.data is not None else b""
        headers = {"Content-Type": _JSON}
        status = reply.status
        if request.method == "GET" and status == 200:
            # The ETag depends on the Authorization header, as GitHub's does.
            key = caller.token.encode()[-64:]
            etag = f'"{hashlib.blake2b(body, digest_size=16, key=key).hexdigest()}"'
            headers["ETag"] = etag
            if request.headers.get("If-None-Match") == etag:
                status, body = 304, b""
        if quota is not None and self.quotas.enabled:  # with rate limits off, not counted
            if status != 304:
                quota.remaining = max(quota.remaining - 1, 0)
            headers.update(quota.headers(resource))
        if reply.headers:
            headers.update(reply.headers)
        return self._response(status, body, headers)

    def _response(self, status: int, body: bytes, headers: dict[str, str]) -> web.Response:
        headers["X-GitHub-Request-Id"] = f"FAKE:{next(self._request_ids):08X}"
        if not self.quotas.enabled:  # GHES with rate limits off sends none
            headers = {k: v for k, v in headers.items() if not k.lower().startswith("x-ratelimit-")}
        if self.clock is not time.time:
            headers["Date"] = formatdate(self.clock(), usegmt=True)
        return web.Response(status=status, body=body, headers=headers)

    def _json(self, status: int, data: Any) -> web.Response:
        return self._response(status, _encode(data), {"Content-Type": _JSON})

    def _primary(
        self, caller: Caller | str, quota: Quota, resource: str, status: int = 403
    ) -> web.Response:
        """GitHub's answer to a caller out of budget: 403, or 429 (GitHub sends both)."""
        key = caller.key if isinstance(caller, Caller) else "anonymous"
        who = key.replace("installation:", "installation ID ")
        data = {"message": f"API rate limit exceeded for {who}.", "documentation_url": DOCS}
        headers = {"Content-Type": _JSON, **quota.headers(resource)}
        headers["x-ratelimit-remaining"] = "0"
        headers["x-ratelimit-used"] = headers["x-ratelimit-limit"]
        return self._response(status, _encode(data), headers)

    async def _fault(
        self, request: web.Request, path: str, fault: Fault
    ) -> web.StreamResponse | None:
        """Answer as `fault` says (after its delay, if any), or None to answer as usual."""
        kind, headers = fault.kind, {"Content-Type": _JSON}
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if kind == "slow":
            return None
        if kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if kind == "primary":
            caller = self._caller(request)
            # As GitHub answers a caller out of budget: its limit, none left, the reset.
            key = caller.key if isinstance(caller, Caller) else "anonymous"
            limit = self.quotas.get(key, "core").limit
            quota = Quota(limit, int(self.clock()) + 3600.0)
            return self._primary(caller, quota, "core", fault.status or 403)
        if kind == "secondary":
            self.secondary_limits += 1
            headers.update(self._limits(self._caller(request), path))
            if fault.retry_after is not None:
                # Whole seconds, as GitHub sends them; never shorter than asked.
                headers["retry-after"] = str(math.ceil(fault.retry_after))
            data = {"message": fault.message or MSG_SECONDARY, "documentation_url": DOCS}
            return self._response(fault.status or 403, _encode(data), headers)
        if kind == "redirect":
            headers["Location"] = str(fault.location)
            return self._response(fault.status or 307, b"", headers)
        status, message = {
            "server_error": (502, "Server Error"),
            "unauthorized": (401, "Bad credentials"),
        }.get(kind, (500, "Fault"))
        data = {"message": fault.message or message, "documentation_url": DOCS}
        return self._response(fault.status or status, _encode(data), headers)


def _api_path(path: str) -> str:
    """Map GHES paths (`/api/v3/…`, `/api/graphql`) onto github.com's."""
    if path.startswith("/api/"):
        if path.startswith("/api/v3/") or path == "/api/v3":
            return path[7:] or "/"
        if path == "/api/graphql":
            return "/graphql"
    return path


def _resource(path: str) -> str:
    if path.startswith("/search/"):
        return "code_search" if path == "/search/code" else "search"  # GitHub's names
    return "graphql" if path == "/graphql" else "core"


def _unhonoured(route: Route, request: web.Request, path: str) -> Reply | None:
    """501 for a query parameter GitHub describes for the operation that `route` does
    not honour (a filter it would answer as if unasked), or None. One GitHub does not
    describe is ignored, as GitHub ignores it."""
    unhonoured = route.unhonoured(request.query)
    if not unhonoured:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    operation = described(method, path)
    if operation is None:
        return None
    template, parameters = operation
    for name, value in unhonoured:
        if name in parameters:
            part = f"the query parameter {name}={value}"
            message = not_implemented(method, template, part=part, jwt=route.auth == "jwt")
            return Reply({"message": message}, 501)
    return None


def _refuse(route: Route, caller: Caller) -> Reply | None:
    """GitHub's answer when the caller's kind may not use the route."""
    if route.auth == "jwt" and caller.kind != "app":
        return error(401, "A JSON web token could not be decoded")
    if route.auth == "token" and caller.kind == "anonymous":
        return error(401, "Requires authentication")
    if route.auth == "token" and caller.kind == "app":
        return error(403, "Resource not accessible by integration")
    return None
