"""Decode webhook deliveries into typed events, and check event names.

Pure functions over `bytes`: no I/O, no clock. The typed payload models live in
`ghbot.models` (generated from GitHub's schema) and are imported on first use, so that
importing this module stays cheap.

https://docs.github.com/en/webhooks/webhook-events-and-payloads
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Final, Generic, TypedDict

import msgspec
from typing_extensions import TypeVar

from ghbot.errors import MalformedPayload, UnknownEventError, UsageError

if TYPE_CHECKING:
    from ghbot.models import RepositoryWebhooks, SimpleUser

__all__ = [
    "Envelope",
    "Event",
    "IssueParams",
    "PullRequestParams",
    "RepoParams",
    "RepositoryRef",
    "UserRef",
    "check_name",
    "decode_envelope",
    "parse",
]

DOCS = "https://docs.github.com/en/webhooks/webhook-events-and-payloads"

#: The payload type of an `Event`: `Event[IssuesOpened]`; a bare `Event` is `Event[Any]`.
P = TypeVar("P", covariant=True, default=Any)


class RepoParams(TypedDict):
    """`owner` and `repo` of a delivery's repository, as REST methods take them."""

    owner: str
    repo: str


class IssueParams(RepoParams):
    """`owner`, `repo` and `issue_number` of the issue (or pull request) a delivery is about."""

    issue_number: int


class PullRequestParams(RepoParams):
    """`owner`, `repo` and `pull_number` of the pull request a delivery is about."""

    pull_number: int


class Event(msgspec.Struct, Generic[P], kw_only=True, frozen=True, gc=False):
    """One webhook delivery, decoded.

    `name` is the `X-GitHub-Event` header; `payload` is the struct of the event and
    action from `ghbot.models` (`IssuesOpened` for `issues` with action `opened`,
    `PushPayload` for `push`; `UnknownPayload` for an event or action the description
    does not know). A handler says what it expects with `Event[IssuesOpened]` (or a
    union such as `Event[IssuesPayload]`); `@on` checks that it matches the names the
    handler subscribes to. `raw` is the body exactly as received, for what the model
    does not cover. `delivery_id` (`X-GitHub-Delivery`) and `app_id` (the app the
    delivery was sent to, from `X-GitHub-Hook-Installation-Target-ID`) are the
    caller's to fill.
    """

    name: str
    action: str | None
    installation_id: int | None
    repository: RepositoryWebhooks | None
    sender: SimpleUser | None
    payload: P
    raw: bytes
    delivery_id: str | None = None
    app_id: int | None = None

    @property
    def qualified_name(self) -> str:
        """Return `"issues.opened"`, or just `"push"` for an event without an action."""
        return f"{self.name}.{self.action}" if self.action else self.name

    @property
    def known(self) -> bool:
        """Return whether the models know this event and action (else `UnknownPayload`)."""
        from ghbot.models import UnknownPayload

        return not isinstance(self.payload, UnknownPayload)

    def repo(self) -> RepoParams:
        """Return the delivery's repository as `{"owner": ..., "repo": ...}`.

        Raises `UsageError` for a delivery without a repository (`installation`, ...).
        """
        repository = self.repository
        if repository is None:
            raise UsageError(f"a {self.qualified_name} delivery has no repository")
        return {"owner": repository.owner.login, "repo": repository.name}

    def issue(self) -> IssueParams:
        """Return `owner`, `repo` and `issue_number` of the issue or pull request.

        The number is `issue.number`, else `pull_request.number`, else the payload's
        top-level `number` (a pull request is an issue to the REST API). Raises
        `UsageError` when the delivery is about no issue or pull request.
        """
        number = decode_envelope(self.raw).number
        if number is None:
            raise UsageError(f"a {self.qualified_name} delivery is about no issue")
        return {**self.repo(), "issue_number": number}

    def pull_request(self) -> PullRequestParams:
        """Return `owner`, `repo` and `pull_number` of the pull request.

        The number is `pull_request.number`, else `issue.number` when that issue is a
        pull request (`issue_comment` on a pull request), else the payload's top-level
        `number` beside a `pull_request`. Raises `UsageError` otherwise.
        """
        wire: _PullWire = _decode(_PULL_DECODER, self.raw, self.delivery_id)
        number = wire.pull_number()
        if number is None:
            raise UsageError(f"a {self.qualified_name} delivery is about no pull request")
        return {**self.repo(), "pull_number": number}

    @property
    def is_bot(self) -> bool:
        """Return whether the sender is a bot: type `Bot`, or a login ending in `[bot]`."""
        sender = self.sender
        if sender is None:
            return False
        return sender.type == "Bot" or sender.login.endswith("[bot]")

    @property
    def is_from_this_app(self) -> bool:
        """Return whether the sender is this app's own bot user (`<slug>[bot]`).

        The rule: `app_id` is known, the sender is a bot, and an object of the payload
        (`comment`, `issue`, `pull_request`, `review`, `discussion`, `release`,
        `check_run`, `check_suite`, ...) names this app, by `app_id`, as its
        `performed_via_github_app` (or `app`), with a slug that makes the sender's
        login. An action of this app that leaves no such trace in the payload (a label
        added to someone else's issue) is not recognised.
        """
        if self.app_id is None or not self.is_bot or self.sender is None:
            return False
        slugs = _app_slugs(self.raw, self.app_id)
        return any(self.sender.login == f"{slug}[bot]" for slug in slugs)


