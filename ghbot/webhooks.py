"""Verify and take apart a webhook delivery, without I/O.

GitHub signs each delivery with HMAC-SHA256 over the raw body and sends the hex digest
as `X-Hub-Signature-256: sha256=<hex>`. Several secrets may be configured at once so a
secret can be rotated without losing deliveries.
https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
https://docs.github.com/en/webhooks/webhook-events-and-payloads#delivery-headers
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

import msgspec

from ghbot import metrics
from ghbot.digits import whole_number
from ghbot.errors import (
    DuplicateHeader,
    InvalidSignature,
    MalformedPayload,
    MissingHeader,
    PayloadTooLarge,
    UnsupportedContentType,
    WebhookError,
)
from ghbot.events import Envelope, decode_envelope

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "RETRY_AFTER",
    "SINGLE_HEADERS",
    "Delivery",
    "check_content_length",
    "parse_delivery",
    "sign",
    "verify",
]

#: GitHub caps payloads at 25 MB and does not deliver larger events at all.
MAX_PAYLOAD_BYTES = 25 * 1024 * 1024
#: Seconds a 503 asks its sender to wait before sending again (`Retry-After`): a shard
#: draining, restarting or without its journal. GitHub ignores it; the redelivery
#: sweep has the delivery sent again.
RETRY_AFTER = 10

_PREFIX = "sha256="
_DIGEST_SIZE = 32

#: Headers ghbot reads that must come once: two of one (two signatures, two events)
#: leave which one counts to whoever parses the request, so the delivery is refused.
SINGLE_HEADERS = frozenset(
    {
        "content-type",
        "x-hub-signature-256",
        "x-github-event",
        "x-github-delivery",
        "x-github-hook-id",
        "x-github-hook-installation-target-type",
        "x-github-hook-installation-target-id",
    }
)


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One verified delivery: its headers' facts, its envelope and its raw body.

    It holds no signature and no secret, so it may be logged, journaled and sent
    between processes.
    """

    event: str
    delivery_id: str
    hook_id: str | None
    target_type: str | None
    target_id: str | None
    envelope: Envelope
    body: bytes

    @property
    def app_id(self) -> int | None:
        """Return the app the delivery was sent to, when the target is an app."""
        target = self.target_id or ""
        # Past 63 bits the journal cannot hold it (and no app of GitHub's has such an
        # id): 19 digits at most.
        if self.target_type != "integration" or len(target) > 19:
            return None
        value = whole_number(target)
        return value if value is not None and value < 2**63 else None


