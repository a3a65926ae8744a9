"""Decode webhook deliveries into typed events, and check event names.

Pure functions over `bytes`: no I/O, no clock. The typed payload models live in
`ghbot.models` (generated from GitHub's schema) and are imported on first use, so that
importing this module stays cheap.

https://docs.github.com/en/webhooks/webhook-events-and-payloads
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from ghbot.errors import MalformedPayload, UnknownEventError

if TYPE_CHECKING:
    from ghbot.models import Model, Repository, User

__all__ = [
    "Envelope",
    "Event",
    "RepositoryRef",
    "UserRef",
    "check_name",
    "decode_envelope",
    "parse",
]

DOCS = "https://docs.github.com/en/webhooks/webhook-events-and-payloads"


class Event(msgspec.Struct, kw_only=True, gc=False):
    """One webhook delivery, decoded.

    `name` is the `X-GitHub-Event` header; `payload` is the event's typed struct from
    `ghbot.models` (`IssuesPayload` for `issues`, ...; `UnknownPayload` for an event the
    schema does not know; narrow it with `isinstance`); `raw` is the body exactly as
    received, for what the model does not cover. `delivery_id` (`X-GitHub-Delivery`)
    is the caller's to fill.
    """

    name: str
    action: str | None
    installation_id: int | None
    repository: Repository | None
    sender: User | None
    payload: Model
    raw: bytes
    delivery_id: str | None = None

    @property
    def qualified_name(self) -> str:
        """Return `"issues.opened"`, or just `"push"` for an event without an action."""
        return f"{self.name}.{self.action}" if self.action else self.name


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


class _Id(msgspec.Struct, gc=False):
    id: int


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


_WIRE_DECODER = msgspec.json.Decoder(_Wire)
# Known event names only: the name comes from a request header, so caching a decoder
# per unknown name would let a sender grow this dict without bound.
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {}


def parse(name: str, body: bytes, *, delivery_id: str | None = None) -> Event:
    """Decode the body of a `name` delivery (the `X-GitHub-Event` header) into an Event.

    `body` must be the JSON object GitHub sent (verify its signature first). A known
    event decodes into its typed struct from `ghbot.models`; any other name decodes
    into `ghbot.models.UnknownPayload`. Unknown fields are ignored. The first call for
    an event imports `ghbot.models` and builds that event's decoder, then caches it.

    Raises `MalformedPayload` (HTTP 400) when the body is not a JSON object or a field
    has a type the model cannot hold; `delivery_id` is attached to it.
    """
    decoder = _DECODERS.get(name) or _decoder_for(name)
    payload = _decode(decoder, body, delivery_id)
    installation = getattr(payload, "installation", None)
    return Event(
        name=name,
        action=getattr(payload, "action", None),
        installation_id=installation.id if installation is not None else None,
        repository=getattr(payload, "repository", None),
        sender=getattr(payload, "sender", None),
        payload=payload,
        raw=body,
        delivery_id=delivery_id,
    )


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


def check_name(name: str) -> None:
    """Check a handler's event name: `"*"`, `"issues"` or `"issues.opened"`.

    Raises `UnknownEventError`, with a "did you mean" suggestion when one is close,
    when the event is not in `ghbot.models.KNOWN_EVENTS` or the action is not one of
    its known actions (any action is accepted for `OPEN_ACTION_EVENTS`).
    """
    from ghbot.models import KNOWN_EVENTS, OPEN_ACTION_EVENTS

    event, dot, action = name.partition(".")
    actions = KNOWN_EVENTS.get(event)
    if name == "*" or (actions is not None and not dot):
        return
    if actions is not None and (action in actions or (event in OPEN_ACTION_EVENTS and action)):
        return
    if actions is None:
        problem = f"unknown webhook event {name!r}" + _suggestion(name, event, KNOWN_EVENTS)
    elif not actions and event not in OPEN_ACTION_EVENTS:
        problem = f"webhook event {event!r} has no actions; did you mean {event!r}?"
    else:
        problem = f"webhook event {event!r} has no action {action!r}"
        problem += _suggestion(name, event, KNOWN_EVENTS)
    raise UnknownEventError(problem)


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
    from ghbot.models import PAYLOAD_TYPES

    kind = PAYLOAD_TYPES.get(name)
    if kind is None:
        return _unknown_decoder()
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
