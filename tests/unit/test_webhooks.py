"""Signature checks and delivery parsing, with GitHub's own test vector and real payloads."""

from __future__ import annotations

import contextlib
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghbot import webhooks
from ghbot.errors import (
    InvalidSignature,
    MalformedPayload,
    MissingHeader,
    PayloadTooLarge,
    UnsupportedContentType,
    WebhookError,
)
from ghbot.testing.payloads import EXAMPLES
from tests.metering import metered

FIXTURES = EXAMPLES

# https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries#testing-the-webhook-payload-validation
VECTOR_SECRET = "It's a Secret to Everybody"
VECTOR_BODY = b"Hello, World!"
VECTOR_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_sign_matches_githubs_test_vector() -> None:
    assert webhooks.sign(VECTOR_BODY, VECTOR_SECRET) == VECTOR_SIGNATURE


def test_verify_accepts_githubs_test_vector() -> None:
    webhooks.verify(VECTOR_BODY, VECTOR_SIGNATURE, [VECTOR_SECRET])


def test_verify_accepts_uppercase_hex() -> None:
    webhooks.verify(VECTOR_BODY, "sha256=" + VECTOR_SIGNATURE[7:].upper(), [VECTOR_SECRET])


def test_verify_accepts_whitespace_around_the_digest() -> None:
    webhooks.verify(VECTOR_BODY, VECTOR_SIGNATURE + " ", [VECTOR_SECRET])


MISSING = "X-Hub-Signature-256 is missing"
NOT_SHA256 = "X-Hub-Signature-256 must start with 'sha256='"
NOT_HEX = "X-Hub-Signature-256 is not a 64-digit hex digest"
NO_MATCH = "X-Hub-Signature-256 matches no configured secret"
NO_SECRET = "no webhook secret is configured; refusing every delivery"


@pytest.mark.parametrize(
    ("signature", "secrets", "message"),
    [
        (None, [VECTOR_SECRET], MISSING),
        ("", [VECTOR_SECRET], MISSING),
        (VECTOR_SIGNATURE, [], NO_SECRET),
        (webhooks.sign(VECTOR_BODY, ""), [""], NO_SECRET),
        (webhooks.sign(VECTOR_BODY, ""), ["", VECTOR_SECRET], NO_MATCH),
        ("sha1=" + "0" * 40, [VECTOR_SECRET], NOT_SHA256),
        ("sha256=xyz", [VECTOR_SECRET], NOT_HEX),
        ("sha256=" + "0" * 64, [VECTOR_SECRET], NO_MATCH),
        (VECTOR_SIGNATURE, ["another secret"], NO_MATCH),
        (VECTOR_SIGNATURE[:-1], [VECTOR_SECRET], NOT_HEX),
        # The right digest with a space inside (which bytes.fromhex would skip).
        (VECTOR_SIGNATURE[:21] + " " + VECTOR_SIGNATURE[21:], [VECTOR_SECRET], NOT_HEX),
    ],
)
def test_verify_refuses(signature: str | None, secrets: list[str], message: str) -> None:
    """Each refusal says which header and what is wrong with it, as GitHub names it:
    the ingress answers with this text and logs it."""
    with pytest.raises(InvalidSignature) as caught:
        webhooks.verify(VECTOR_BODY, signature, secrets)
    assert caught.value.http_status == 401
    assert str(caught.value) == message


def test_verify_tries_every_secret_for_rotation() -> None:
    webhooks.verify(VECTOR_BODY, VECTOR_SIGNATURE, ["old secret", VECTOR_SECRET, "newer"])


@given(body=st.binary(max_size=2048), secret=st.text(min_size=1, max_size=64))
def test_sign_then_verify_round_trips(body: bytes, secret: str) -> None:
    webhooks.verify(body, webhooks.sign(body, secret), [secret])


@given(
    body=st.binary(max_size=512),
    secret=st.text(min_size=1, max_size=32),
    other=st.text(min_size=1, max_size=32),
    flip=st.integers(min_value=0, max_value=63),
)
def test_any_change_to_body_secret_or_digest_is_refused(
    body: bytes, secret: str, other: str, flip: int
) -> None:
    signature = webhooks.sign(body, secret)
    if other != secret:
        with pytest.raises(InvalidSignature):
            webhooks.verify(body, signature, [other])
    with pytest.raises(InvalidSignature):
        webhooks.verify(body + b"x", signature, [secret])
    digits = list(signature[7:])
    digits[flip] = "0" if digits[flip] != "0" else "1"
    with pytest.raises(InvalidSignature):
        webhooks.verify(body, "sha256=" + "".join(digits), [secret])