def sign(body: bytes, secret: str) -> str:
    """Return the `X-Hub-Signature-256` value GitHub sends for `body` under `secret`."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return _PREFIX + digest


def verify(body: bytes, signature: str | None, secrets: Sequence[str]) -> None:
    """Check `signature` (the `X-Hub-Signature-256` header) against every secret.

    Every configured secret is tried, each comparison in constant time, so rotation
    works and timing reveals nothing about which secret matched.

    Raises `InvalidSignature` when the header is missing or not `sha256=<64 hex>`
    (a legacy `sha1=` signature included), when no secret is configured, or when no
    secret matches. An empty secret is no secret (anyone could sign with it): it is
    never tried.
    """
    if not any(secrets):
        raise InvalidSignature("no webhook secret is configured; refusing every delivery")
    if not signature:
        raise InvalidSignature("X-Hub-Signature-256 is missing")
    if not signature.startswith(_PREFIX):
        raise InvalidSignature("X-Hub-Signature-256 must start with 'sha256='")
    hex_digest = signature[len(_PREFIX) :].strip()
    try:
        given = bytes.fromhex(hex_digest)
    except ValueError:
        given = b""
    if len(given) != _DIGEST_SIZE or len(hex_digest) != 2 * _DIGEST_SIZE:
        raise InvalidSignature("X-Hub-Signature-256 is not a 64-digit hex digest")
    matched = False
    for secret in secrets:
        # hmac.digest is the one-shot C implementation; compare_digest is constant time.
        if secret:
            matched |= hmac.compare_digest(hmac.digest(secret.encode(), body, "sha256"), given)
    if not matched:
        raise InvalidSignature("X-Hub-Signature-256 matches no configured secret")


def check_content_length(headers: Mapping[str, str], limit: int = MAX_PAYLOAD_BYTES) -> None:
    """Refuse a delivery whose declared `Content-Length` is over `limit`, before reading it.

    Raises `PayloadTooLarge`. A missing or unparsable length is left to the body check
    (the reader must then stop at `limit` itself).
    """
    declared = _get(headers, "content-length")
    if declared and (size := whole_number(declared)) is not None and size > limit:
        raise PayloadTooLarge(f"payload of {declared} bytes is over the {limit}-byte cap")


def parse_delivery(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    *,
    limit: int = MAX_PAYLOAD_BYTES,
) -> Delivery:
    """Verify a delivery and decode its envelope; never decodes the whole payload.

    `headers` may be any mapping; names are matched case-insensitively, and a mapping
    whose `items()` yields a name twice (Starlette's `Headers` does) is refused when
    that name is one of `SINGLE_HEADERS` (`DuplicateHeader`, 400). Checks, in
    order: size (`PayloadTooLarge`, 413), duplicates, content type (`UnsupportedContentType`, 415:
    GitHub's form encoding is refused, an absent type is taken as JSON), signature
    (`InvalidSignature`, 401), the `X-GitHub-Delivery` and `X-GitHub-Event` headers
    (`MissingHeader`, 400) and the body being a JSON object (`MalformedPayload`, 400).

    Counts the delivery (`ghbot_webhooks_received_total` by event) or what refused it
    (`metrics.parse_error`), so each server that takes deliveries through it counts
    them alike: the Ray ingress, `ghbot dev`, an application of its own.
    """
    try:
        delivery = _parse(headers, body, secrets, limit)
    except WebhookError as exc:
        metrics.parse_error(exc)
        raise
    metrics.webhook_received(delivery.event)
    return delivery


def _parse(headers: Mapping[str, str], body: bytes, secrets: Sequence[str], limit: int) -> Delivery:
    if len(body) > limit:
        raise PayloadTooLarge(f"payload of {len(body)} bytes is over the {limit}-byte cap")
    lowered = _single_valued(headers)
    content_type = lowered.get("content-type")
    if content_type and content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedContentType(
            f"content type {content_type!r} is not application/json; "
            "set the webhook's content type to application/json"
        )
    verify(body, lowered.get("x-hub-signature-256"), secrets)
    delivery_id = lowered.get("x-github-delivery", "").strip()
    if not delivery_id:
        raise MissingHeader("X-GitHub-Delivery is missing")
    event = lowered.get("x-github-event", "").strip()
    if not event:
        raise MissingHeader("X-GitHub-Event is missing", delivery_id=delivery_id)
    try:
        envelope = decode_envelope(body)
    except MalformedPayload as exc:
        exc.delivery_id = delivery_id
        raise
    return Delivery(
        event=event,
        delivery_id=delivery_id,
        hook_id=lowered.get("x-github-hook-id"),
        target_type=lowered.get("x-github-hook-installation-target-type"),
        target_id=lowered.get("x-github-hook-installation-target-id"),
        envelope=envelope,
        body=body,
    )


def _single_valued(headers: Mapping[str, str]) -> dict[str, str]:
    """Return `headers` keyed by lower-case name; raise `DuplicateHeader` (see above)."""
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in lowered and key in SINGLE_HEADERS:
            raise DuplicateHeader(f"{name} appears more than once; GitHub sends it once")
        lowered[key] = value
    return lowered


def _get(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, item in headers.items():
        if key.lower() == name:
            return item
    return None
