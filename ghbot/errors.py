"""Every error ghbot raises, under one root, split by who is at fault.

```
GhBotError
├── UsageError            the bot author or operator did something wrong
│   ├── ConfigError       settings that cannot work (every problem listed at once)
│   ├── UnknownEventError a handler names an event or action GitHub does not send
│   ├── NoInstallation    a handler used `self.github` on a delivery without installation
│   └── LeaseExhausted    a quota lease's task asked for more than it was granted
├── WebhookError          the sender of a webhook did something wrong (4xx to answer)
│   ├── MissingHeader, DuplicateHeader,            400
│   │   MalformedPayload
│   ├── InvalidSignature                           401
│   ├── PayloadTooLarge                            413
│   └── UnsupportedContentType                     415
├── GitHubError           GitHub answered with an error
│   ├── ClientError       4xx: BadRequest, Unauthorized, Forbidden, NotFound, Gone,
│   │                     ValidationFailed, RateLimited, InstallationUnavailable
│   ├── ServerError       5xx
│   └── GraphQLError      a 200 whose body lists errors
├── TransportError        no answer at all: Timeout, ConnectionFailed
├── CircuitOpen           an installation's breaker refuses calls for now
├── ShardDraining         a shard being replaced takes no new work; ask its successor
└── JournalError          the event store: Conflict, Fenced, JournalUnavailable
```

Errors carry data, never secrets: a token, key, JWT or signature never appears in a
message or a repr.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "BadRequest",
    "CircuitOpen",
    "ClientError",
    "ConfigError",
    "Conflict",
    "ConnectionFailed",
    "DuplicateHeader",
    "Fenced",
    "Forbidden",
    "GhBotError",
    "GitHubError",
    "Gone",
    "GraphQLError",
    "HandlerCancelled",
    "InstallationUnavailable",
    "InvalidSignature",
    "JournalError",
    "JournalUnavailable",
    "LeaseExhausted",
    "MalformedPayload",
    "MissingHeader",
    "NoInstallation",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RepositoryConfigError",
    "ServerError",
    "ShardDraining",
    "Timeout",
    "TransportError",
    "Unauthorized",
    "UnknownEventError",
    "UnsupportedContentType",
    "UsageError",
    "ValidationFailed",
    "WebhookError",
]


class GhBotError(Exception):
    """The root of every error ghbot raises.

    Every subclass pickles with its data (errors cross process boundaries in the Ray
    runtime), whatever its constructor's signature.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[GhBotError], args: tuple[Any, ...], state: dict[str, Any]) -> GhBotError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


# --- the caller's fault ---------------------------------------------------------------


class UsageError(GhBotError):
    """The bot author or operator asked for something that cannot work."""