@given(body=st.binary(max_size=256), signature=st.text(max_size=80))
def test_verify_never_raises_anything_but_invalid_signature(body: bytes, signature: str) -> None:
    with contextlib.suppress(InvalidSignature):
        webhooks.verify(body, signature, ["s"])


def _headers(body: bytes, *, event: str = "issues", secret: str = "s3cret") -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-GitHub-Hook-ID": "292430182",
        "X-GitHub-Hook-Installation-Target-Type": "integration",
        "X-GitHub-Hook-Installation-Target-ID": "79929171",
        "X-Hub-Signature-256": webhooks.sign(body, secret),
    }


def test_parse_delivery_reads_headers_and_envelope() -> None:
    body = (FIXTURES / "issues.opened.json").read_bytes()
    delivery = webhooks.parse_delivery(_headers(body), body, ["s3cret"])
    assert delivery.event == "issues"
    assert delivery.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert delivery.hook_id == "292430182"
    assert delivery.target_type == "integration"
    assert delivery.target_id == "79929171"
    assert delivery.app_id == 79929171  # the target is an app ("integration")
    assert delivery.envelope.action == "opened"
    assert delivery.body is body


@pytest.mark.parametrize(
    ("target_type", "target_id"),
    [
        ("repository", "79929171"),
        ("integration", ""),
        ("", "7"),
        # Not an id: "²".isdigit() is true and int("²") fails; past what the journal holds.
        ("integration", "\xb2"),
        ("integration", str(2**63)),
        ("integration", "9" * 5000),
    ],
)
def test_a_delivery_not_sent_to_an_app_has_no_app_id(target_type: str, target_id: str) -> None:
    body = (FIXTURES / "issues.opened.json").read_bytes()
    headers = _headers(body) | {
        "X-GitHub-Hook-Installation-Target-Type": target_type,
        "X-GitHub-Hook-Installation-Target-ID": target_id,
    }
    assert webhooks.parse_delivery(headers, body, ["s3cret"]).app_id is None


def test_parse_delivery_counts_what_it_takes_and_what_it_refuses() -> None:
    """Every server that takes deliveries through it counts them alike (the Ray
    ingress, `ghbot dev`, an application of its own), each once."""
    m = metered()
    body = (FIXTURES / "issues.opened.json").read_bytes()
    webhooks.parse_delivery(_headers(body), body, ["s3cret"])
    with pytest.raises(InvalidSignature):
        webhooks.parse_delivery(_headers(body, secret="other"), body, ["s3cret"])
    with pytest.raises(PayloadTooLarge):
        webhooks.parse_delivery(_headers(body), body, ["s3cret"], limit=len(body) - 1)
    assert m.delta("ghbot_webhooks_received_total") == {frozenset({("event", "issues")}): 1}
    assert m.count("ghbot_webhook_signature_failures_total") == 1
    too_large = frozenset({("reason", "too_large")})
    assert m.delta("ghbot_webhook_parse_errors_total") == {too_large: 1}


def test_parse_delivery_headers_are_case_insensitive() -> None:
    body = (FIXTURES / "ping.json").read_bytes()
    headers = {k.lower(): v for k, v in _headers(body, event="ping").items()}
    assert webhooks.parse_delivery(headers, body, ["s3cret"]).event == "ping"


def test_parse_delivery_never_keeps_the_signature() -> None:
    body = (FIXTURES / "ping.json").read_bytes()
    headers = _headers(body, event="ping")
    delivery = webhooks.parse_delivery(headers, body, ["s3cret"])
    assert headers["X-Hub-Signature-256"][7:] not in repr(delivery)


GUID = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
FORM = (
    "content type 'application/x-www-form-urlencoded' is not application/json; "
    "set the webhook's content type to application/json"
)


