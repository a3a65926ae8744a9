"""Logs: JSON lines with the structured fields, and no secret in any of them."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ghbot import logs
from ghbot.auth import AppAuth
from ghbot.config import Settings
from ghbot.errors import ConfigError, UsageError

TOKEN = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"
SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """A buffer to log into; ghbot's and the root logger's set-up is restored afterwards."""
    out = io.StringIO()
    ghbot = logging.getLogger("ghbot")
    root = logging.getLogger()
    before = (list(ghbot.handlers), ghbot.level, ghbot.propagate, list(root.handlers), root.level)
    yield out
    ghbot.handlers[:], ghbot.level, ghbot.propagate = before[0], before[1], before[2]
    root.handlers[:], root.level = before[3], before[4]


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_one_json_object_per_line_with_the_fields_given(captured: io.StringIO) -> None:
    logs.configure("INFO", "json", stream=captured)
    log = logging.getLogger("ghbot.test")
    log.debug("not shown at INFO")
    log.warning(
        "handler %s failed",
        "welcome",
        extra={"event_id": "guid-1", "installation_id": 42, "error_type": "Timeout"},
    )
    [line] = lines(captured)
    assert line["message"] == "handler welcome failed" and line["level"] == "warning"
    assert (line["event_id"], line["installation_id"], line["error_type"]) == (
        "guid-1",
        42,
        "Timeout",
    )
    assert line["logger"] == "ghbot.test" and str(line["timestamp"]).endswith("+00:00")
    assert "repository" not in line  # only the fields given


def test_an_exception_gives_its_type_and_a_masked_traceback(captured: io.StringIO) -> None:
    logs.configure("INFO", "json", stream=captured)
    try:
        raise RuntimeError(f"GitHub refused {TOKEN}")
    except RuntimeError:
        logging.getLogger("ghbot.test").exception("it broke")
    [line] = lines(captured)
    assert line["error_type"] == "RuntimeError"
    assert "RuntimeError" in str(line["traceback"]) and TOKEN not in str(line["traceback"])


def test_secrets_never_reach_a_line(captured: io.StringIO, pem_pkcs8: bytes) -> None:
    logs.configure("DEBUG", "json", stream=captured)
    jwt = AppAuth(1, pem_pkcs8).jwt()
    log = logging.getLogger("ghbot.test")
    log.info("token %s", TOKEN)
    log.info("headers %s", {"Authorization": f"Bearer {jwt}", "Accept": "json"})
    log.info("jwt %s", jwt)
    log.info("signature %s", SIGNATURE)
    log.info("key %s", pem_pkcs8.decode().strip())
    log.info("in a field", extra={"repository": f"o/r?token={TOKEN}"})
    text = captured.getvalue()
    for secret in (TOKEN, jwt, SIGNATURE[7:], "PRIVATE KEY", pem_pkcs8.decode().split()[4]):
        assert secret not in text
    got = lines(captured)
    assert got[0]["message"] == "token ghs_…8B4a"
    assert "'Accept': 'json'" in str(got[1]["message"])
    assert got[2]["message"] == "jwt [jwt]" and got[3]["message"] == "signature sha256=[redacted]"
    assert got[4]["message"] == "key [key]"


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        # A key cut short (a message cut at its length limit) still goes, to the end.
        ("key -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA", "key [key]", "MIIE"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: [redacted]", "dXNl"),
        ("AUTHORIZATION=token abc123def456", "AUTHORIZATION=[redacted]", "abc123"),
        # An unsigned JWT ("alg": "none") has an empty third part.
        ("jwt eyJhbGciOiJub25lIn0.eyJpc3MiOiIxIn0.", "jwt [jwt]", "eyJpc3M"),
        ("legacy sha1=" + "ab" * 20, "legacy sha1=[redacted]", "abab"),
        ("sha256=" + "AB" * 32, "sha256=[redacted]", "ABAB"),
    ],
)
def test_what_else_is_masked(text: str, kept: str, gone: str) -> None:
    masked = logs.mask(text)
    assert masked == kept and gone not in masked


def test_an_error_type_a_line_names_stays_when_it_carries_an_exception(
    captured: io.StringIO,
) -> None:
    logs.configure("INFO", "json", stream=captured)
    try:
        raise RuntimeError("wrapped")
    except RuntimeError:
        logging.getLogger("ghbot.test").exception("failed", extra={"error_type": "Timeout"})
    [line] = lines(captured)
    assert line["error_type"] == "Timeout"


def test_a_level_read_with_spaces_around_it_is_taken() -> None:
    assert logs.level_name(" warn\n") == "WARNING"


def test_text_format_masks_too_and_reconfiguring_replaces_the_handler(
    captured: io.StringIO,
) -> None:
    logs.configure("INFO", "text", stream=captured)
    logs.configure("INFO", "text", stream=captured)
    logging.getLogger("ghbot.test").info("token %s", TOKEN, extra={"installation_id": 7})
    [line] = captured.getvalue().splitlines()
    assert line.endswith("ghbot.test: token ghs_…8B4a [installation_id=7]")
    with pytest.raises(UsageError) as caught:
        logs.configure("INFO", "xml")
    assert str(caught.value) == "log format 'xml' is not one of json, text"


def test_lines_go_to_the_process_stderr_even_where_sys_stderr_was_swapped(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    swapped = io.StringIO()  # a Serve replica's sys.stderr: a logger whose INFO is dropped
    process_stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    monkeypatch.setattr(sys, "__stderr__", process_stderr)
    logs.configure("INFO", "json")
    logging.getLogger("ghbot.ingress").warning("refused delivery g-1 with 401: no match")
    assert swapped.getvalue() == ""
    [line] = [json.loads(text) for text in process_stderr.getvalue().splitlines()]
    assert line["message"] == "refused delivery g-1 with 401: no match"


def test_log_format_is_a_setting() -> None:
    base = {"GITHUB_APP_ID": "1"}
    assert Settings.from_env(base, require_app=False, require_webhooks=False).log_format == "json"
    text = Settings.from_env(
        {**base, "LOG_FORMAT": "TEXT"}, require_app=False, require_webhooks=False
    )
    assert text.log_format == "text"
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        Settings.from_env({**base, "LOG_FORMAT": "xml"}, require_app=False, require_webhooks=False)


# GitHub's new installation token: `ghs_APPID_JWT`, about 520 characters with two dots.
NEW_TOKEN = (
    "ghs_1234567_eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9."
    + "eyJpbnN0YWxsYXRpb24iOjQyLCJhcHAiOjEyMzQ1Njd9" * 8
    + ".Sig-nat_ure" * 20
    + "wxyz"
)


@pytest.mark.parametrize(
    ("token", "shown"),
    [
        (TOKEN, "ghs_…8B4a"),
        (NEW_TOKEN, "ghs_…wxyz"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCD", "gith…ABCD"),
        ("gho_16C7e42F292c6912E7710c838347Ae178B4a", "gho_…8B4a"),
        ("ghu_16C7e42F292c6912E7710c838347Ae178B4a", "ghu_…8B4a"),
        (
            "ghr_1B4a2e77838347a7E420ce178F2E7c6912E169246c34E1ccbF66C46812d16D5B1A9Dc86A1498",
            "ghr_…1498",
        ),
    ],
)
def test_a_token_shows_its_first_and_last_four_characters_only(token: str, shown: str) -> None:
    assert logs.mask(f"minted {token}. next") == f"minted {shown}. next"


def test_no_part_of_a_new_format_token_survives() -> None:
    masked = logs.mask(f"token {NEW_TOKEN} and Authorization-free text")
    for part in NEW_TOKEN[4:-4].split("."):
        assert part not in masked and part[:8] not in masked
    assert masked == "token ghs_…wxyz and Authorization-free text"


@pytest.mark.parametrize("token", ["ghs_ok", "ghs_abcdefghij", "ghp_0123456789a"])
def test_a_short_token_shows_no_more_than_its_prefix(token: str) -> None:
    masked = logs.mask(f"token {token}")
    assert masked == "token " + token[:4] + "…"
    # From 16 characters on, its last four are shown too.
    padded = f"{token:x<16}"
    assert logs.mask(f"token {padded}") == f"token {padded[:4]}…{padded[-4:]}"


def test_trace_and_warn_are_levels(captured: io.StringIO) -> None:
    assert logs.level_name("trace") == "TRACE" and logs.level_name("Warn") == "WARNING"
    assert logs.LEVELS["TRACE"] < logs.LEVELS["DEBUG"]
    with pytest.raises(UsageError) as caught:
        logs.level_name("chatty")
    assert str(caught.value) == (
        "log level 'chatty' is not one of TRACE, DEBUG, INFO, WARN, WARNING, ERROR, CRITICAL"
    )
    log = logging.getLogger("ghbot.test")
    logs.configure("TRACE", "json", stream=captured)
    log.log(logs.TRACE, "every detail")
    logs.configure("WARN", "json", stream=captured)
    log.log(logs.TRACE, "not at WARN")
    log.info("not at WARN either")
    log.warning("shown")
    assert [(line["level"], line["message"]) for line in lines(captured)] == [
        ("trace", "every detail"),
        ("warning", "shown"),
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limiter_lets_a_burst_through_then_one_line_per_interval() -> None:
    clock = Clock()
    limiter = logs.LogLimiter(burst=3, per=60.0, clock=clock)
    assert [limiter.allow("InvalidSignature") for _ in range(5)] == [0, 0, 0, None, None]
    assert limiter.allow("MalformedPayload") == 0  # each kind has its own budget
    clock.now += 19.0  # a line comes back every 20 s
    assert limiter.allow("InvalidSignature") is None
    clock.now += 1.0
    assert limiter.allow("InvalidSignature") == 3  # the next line says 3 were held back
    assert limiter.allow("InvalidSignature") is None
    clock.now += 3600
    assert [limiter.allow("InvalidSignature") for _ in range(4)] == [1, 0, 0, None]


def test_the_limiter_refuses_a_budget_of_nothing() -> None:
    for burst, per in [(0, 60.0), (1, 0.0)]:
        with pytest.raises(UsageError) as caught:
            logs.LogLimiter(burst=burst, per=per)
        assert str(caught.value) == "a log limiter needs burst >= 1 and per > 0"


def test_the_limiter_lets_ten_lines_a_minute_through_by_default() -> None:
    clock = Clock()
    limiter = logs.LogLimiter(clock=clock)
    assert [limiter.allow("InvalidSignature") for _ in range(11)] == [0] * 10 + [None]
    clock.now += 5.9
    assert limiter.allow("InvalidSignature") is None
    clock.now += 0.1  # a line comes back every 6 s
    assert limiter.allow("InvalidSignature") == 2


def test_emails_are_masked_in_messages_and_fields(captured: io.StringIO) -> None:
    logs.configure("INFO", "json", stream=captured)
    logging.getLogger("ghbot.test").warning(
        "mail from jane.doe+bots@example.com about %s", TOKEN, extra={"repository": "a@b.example"}
    )
    [line] = lines(captured)
    assert line["message"] == "mail from j***@example.com about ghs_…8B4a"
    assert line["repository"] == "a***@b.example"
    assert logs.mask("v1.2@3 and octo-org/hello-world") == "v1.2@3 and octo-org/hello-world"


def test_the_context_fills_the_fields_a_line_did_not_pass(captured: io.StringIO) -> None:
    logs.configure("INFO", "json", stream=captured)
    log = logging.getLogger("ghbot.test")
    with logs.log_context(event_id="guid-1", installation_id=42, repository="o/r"):
        with logs.log_context(operation="welcome"):
            log.warning("inner", extra={"error_type": "Timeout", "repository": "o/other"})
        log.warning("outer")
    log.warning("outside")
    inner, outer, outside = lines(captured)
    assert (inner["event_id"], inner["installation_id"], inner["operation"]) == (
        "guid-1",
        42,
        "welcome",
    )
    assert inner["repository"] == "o/other" and inner["error_type"] == "Timeout"
    assert "operation" not in outer and outer["repository"] == "o/r"
    assert not set(logs.FIELDS) & set(outside)
    assert logs.current_fields() == {}


def test_the_operations_guide_lists_the_structured_fields() -> None:
    """`FIELDS` points at docs/operations.md's "Logs", which names each of them."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = text[text.index("\n## Logs\n") : text.index("\n## Traces\n")]
    assert [name for name in logs.FIELDS if f"`{name}`" not in section] == []