class ConfigError(UsageError):
    """Settings are missing or invalid; `problems` lists every one found."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} configuration problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(message)


class UnknownEventError(UsageError):
    """A handler names an event or action that GitHub does not send."""


class NoInstallation(UsageError):
    """A handler used `self.github` (or `self.quota`) for a delivery without installation.

    Such a delivery comes from a repository or organization webhook pointed at the
    App's URL, or is an app-level event (`github_app_authorization`): there is no
    installation to authenticate as. Retrying cannot help, so the runtime dead-letters
    the handler at once. `delivery_id` and `event` name the delivery when known.
    """

    def __init__(
        self, delivery_id: str | None = None, event: str | None = None, attribute: str = "github"
    ) -> None:
        self.delivery_id = delivery_id
        self.event = event
        self.attribute = attribute
        subject = f"delivery {delivery_id} (event {event})" if delivery_id else "this delivery"
        super().__init__(
            f"{subject} carries no installation: it came from a repository or organization "
            "webhook pointed at the App's URL, or is an app-level event; "
            f"self.{attribute} is unavailable"
        )


class LeaseExhausted(UsageError):
    """A quota lease's client was asked for a request, or a write, beyond its grant.

    Not a `RateLimited`: GitHub asked for nothing, the lease was too small for what
    its tasks did. Raised in a handler (or a task it awaits), it fails the attempt like
    any error of the handler's: retried with backoff, then dead-lettered.
    """


class RepositoryConfigError(UsageError):
    """A repository's configuration file is there but unusable (not YAML, wrong shape).

    `repository` and `path` say which file (`owner/name`, `.github/bot.yml`). Retrying
    cannot help until someone fixes the file, so the runtime dead-letters a handler that
    lets it through at once (replay the dead letter after the fix), and logs it.
    """

    def __init__(self, repository: str, path: str, reason: str) -> None:
        self.repository = repository
        self.path = path
        self.reason = reason
        super().__init__(f"{repository}: {path}: {reason}")


# --- the webhook sender's fault -------------------------------------------------------


class WebhookError(GhBotError):
    """A delivery cannot be accepted; `http_status` is what the ingress answers."""

    http_status: int = 400

    def __init__(self, message: str, *, delivery_id: str | None = None) -> None:
        super().__init__(message)
        self.delivery_id = delivery_id


class MissingHeader(WebhookError):
    """A header GitHub always sends is absent or empty."""

    http_status = 400


class DuplicateHeader(WebhookError):
    """A header GitHub sends once (the signature, the event) came twice."""

    http_status = 400


class MalformedPayload(WebhookError):
    """The body is not the JSON object GitHub sends."""

    http_status = 400


class InvalidSignature(WebhookError):
    """`X-Hub-Signature-256` is missing, malformed, or matches no configured secret."""

    http_status = 401


class PayloadTooLarge(WebhookError):
    """The body is larger than GitHub ever sends (25 MB)."""

    http_status = 413


class UnsupportedContentType(WebhookError):
    """The delivery is not `application/json` (the hook is set to form encoding)."""

    http_status = 415


# --- GitHub's answers -----------------------------------------------------------------


class GitHubError(GhBotError):
    """GitHub answered a request with an error status.

    `status`, `message` and `request_id` (`x-github-request-id`) are GitHub's; `method`
    and `url` are the request's (its query string is kept, never its headers).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        method: str = "",
        url: str = "",
        request_id: str | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.method = method
        self.url = url
        self.request_id = request_id
        self.data = data
        self.headers: Mapping[str, str] = dict(headers or {})
        where = f" ({method} {url})" if method else ""
        rid = f" [request {request_id}]" if request_id else ""
        super().__init__(f"{status} {message}{where}{rid}")


class ClientError(GitHubError):
    """A 4xx: the request was wrong for GitHub; retrying it unchanged will not help."""


class BadRequest(ClientError):
    """400."""


class Unauthorized(ClientError):
    """401: the token or JWT was refused."""


class Forbidden(ClientError):
    """403 that is not a rate limit: the installation lacks a permission."""


class NotFound(ClientError):
    """404 (GitHub also answers 404 for resources the token may not see)."""


class Gone(ClientError):
    """410."""