@pytest.mark.parametrize(
    ("change", "error", "status", "message", "delivery_id"),
    [
        ({"X-GitHub-Event": ""}, MissingHeader, 400, "X-GitHub-Event is missing", GUID),
        ({"X-GitHub-Event": "  "}, MissingHeader, 400, "X-GitHub-Event is missing", GUID),
        ({"X-GitHub-Delivery": ""}, MissingHeader, 400, "X-GitHub-Delivery is missing", None),
        ({"X-GitHub-Delivery": " \t"}, MissingHeader, 400, "X-GitHub-Delivery is missing", None),
        ({"X-Hub-Signature-256": ""}, InvalidSignature, 401, MISSING, None),
        (
            {"Content-Type": "application/x-www-form-urlencoded"},
            UnsupportedContentType,
            415,
            FORM,
            None,
        ),
    ],
)
def test_parse_delivery_refuses_bad_headers(
    change: dict[str, str],
    error: type[WebhookError],
    status: int,
    message: str,
    delivery_id: str | None,
) -> None:
    """The error says what is wrong and, once the delivery's ID is known, carries it
    (for the log line and the metrics)."""
    body = (FIXTURES / "issues.opened.json").read_bytes()
    headers = _headers(body) | change
    with pytest.raises(error) as caught:
        webhooks.parse_delivery(headers, body, ["s3cret"])
    assert caught.value.http_status == status
    assert str(caught.value) == message
    assert caught.value.delivery_id == delivery_id


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json; charset=utf-8; version=1",
    ],
)
def test_a_json_content_type_is_taken_in_any_case_and_with_parameters(content_type: str) -> None:
    """Media types are case-insensitive and may carry parameters (RFC 9110); a proxy
    in front of the ingress may add a charset."""
    body = (FIXTURES / "issues.opened.json").read_bytes()
    headers = _headers(body) | {"Content-Type": content_type}
    assert webhooks.parse_delivery(headers, body, ["s3cret"]).event == "issues"


def test_padding_around_the_event_and_the_guid_is_not_kept() -> None:
    body = (FIXTURES / "issues.opened.json").read_bytes()
    headers = _headers(body) | {"X-GitHub-Event": " issues ", "X-GitHub-Delivery": " g-1\t"}
    delivery = webhooks.parse_delivery(headers, body, ["s3cret"])
    assert (delivery.event, delivery.delivery_id) == ("issues", "g-1")


def test_a_body_as_long_as_the_cap_is_taken_and_one_byte_more_is_not() -> None:
    body = (FIXTURES / "ping.json").read_bytes()
    headers = _headers(body, event="ping")
    assert webhooks.parse_delivery(headers, body, ["s3cret"], limit=len(body)).event == "ping"
    with pytest.raises(PayloadTooLarge) as caught:
        webhooks.parse_delivery(headers, body, ["s3cret"], limit=len(body) - 1)
    assert str(caught.value) == (
        f"payload of {len(body)} bytes is over the {len(body) - 1}-byte cap"
    )


def test_parse_delivery_refuses_oversized_bodies_before_anything_else() -> None:
    body = b"{}" + b" " * 100
    with pytest.raises(PayloadTooLarge) as caught:
        webhooks.parse_delivery({}, body, ["s3cret"], limit=50)
    assert caught.value.http_status == 413


def test_declared_content_length_over_the_cap_is_refused_before_reading() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        webhooks.check_content_length({"Content-Length": str(26 * 1024 * 1024)})
    assert str(caught.value) == "payload of 27262976 bytes is over the 26214400-byte cap"
    webhooks.check_content_length({"Content-Length": "1024"})
    webhooks.check_content_length({})
    # Exactly the cap is what GitHub may send.
    webhooks.check_content_length({"Content-Length": str(webhooks.MAX_PAYLOAD_BYTES)})
    with pytest.raises(PayloadTooLarge):
        webhooks.check_content_length({"content-length": "11"}, limit=10)
    webhooks.check_content_length({"content-length": "10"}, limit=10)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b"{"])
def test_parse_delivery_refuses_malformed_json_with_its_delivery_id(body: bytes) -> None:
    with pytest.raises(MalformedPayload) as caught:
        webhooks.parse_delivery(_headers(body), body, ["s3cret"])
    assert caught.value.http_status == 400
    assert caught.value.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"


def test_signature_is_checked_over_the_raw_bytes() -> None:
    body = (FIXTURES / "issues.opened.json").read_bytes()
    reformatted = body.replace(b": ", b":")
    assert reformatted != body
    with pytest.raises(InvalidSignature):
        webhooks.parse_delivery(
            _headers(body) | {"X-Hub-Signature-256": webhooks.sign(body, "s3cret")},
            reformatted,
            ["s3cret"],
        )


def test_sign_agrees_with_plain_hmac() -> None:
    body = (FIXTURES / "push.json").read_bytes()
    expected = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert webhooks.sign(body, "k") == "sha256=" + expected