def test_the_text_format_shows_the_context_fields(captured: io.StringIO) -> None:
    logs.configure("INFO", "text", stream=captured)
    with logs.log_context(event_id="guid-1", operation="welcome"):
        logging.getLogger("ghbot.test").warning("x to someone@example.org")
    assert (
        captured.getvalue()
        .rstrip()
        .endswith("x to s***@example.org [event_id=guid-1 operation=welcome]")
    )


def test_log_context_refuses_an_unknown_field() -> None:
    with pytest.raises(UsageError, match="body"), logs.log_context(body="x"):
        pass


def test_shape_gives_keys_and_types_never_values() -> None:
    body = {"action": "opened", "issue": {"number": 1, "title": "secret"}, "labels": [1, 2]}
    assert logs.shape(body, depth=2) == {
        "action": "str",
        "issue": {"number": "int", "title": "str"},
        "labels": "array[2]",
    }
    assert logs.shape(body) == {"action": "str", "issue": "object[2]", "labels": "array[2]"}
    assert logs.shape({"closed_at": None, "draft": True}) == {"closed_at": "null", "draft": "bool"}
    assert "secret" not in json.dumps(logs.shape(body, depth=5))


def test_received_lines_are_sampled_per_second_and_count_the_rest() -> None:
    clock = Clock()
    limiter = logs.LogLimiter(burst=2, per=1.0, clock=clock)
    assert [limiter.allow("received") for _ in range(1000)][:3] == [0, 0, None]
    clock.now += 0.5  # one line every half second
    assert limiter.allow("received") == 998