class ValidationFailed(ClientError):
    """422; `errors` is GitHub's `errors` list as it came: mostly `{resource, field,
    code}` objects, but some endpoints send strings (creating a pull request review
    without a body: ``["Review Can't be blank"]``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: Sequence[Mapping[str, Any] | str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(status, message, **kwargs)
        self.errors: list[Mapping[str, Any] | str] = list(errors)


class InstallationUnavailable(ClientError):
    """GitHub refused an installation's token: the App is not installed there (404:
    uninstalled, or an ID of another App's) or the installation is suspended (403,
    `suspended`).

    No call can be made for it until it is installed again or unsuspended, so retrying
    does not help: the runtime dead-letters a delivery's handler at once, and ends a
    scheduled (`@every`) run without a dead letter and schedules the installation no
    more until GitHub sends its `installation.created` or `installation.unsuspend`
    (a shard started later, knowing none of this, runs it once more, which ends so).
    """

    def __init__(
        self, status: int, message: str, *, installation_id: int, suspended: bool, **kwargs: Any
    ) -> None:
        super().__init__(status, message, **kwargs)
        self.installation_id = installation_id
        self.suspended = suspended


class RateLimited(ClientError):
    """A primary or secondary rate limit (403/429), or the local budget is spent.

    `kind` is ``"primary"`` or ``"secondary"``; `retry_after` is the seconds to wait
    from when the answer arrived; `reset` the epoch second the primary window resets,
    GitHub's; `reset_after` the seconds from the answer until then, on GitHub's clock
    (a local clock off GitHub's would make `reset` nearer or further).
    """

    #: For one pickled by a version before it (an upgrade's older process): unknown.
    reset_after: float | None = None

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str,
        retry_after: float,
        reset: float | None = None,
        reset_after: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(status, message, **kwargs)
        self.kind = kind
        self.retry_after = retry_after
        self.reset = reset
        self.reset_after = reset_after


class ServerError(GitHubError):
    """A 5xx: GitHub failed; retrying later may help."""


class GraphQLError(GitHubError):
    """A GraphQL answer with an `errors` list."""

    def __init__(self, errors: Sequence[Mapping[str, Any]], **kwargs: Any) -> None:
        self.errors: list[Mapping[str, Any]] = list(errors)
        first = str(self.errors[0].get("message", "GraphQL error")) if self.errors else ""
        super().__init__(kwargs.pop("status", 200), first, **kwargs)


# --- no answer at all -----------------------------------------------------------------


class TransportError(GhBotError):
    """No HTTP answer arrived: the connection failed or the request timed out."""

    def __init__(self, message: str, *, method: str = "", url: str = "") -> None:
        super().__init__(f"{message} ({method} {url})" if method else message)
        #: What happened, without the request (`no answer within 30 s`).
        self.reason = message
        self.method = method
        self.url = url


class Timeout(TransportError):
    """The request took longer than its timeout."""


class ConnectionFailed(TransportError):
    """The connection could not be made or was dropped."""


class CircuitOpen(GhBotError):
    """An installation's circuit breaker is open; calls are refused for `retry_after` s."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HandlerCancelled(GhBotError):
    """A handler raised `asyncio.CancelledError` though nothing cancelled it (it awaited
    a task its own code had cancelled, say): a failed attempt like any other, retried
    and dead-lettered as such, rather than taken for the shard stopping it."""

    def __init__(self, handler: str) -> None:
        super().__init__(f"{handler} raised CancelledError, though nothing cancelled it")
        self.handler = handler


class ShardDraining(GhBotError):
    """The shard asked is draining (an upgrade, a reshard, `ghbot stop`) and takes no
    new work; nothing was done. Ask again once its successor runs."""

    def __init__(self, installation_id: int, operation: str) -> None:
        super().__init__(
            f"the shard holding installation {installation_id} is draining (an upgrade, "
            f"a reshard or a stop): {operation}; ask again once its successor runs"
        )
        self.installation_id = installation_id
        self.operation = operation


# --- the journal ----------------------------------------------------------------------


class JournalError(GhBotError):
    """The event store refused or failed an operation."""


class Conflict(JournalError):
    """An append expected a stream to be at `expected` but it was at `actual`."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream!r} is at {actual}, append expected {expected}")
        self.stream = stream
        self.expected = expected
        self.actual = actual


class Fenced(JournalError):
    """A writer's epoch is not the shard's current one: an older one (a zombie), or
    one never granted."""

    def __init__(self, shard: int, epoch: int, current: int) -> None:
        super().__init__(f"shard {shard}: epoch {epoch} is not its current epoch {current}")
        self.shard = shard
        self.epoch = epoch
        self.current = current


class JournalUnavailable(JournalError):
    """The journal cannot be reached or written now; the caller should answer 503."""