class UserRef(msgspec.Struct, frozen=True, gc=False):
    """The `login` of a user (a payload's `sender`, a repository's `owner`)."""

    login: str


class RepositoryRef(msgspec.Struct, frozen=True, gc=False):
    """A payload's `repository`: just what routing and ordering need."""

    id: int
    full_name: str
    owner: UserRef


class Envelope(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The few fields of a delivery that routing and ordering need, whatever the event.

    `number` is the issue or pull request the delivery is about: `issue.number`, else
    `pull_request.number`, else the payload's top-level `number`.
    """

    action: str | None = None
    installation_id: int | None = None
    repository: RepositoryRef | None = None
    sender: UserRef | None = None
    number: int | None = None


#: An installation id the journal can store (a signed 64-bit integer, never negative).
_InstallationId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class _Id(msgspec.Struct, gc=False):
    id: _InstallationId


class _Number(msgspec.Struct, gc=False):
    number: int | None = None


class _Wire(msgspec.Struct, gc=False):
    """What `decode_envelope` reads; every other field is skipped unparsed."""

    action: str | None = None
    installation: _Id | None = None
    repository: RepositoryRef | None = None
    sender: UserRef | None = None
    issue: _Number | None = None
    pull_request: _Number | None = None
    number: int | None = None


class _IssueNumber(msgspec.Struct, gc=False):
    number: int | None = None
    pull_request: dict[str, Any] | None = None


class _PullWire(msgspec.Struct, gc=False):
    """What `Event.pull_request` reads."""

    pull_request: _Number | None = None
    issue: _IssueNumber | None = None
    number: int | None = None

    def pull_number(self) -> int | None:
        if self.pull_request is not None:
            return self.pull_request.number or self.number
        if self.issue is not None and self.issue.pull_request is not None:
            return self.issue.number
        return None


class _AppRef(msgspec.Struct, gc=False):
    id: int | None = None
    slug: str | None = None


class _Subject(msgspec.Struct, gc=False):
    performed_via_github_app: _AppRef | None = None
    app: _AppRef | None = None


class _Action(msgspec.Struct, gc=False):
    action: str | None = None


_WIRE_DECODER = msgspec.json.Decoder(_Wire)
_PULL_DECODER = msgspec.json.Decoder(_PullWire)
_OBJECTS_DECODER = msgspec.json.Decoder(dict[str, msgspec.Raw])
_SUBJECT_DECODER = msgspec.json.Decoder(_Subject)
_ACTION_DECODER = msgspec.json.Decoder(_Action)
# Known event names only: the name comes from a request header, so caching a decoder
# per unknown name would let a sender grow this dict without bound.
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {}
# The action each tagged payload struct stands for (filled with the decoders).
_TAGS: dict[type, str] = {}


def parse(
    name: str, body: bytes, *, delivery_id: str | None = None, app_id: int | None = None
) -> Event[Any]:
    """Decode the body of a `name` delivery (the `X-GitHub-Event` header) into an Event.

    `body` must be the JSON object GitHub sent (verify its signature first). A known
    event and action decodes, in one pass, into its struct from `ghbot.models`
    (`IssuesOpened`); an unknown event, or an action of a known event the models
    lack, decodes into `ghbot.models.UnknownPayload`. Unknown fields are ignored. The
    first call for an event imports `ghbot.models` and builds that event's decoder.

    Raises `MalformedPayload` (HTTP 400) when the body is not a JSON object or a field
    has a type the model cannot hold; `delivery_id` is attached to it.
    """
    decoder = _DECODERS.get(name) or _decoder_for(name)
    try:
        payload = decoder.decode(body)
    except msgspec.ValidationError:
        payload = _decode_unknown_action(name, body, delivery_id)
    except (msgspec.DecodeError, RecursionError):
        payload = _decode(decoder, body, delivery_id)  # raises MalformedPayload
    installation = getattr(payload, "installation", None)
    return Event(
        name=name,
        action=_TAGS.get(type(payload)) or getattr(payload, "action", None),
        installation_id=installation.id if installation is not None else None,
        repository=getattr(payload, "repository", None),
        sender=getattr(payload, "sender", None),
        payload=payload,
        raw=body,
        delivery_id=delivery_id,
        app_id=app_id,
    )


def _decode_unknown_action(name: str, body: bytes, delivery_id: str | None) -> Any:
    """Decode a body its event's decoder refused: as `UnknownPayload` if its action is new.

    Only failing bodies come here, so a known action costs nothing more. Raises
    `MalformedPayload` when the action is known (or absent) and the body is wrong.
    """
    from ghbot.models import KNOWN_EVENTS

    actions = KNOWN_EVENTS.get(name)
    action = _decode(_ACTION_DECODER, body, delivery_id).action
    if actions and action is not None and action not in actions:
        return _decode(_unknown_decoder(), body, delivery_id)
    return _decode(_DECODERS.get(name) or _decoder_for(name), body, delivery_id)


def _app_slugs(body: bytes, app_id: int) -> list[str]:
    """Return the slugs the payload's top-level objects give the app `app_id`."""
    try:
        objects = _OBJECTS_DECODER.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return []
    slugs = []
    for raw in objects.values():
        if not bytes(raw).startswith(b"{"):
            continue  # scalars and lists
        try:
            subject = _SUBJECT_DECODER.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            continue  # an object with a field of another shape: not a trace of an app
        for ref in (subject.performed_via_github_app, subject.app):
            if ref is not None and ref.id == app_id and ref.slug:
                slugs.append(ref.slug)
    return slugs


def decode_envelope(body: bytes, *, delivery_id: str | None = None) -> Envelope:
    """Decode only the routing fields of any delivery's body; much cheaper than `parse`.

    Raises `MalformedPayload` (HTTP 400) when the body is not a JSON object or one of
    those fields has the wrong type (`repository` without `id`, `full_name` and
    `owner.login`; `sender` without `login`; `installation` without `id`).
    """
    wire: _Wire = _decode(_WIRE_DECODER, body, delivery_id)
    return Envelope(
        action=wire.action,
        installation_id=wire.installation.id if wire.installation is not None else None,
        repository=wire.repository,
        sender=wire.sender,
        number=_subject_number(wire),
    )


def _subject_number(wire: _Wire) -> int | None:
    """Return `issue.number`, else `pull_request.number`, else the top-level `number`."""
    for ref in (wire.issue, wire.pull_request):
        if ref is not None and ref.number is not None:
            return ref.number
    return wire.number


def check_name(name: str, *, strict: bool = True) -> bool:
    """Check a handler's event name: `"*"`, `"issues"` or `"issues.opened"`.

    Return True for a name the models know. Raises `UnknownEventError`, with a "did
    you mean" suggestion when one is close, when the event is not in
    `ghbot.models.KNOWN_EVENTS` or the action is not one of its known actions (any
    action is accepted for `OPEN_ACTION_EVENTS`). With `strict=False`, a well-formed
    name the models lack (`"new_event"`, `"issues.new_action"`) returns False instead:
    the caller warns.
    """
    from ghbot.models import KNOWN_EVENTS, OPEN_ACTION_EVENTS

    event, dot, action = name.partition(".")
    actions = KNOWN_EVENTS.get(event)
    if name == "*" or (actions is not None and not dot):
        return True
    if actions is not None and (action in actions or (event in OPEN_ACTION_EVENTS and action)):
        return True
    if not strict and event and (not dot or (action and "." not in action)):
        return False
    if actions is None:
        problem = f"unknown webhook event {name!r}" + _suggestion(name, event, KNOWN_EVENTS)
    elif not actions and event not in OPEN_ACTION_EVENTS:
        problem = f"webhook event {event!r} has no actions; did you mean {event!r}?"
    elif name in _HINTS:
        problem = f"webhook event {event!r} has no action {action!r}: {_HINTS[name]}"
    else:
        problem = f"webhook event {event!r} has no action {action!r}"
        problem += _suggestion(name, event, KNOWN_EVENTS)
    raise UnknownEventError(problem)


#: Names authors reach for that GitHub does not send, and what it sends instead.
_HINTS: Final[Mapping[str, str]] = {
    "pull_request.merged": (
        "GitHub sends 'pull_request.closed', with `pull_request.merged` true when it was"
    ),
    "pull_request_review.approved": (
        "GitHub sends 'pull_request_review.submitted', with `review.state` 'approved'"
    ),
    "pull_request_review.changes_requested": (
        "GitHub sends 'pull_request_review.submitted', with `review.state` 'changes_requested'"
    ),
    "issues.commented": "a comment is 'issue_comment.created' (on issues and pull requests)",
    "pull_request.commented": (
        "a comment is 'issue_comment.created' (on issues and pull requests), or "
        "'pull_request_review_comment.created' on a pull request's diff"
    ),
    "pull_request.updated": (
        "new commits are 'pull_request.synchronize'; a changed title or body is "
        "'pull_request.edited'"
    ),
    "issues.created": "did you mean 'issues.opened'?",
    "pull_request.created": "did you mean 'pull_request.opened'?",
}


def _suggestion(name: str, event: str, known: Mapping[str, frozenset[str]]) -> str:
    """Return `"; did you mean ..."` naming the closest known names, if any is close."""
    import difflib

    # A known event with a wrong action: suggest among that event's names only.
    pairs = [(event, known[event])] if event in known else known.items()
    candidates = [n for e, actions in pairs for n in (e, *(f"{e}.{a}" for a in actions))]
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    if close:
        return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    return f"; see {DOCS}"


def _decoder_for(name: str) -> msgspec.json.Decoder[Any]:
    """Return the decoder for event `name`, building and caching it on first use."""
    from ghbot.models import ACTION_TYPES, PAYLOAD_TYPES

    kind = PAYLOAD_TYPES.get(name)
    if kind is None:
        return _unknown_decoder()
    if not _TAGS:
        _TAGS.update({t: key.partition(".")[2] for key, t in ACTION_TYPES.items()})
    decoder = _DECODERS[name] = msgspec.json.Decoder(kind)
    return decoder


@functools.cache
def _unknown_decoder() -> msgspec.json.Decoder[Any]:
    from ghbot.models import UnknownPayload

    return msgspec.json.Decoder(UnknownPayload)


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes, delivery_id: str | None) -> Any:
    """Decode `body`, turning every failure into `MalformedPayload`."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        message = f"webhook payload does not match its model: {exc}"
        raise MalformedPayload(message, delivery_id=delivery_id) from exc
    except msgspec.DecodeError as exc:
        message = f"webhook body is not JSON: {exc}"
        raise MalformedPayload(message, delivery_id=delivery_id) from exc
    except RecursionError as exc:  # msgspec, like json, recurses per nesting level
        message = "webhook body is nested too deeply"
        raise MalformedPayload(message, delivery_id=delivery_id) from exc