def test_received_lines_come_n_at_once_after_a_quiet_second_then_one_every_nth_of_one() -> None:
    """README and docs/operations.md: about N received lines a second per replica (its
    limiter, `_received_limiter(N)`: burst N per 1 s), N at once after a quiet second,
    then one every 1/N s: up to twice N in the first second. N = 8 keeps the clock's
    steps exact."""
    clock = Clock()
    limiter = logs.LogLimiter(burst=8, per=1.0, clock=clock)

    start = clock.now

    def logged_until(end: float) -> list[float]:
        """Offer 100 lines every 1/64 s until `end` (seconds from the start); return
        when each logged one was."""
        logged = []
        while clock.now - start <= end:
            offered = [limiter.allow("received") for _ in range(100)]
            logged += [clock.now - start for held in offered if held is not None]
            clock.now += 1 / 64
        return logged

    assert logged_until(1.0) == [0.0] * 8 + [k / 8 for k in range(1, 9)]  # 16 in 1 s
    assert len(logged_until(2.0)) == 8  # then N a second
    clock.now += 1.0  # a quiet second: N at once again, no more
    assert [limiter.allow("received") is not None for _ in range(9)] == [True] * 8 + [False]


def test_the_ingress_logs_received_webhooks_at_info_sampled(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actors.ray import ingress

    clock = Clock()
    limiter = logs.LogLimiter(burst=1, per=1.0, clock=clock)
    monkeypatch.setattr(logging.getLogger("ghbot"), "propagate", True)
    with caplog.at_level(logging.INFO, logger="ghbot.ingress"):
        for _ in range(3):
            ingress._log_received(limiter, "guid-1", "issues.opened", 42, "o/r")
        clock.now += 1.0
        ingress._log_received(limiter, "guid-2", "issues.opened", 0, None)
        ingress._log_received(None, "guid-3", "issues.opened", 42, "o/r")
    first, second = [r for r in caplog.records if r.name == "ghbot.ingress"]
    assert first.levelno == logging.INFO and first.getMessage() == "received issues.opened"
    assert (first.event_id, first.installation_id, first.repository) == ("guid-1", 42, "o/r")  # type: ignore[attr-defined]
    assert "2 more received webhooks were not logged" in second.getMessage()
    assert second.suppressed == 2 and second.installation_id is None  # type: ignore[attr-defined]


def test_current_fields_give_a_copy_of_the_context() -> None:
    assert logs.current_fields() == {}
    with logs.log_context(event_id="guid-1", installation_id=42):
        fields = logs.current_fields()
        assert fields == {"event_id": "guid-1", "installation_id": 42}
        fields["event_id"] = "changed"
        assert logs.current_fields()["event_id"] == "guid-1"
    assert logs.current_fields() == {}


def test_json_lines_keep_text_as_written_and_give_other_values_as_text(
    captured: io.StringIO,
) -> None:
    logs.configure("INFO", "json", stream=captured)
    when = datetime(2026, 12, 4, tzinfo=UTC)
    logging.getLogger("ghbot.test").warning("título ✓", extra={"duration_ms": when})
    assert "título ✓" in captured.getvalue()  # not \u escapes
    [line] = lines(captured)
    assert line["duration_ms"] == "2026-12-04 00:00:00+00:00"


def test_a_json_field_that_is_not_text_is_masked_as_its_text(captured: io.StringIO) -> None:
    """A dict, bytes or an object given as a field is written as its text, masked: a
    token inside it is cut as in the message. Numbers stay numbers."""
    logs.configure("INFO", "json", stream=captured)
    log = logging.getLogger("ghbot.test")
    log.warning("x", extra={"error_type": {"header": f"token {TOKEN}"}, "http_status": 2})
    log.warning("x", extra={"error_type": f"token {TOKEN}".encode(), "installation_id": None})
    first, second = lines(captured)
    assert TOKEN not in captured.getvalue()
    assert first["error_type"] == "{'header': 'token ghs_…8B4a'}" and first["http_status"] == 2
    assert "ghs_…8B4a" in str(second["error_type"])


def test_a_text_line_without_fields_has_no_brackets(captured: io.StringIO) -> None:
    logs.configure("INFO", "text", stream=captured)
    logging.getLogger("ghbot.test").info("plain")
    assert captured.getvalue().rstrip("\n").endswith("ghbot.test: plain")


def test_the_defaults_are_json_at_info(captured: io.StringIO) -> None:
    logs.configure(stream=captured)
    logging.getLogger("ghbot.test").debug("not at INFO")
    logging.getLogger("ghbot.test").info("shown")
    assert [(line["level"], line["message"]) for line in lines(captured)] == [("info", "shown")]


def test_a_root_logger_others_configured_is_left_alone(captured: io.StringIO) -> None:
    root = logging.getLogger()
    theirs = logging.StreamHandler(io.StringIO())
    root.handlers[:] = [theirs]
    root.setLevel(logging.ERROR)
    logs.configure("DEBUG", "json", stream=captured)
    assert root.handlers == [theirs] and root.level == logging.ERROR
    ghbot = logging.getLogger("ghbot")
    assert ghbot.level == logging.DEBUG and ghbot.propagate is False
    logging.getLogger("ghbot.test").debug("once")
    assert [line["message"] for line in lines(captured)] == ["once"]
    assert theirs.stream.getvalue() == ""


def test_configured_again_after_others_took_root_leaves_no_old_handler(
    captured: io.StringIO,
) -> None:
    """configure, then an application adds its own root handler, then configure again:
    root keeps theirs alone, not ghbot's first one with its old stream and level."""
    root = logging.getLogger()
    root.handlers[:] = []
    first = io.StringIO()
    logs.configure("INFO", "json", stream=first)
    theirs = logging.StreamHandler(io.StringIO())
    root.addHandler(theirs)
    logs.configure("INFO", "text", stream=captured)
    assert root.handlers == [theirs]
    logging.getLogger("aiohttp.client").warning("from a library")
    assert first.getvalue() == "" and "from a library" in theirs.stream.getvalue()


def test_an_unconfigured_root_logger_gets_the_same_lines(captured: io.StringIO) -> None:
    """Libraries' lines (aiohttp's, Ray's) come out in the same format; ghbot's come
    out once, not again through the root."""
    root = logging.getLogger()
    root.handlers[:] = []
    logs.configure("INFO", "json", stream=captured)
    assert root.level == logging.INFO
    logging.getLogger("aiohttp.client").debug("not at INFO")
    logging.getLogger("aiohttp.client").info("from a library")
    logging.getLogger("ghbot.test").info("from ghbot")
    assert [(line["logger"], line["message"]) for line in lines(captured)] == [
        ("aiohttp.client", "from a library"),
        ("ghbot.test", "from ghbot"),
    ]
    logs.configure("INFO", "json", stream=captured)  # again: still one handler each
    assert len(root.handlers) == 1 and len(logging.getLogger("ghbot").handlers) == 1
